"""The whole job once, as one Prefect flow over a MovieLens-format data directory: ingest it
(validate, store, quarantine), then the embed-items and retrain flows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.embed_items import embed_items
from flows.ingest import refresh_batch_users
from flows.retrain import retrain
from ingestion.batches import BatchReport, content_hash, ingest_batch, ingest_catalog
from ingestion.readers import BUNDLED_MOVIELENS, RawDataset, load_movielens
from ingestion.state import Stores, default_state_dir
from training.params import RetrainParams


@task(cache_policy=NO_CACHE)
def load(data_dir: Path) -> RawDataset:
    return load_movielens(data_dir)


@task(cache_policy=NO_CACHE)  # no retries: a retried rejection would read as "already seen"
def ingest(raw: RawDataset, data_dir: Path, stores: Stores) -> BatchReport:
    """The catalog, then the interaction log as one batch of the store (once per content)."""
    log = get_run_logger()
    now = datetime.now(UTC)
    release = "csv" if (data_dir / "ratings.csv").is_file() else "dat"  # as load_movielens
    catalog = content_hash(data_dir / f"movies.{release}")[:16]
    items = ingest_catalog(raw.items, stores, catalog)
    log.info("items: %d accepted, %d quarantined %s", len(items.accepted),
             len(items.quarantined), items.failures or "")
    source = data_dir / f"ratings.{release}"
    report = ingest_batch(lambda: (raw.interactions, []), source.name, content_hash(source),
                          stores, now)
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
    """Validate the MovieLens-format data in `data_dir` into the store, embed and publish the
    item features, then retrain: train, evaluate against the champion and popularity, register
    a challenger and promote it when it passes the gate."""
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    ingested = ingest(load(Path(data_dir)), Path(data_dir), stores)
    embed_items(state_dir=stores.state_dir, encoder=encoder, pooling=pooling, prompt=prompt)
    return retrain(state_dir=stores.state_dir, params=params, serving_url=serving_url) | {
        "ingested": ingested.message}
