"""Embed the catalog's item texts (only the new or changed ones) and publish the vectors to the
feature store, offline and online."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from features import embeddings
from features.embeddings import ItemEmbeddings
from features.encoder import EncoderConfig, ItemEncoder
from features.item_text import DEFAULT_FIELDS
from features.store import publish_item_embeddings
from ingestion.readers import DatasetError
from ingestion.state import Stores, default_state_dir


@task(cache_policy=NO_CACHE)
def encode(items: pd.DataFrame, encoder: EncoderConfig, stores: Stores) -> ItemEmbeddings:
    embedded = embeddings.embed_catalog(items, ItemEncoder(encoder), DEFAULT_FIELDS,
                                      stores.state_dir / "embeddings")
    get_run_logger().info("embedding version %s: %d of %d items encoded, the rest cached",
                          embedded.version, embedded.encoded, len(items))
    return embedded


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def publish(stores: Stores, items: pd.DataFrame, embedded: ItemEmbeddings) -> int:
    published = publish_item_embeddings(stores.state_dir, items, embedded.vectors,
                                        embedded.version, datetime.now(UTC))
    get_run_logger().info("%d new or changed item vectors published", published)
    return published


@flow(name="embed-items")
def embed_items(state_dir: Path | None = None, encoder: str | None = None,
                pooling: Literal["mean", "cls", "last"] = "mean",
                prompt: str = "{text}") -> ItemEmbeddings:
    """Embed the store's catalog with `encoder` (an HF model id or local path; default the
    bundled all-MiniLM-L6-v2), encoding only texts not embedded before with the same recipe,
    and publish what changed to the feature store."""
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    items = stores.store.read_catalog()
    if items is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    embedded = encode(items, EncoderConfig(model=encoder or "", pooling=pooling, prompt=prompt),
                      stores)
    publish(stores, items, embedded)
    return embedded
