"""A toy interaction log a model learns in a few epochs, and the same log with each user's
item at one position changed (to show what a stage reads and what it never sees)."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ingestion.batches import IngestConfig, ingest_catalog, ingest_file
from ingestion.state import Stores


def cycle_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """60 users walking a cycle of 30 items (each next item the one after): learnable in a few
    epochs, so validation scores differ from zero and from each other. (interactions, items)"""
    rng = np.random.default_rng(0)
    rows = [(user, (start + t) % 30 + 1, 1_400_000_000 + 100 * t)
            for user, start in enumerate(rng.integers(0, 30, 60), 1) for t in range(12)]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": range(1, 31), "title": [f"Item {i}" for i in range(1, 31)]})
    return interactions, items


def with_item_at(interactions: pd.DataFrame, position: int, seed: int = 0) -> pd.DataFrame:
    """Each user's `position`-th item from the end (1: the last) changed to another one."""
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    rows = ordered.groupby("user_id").nth(-position).index
    changed = interactions.copy()
    others = np.random.default_rng(seed).choice(interactions["item_id"].unique(), len(rows))
    changed.loc[rows, "item_id"] = others
    return changed


def stored(interactions: pd.DataFrame, items: pd.DataFrame, state_dir: Path) -> Stores:
    """A state directory holding the catalog `items` and the log `interactions`, ingested."""
    stores = Stores(state_dir)
    ingest_catalog(items.astype(str), stores, "catalog")
    stores.inbox.mkdir(parents=True)
    interactions.to_csv(stores.inbox / "history.csv", index=False)
    ingest_file(stores.inbox / "history.csv", stores, datetime.now(UTC),
                IngestConfig(data_docs=False))
    return stores
