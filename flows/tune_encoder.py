"""Tune the text encoder on the store's training sequences (`features.encoder_tuning`), embed
and publish the catalog with the tuned copy (the embed-items flow), and log the copy to MLflow
as the artifact of a run of its own, tagged with its embedding version. From then on, give its
directory as --encoder to ingest, nightly and up, so new items are embedded with it too; a
model trained on its vectors refuses vectors of any other encoder, as for every version."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from features.embeddings import ItemEmbeddings
from features.encoder import EncoderConfig, ItemEncoder
from features.encoder_tuning import TuningConfig, tune_on_interactions, tuning_record
from features.item_text import DEFAULT_FIELDS
from flows.embed_items import embed_items
from ingestion.readers import DatasetError
from ingestion.state import Stores, default_state_dir
from serving.tracking import check_tracking, use_experiment

ENCODER_ARTIFACT = "encoder"  # the tuned copy's directory in its MLflow run


@task(cache_policy=NO_CACHE)
def tune(stores: Stores, encoder: EncoderConfig, cfg: TuningConfig) -> Path:
    """The tuned copy's directory under <state dir>/encoders (a progress bar as it trains)."""
    items = stores.store.read_catalog()
    if items is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    tuned = tune_on_interactions(ItemEncoder(encoder), stores.store.read(), items,
                                 DEFAULT_FIELDS, cfg, stores.state_dir / "encoders")
    stats = tuning_record(tuned)
    get_run_logger().info("tuned on %d (item, next item) pairs: loss %.3f -> %.3f; %s",
                          stats["pairs"], stats["first_loss"], stats["last_loss"], tuned)
    return tuned


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def log_encoder(stores: Stores, tuned: Path, embedded: ItemEmbeddings) -> str:
    """One MLflow run: the tuning settings and losses, the tuned copy as its artifact."""
    check_tracking(stores.tracking_uri)
    use_experiment(stores.tracking_uri, stores.artifact_location)
    stats = tuning_record(tuned)
    with mlflow.start_run(run_name=f"tune-encoder {tuned.name}") as run:
        mlflow.log_params(stats["settings"] | {"base": stats["base"],
                                               "base_revision": stats["base_revision"]})
        mlflow.log_metrics({k: stats[k] for k in ("pairs", "items", "first_loss", "last_loss")})
        mlflow.log_artifacts(str(tuned), ENCODER_ARTIFACT)
        mlflow.set_tags({"encoder": str(tuned), "embedding_version": embedded.version})
    return run.info.run_id


@flow(name="tune-encoder")
def tune_encoder(state_dir: Path | None = None, encoder: str | None = None,
                 pooling: Literal["mean", "cls", "last"] = "mean", prompt: str = "{text}",
                 tuning: TuningConfig | None = None) -> dict:
    """Tune `encoder` (default the bundled MiniLM) on the store's training sequences, then
    embed and publish the catalog with it and log it to MLflow. `tuning`: default
    TuningConfig's."""
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    tuned = tune(stores, EncoderConfig(model=encoder or "", pooling=pooling, prompt=prompt),
                 tuning or TuningConfig())
    embedded = embed_items(state_dir=stores.state_dir, encoder=str(tuned), pooling=pooling,
                           prompt=prompt)
    run_id = log_encoder(stores, tuned, embedded)
    return {"encoder": str(tuned), "embedding_version": embedded.version, "run_id": run_id}
