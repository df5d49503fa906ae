"""Replay the bundled data as if live: an initial history, then one batch per day. The latest
part of the log is cut into equal daily batches (the data's real days are too sparse)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ingestion.batches import ingest_catalog
from ingestion.readers import BUNDLED_MOVIELENS, load_movielens
from ingestion.state import Stores


def plan_replay(stores: Stores, data_dir: Path = BUNDLED_MOVIELENS, days: int = 14,
                live_share: float = 0.2) -> list[Path]:
    """Put the catalog in the store and write the batches to drop, in order: the history, then
    the latest `live_share` of the log cut by time into `days` daily batches."""
    raw = load_movielens(data_dir)
    ingest_catalog(raw.items, stores, "replay-catalog")
    log = raw.interactions.assign(_t=pd.to_numeric(raw.interactions["timestamp"]))
    log = log.sort_values("_t", kind="stable").reset_index(drop=True)
    live_start = int(len(log) * (1 - live_share))
    day = np.zeros(len(log), dtype=int)
    day[live_start:] = 1 + np.arange(len(log) - live_start) * days // (len(log) - live_start)
    pending = stores.state_dir / "replay" / "pending"
    pending.mkdir(parents=True, exist_ok=True)
    columns = ["user_id", "item_id", "timestamp", "rating"]
    written = []
    for n in range(days + 1):
        path = pending / (f"day-{n:03d}.csv" if n else "history.csv")
        log.loc[day == n, columns].to_csv(path, index=False)
        written.append(path)
    return written


def drop_next(stores: Stores, data_dir: Path = BUNDLED_MOVIELENS, days: int = 14) -> Path | None:
    """Move the next replay batch into the inbox (planning the replay first if needed);
    None once every batch was dropped."""
    pending = stores.state_dir / "replay" / "pending"
    if not pending.is_dir():
        plan_replay(stores, data_dir, days)
    files = sorted(pending.glob("*.csv"), key=lambda p: (p.name != "history.csv", p.name))
    if not files:
        return None
    stores.inbox.mkdir(parents=True, exist_ok=True)
    return files[0].rename(stores.inbox / files[0].name)
