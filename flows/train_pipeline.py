"""The whole job once, as one Prefect flow over a data directory of any layout that
`ingestion.layouts` recognises: ingest it (validate, store, quarantine), then the embed-items
and retrain flows."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.embed_items import embed_items
from flows.ingest import refresh_batch_users
from flows.retrain import retrain
from ingestion.batches import BatchReport, content_hash, ingest_batch, ingest_catalog
from ingestion.layouts import Layout, detect
from ingestion.readers import BUNDLED_MOVIELENS, RawDataset
from ingestion.state import Stores, default_state_dir
from training.params import RetrainParams


def files_digest(files: tuple[Path, ...]) -> str:
    """The content hash of one file, or of several files' names and content hashes."""
    if len(files) == 1:
        return content_hash(files[0])
    lines = "".join(f"{f.name}:{content_hash(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@task(cache_policy=NO_CACHE)
def recognise(data_dir: Path) -> Layout:
    layout = detect(data_dir)
    get_run_logger().info("%s: %s layout, interactions from %s, items from %s", data_dir,
                          layout.name, layout.interaction_source,
                          " + ".join(f.name for f in layout.item_files))
    return layout


@task(cache_policy=NO_CACHE)
def load(layout: Layout) -> RawDataset:
    return layout.load()


@task(cache_policy=NO_CACHE)  # no retries: a retried rejection would read as "already seen"
def ingest(raw: RawDataset, layout: Layout, stores: Stores) -> BatchReport:
    """The catalog, then the interaction log as one batch of the store, once per content of
    the interaction files (the same files again are a duplicate, not ingested twice)."""
    log = get_run_logger()
    now = datetime.now(UTC)
    items = ingest_catalog(raw.items, stores, files_digest(layout.item_files)[:16])
    log.info("items: %d accepted, %d quarantined %s", len(items.accepted),
             len(items.quarantined), items.failures or "")
    report = ingest_batch(lambda: (raw.interactions, []), layout.interaction_source,
                          files_digest(layout.interaction_files), stores, now)
    log.info("interactions %s: %s", report.status, report.message)
    if report.status == "accepted":
        log.info("user features refreshed for %d users", refresh_batch_users(stores, report, now))
    return report


@flow(name="train-pipeline")
def train_pipeline(
    data_dir: Path = BUNDLED_MOVIELENS,
    state_dir: Path | None = None,
    encoder: str | None = None,
    pooling: Literal["mean", "cls", "last"] = "mean",
    prompt: str = "{text}",
    params: RetrainParams | None = None,
    serving_url: str | None = None,
) -> dict:
    """Validate the data in `data_dir` (any layout `ingestion.layouts.detect` recognises) into
    the store, embed and publish the item features, then retrain: train, evaluate against the
    champion and popularity, register a challenger and promote it when it passes the gate."""
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    layout = recognise(Path(data_dir))
    ingested = ingest(load(layout), layout, stores)
    embed_items(state_dir=stores.state_dir, encoder=encoder, pooling=pooling, prompt=prompt)
    return retrain(state_dir=stores.state_dir, params=params, serving_url=serving_url) | {
        "ingested": ingested.message}
