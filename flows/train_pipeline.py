"""The whole job as one Prefect flow: ingest (validate, store, quarantine), embed, publish
features, train on the store (warm-started from the champion), evaluate beside the champion
and popularity, register a challenger in MLflow, promote it when it passes the gate."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from features.embeddings import ItemEmbeddings, embed_items
from features.encoder import EncoderConfig, ItemEncoder
from features.item_text import DEFAULT_FIELDS
from features.store import (
    publish_item_embeddings,
    read_item_embeddings,
    register_model_features,
    store_config,
)
from flows.ingest import refresh_batch_users
from llmseqrec.datasets import BUNDLED_MOVIELENS, DatasetError, RawDataset, load_movielens
from llmseqrec.ingest import (
    BatchReport,
    content_hash,
    ingest_batch,
    ingest_catalog,
)
from llmseqrec.settings import EXPERIMENT, MODEL_NAME, Stores, default_state_dir
from serving.gate import GATED, Gate, decide, p95_latency_ms
from serving.recommender import Recommender, save_bundle
from serving.registry import (
    CHALLENGER,
    CHAMPION,
    Promotion,
    log_recommender,
    promote,
    register_challenger,
    registered_bundle,
)
from training.curves import plot_curves
from training.evaluate import (
    evaluate_test,
    model_scorer,
    popularity_scorer,
    remapped_scorer,
)
from training.model import ModelConfig, TextTable
from training.sequences import ItemIndex, Split, leave_one_out, popularity, user_sequences
from training.train import TrainConfig, TrainResult, device, grown_state, train_model


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    index: ItemIndex
    split: Split
    popularity: np.ndarray
    start: str  # how training began: from scratch, or from the champion's weights


@task(cache_policy=NO_CACHE)
def load(data_dir: Path) -> RawDataset:
    return load_movielens(data_dir)


@task(cache_policy=NO_CACHE)
def ingest(raw: RawDataset, data_dir: Path, stores: Stores, now: datetime) -> BatchReport:
    """The catalog, then the interaction log as one batch of the store (once per content)."""
    log = get_run_logger()
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


@task(cache_policy=NO_CACHE)
def embed(items: pd.DataFrame, encoder: EncoderConfig, stores: Stores) -> ItemEmbeddings:
    embedded = embed_items(items, ItemEncoder(encoder), DEFAULT_FIELDS,
                           stores.state_dir / "embeddings")
    get_run_logger().info("embedding version %s: %d of %d items encoded, the rest cached",
                          embedded.version, embedded.encoded, len(items))
    return embedded


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def publish(stores: Stores, items: pd.DataFrame, embedded: ItemEmbeddings,
            now: datetime) -> None:
    publish_item_embeddings(stores.state_dir, items, embedded.vectors, embedded.version, now)


@task(cache_policy=NO_CACHE)
def load_champion(stores: Stores) -> Recommender | None:
    """The current champion, to start from and to compare with; None before the first."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = registered_bundle(MODEL_NAME, CHAMPION, Path(tmp))
        if bundle is None:
            return None
        champion = Recommender()
        champion.load(bundle)
        return champion


def champion_start(champion: Recommender | None, cfg: ModelConfig, index: ItemIndex
                   ) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The champion's weights grown to the current catalog, when its settings are the same
    (new items start from their text); else None. Also says which it is."""
    if champion is None:
        return None, "from scratch: no champion yet"
    try:
        state = grown_state(champion.model, champion.index.item_ids, cfg, index.item_ids)
    except ValueError as e:
        return None, f"from scratch: the champion differs ({e})"
    new = len(set(index.item_ids.tolist()) - set(champion.index.item_ids.tolist()))
    return state, f"warm start from the champion ({new} new items)"


@task(cache_policy=NO_CACHE)
def train(stores: Stores, items: pd.DataFrame, model_cfg: dict, train_cfg: TrainConfig,
          now: datetime, champion: Recommender | None) -> Trained:
    """Train on every interaction in the store: only validated rows ever get there."""
    log = get_run_logger()
    index = ItemIndex.from_items(items["item_id"])
    split = leave_one_out(user_sequences(stores.store.read(), index))
    if not split.train:
        raise DatasetError("no user has 3 or more accepted interactions: nothing to train on")
    cfg = ModelConfig(num_items=len(index), **model_cfg)
    text = None
    if cfg.item_repr != "id":
        version = cfg.embedding_version
        vectors = read_item_embeddings(stores.state_dir, index.item_ids, now, version)
        text = TextTable(torch.from_numpy(vectors), version)
    init, start = champion_start(champion, cfg, index)
    log.info("training %s", start)
    result = train_model(split, cfg, train_cfg, text, init_state=init,
                         on_epoch=lambda r: log.info("epoch %(epoch)d loss %(loss).4f "
                                                     "valid ndcg@10 %(valid_ndcg_at_10).4f", r))
    return Trained(result, index, split, popularity(split.train, len(index)), start)


@task(cache_policy=NO_CACHE)
def evaluate(trained: Trained, champion: Recommender | None) -> dict[str, dict[str, float]]:
    """Test metrics of the kept checkpoint and, on the same split, of the champion and of the
    popularity baseline: {"model": ..., "champion": ... (when there is one), "popularity": ...}."""
    split, counts = trained.split, trained.popularity
    out = {"model": evaluate_test(model_scorer(trained.result.model, device()), split, counts),
           "popularity": evaluate_test(popularity_scorer(counts), split, counts)}
    if champion is not None:
        out["champion"] = evaluate_test(remapped_scorer(
            champion.model, champion.index.item_ids, trained.index.item_ids, device()),
            split, counts)
    get_run_logger().info("test ndcg@10: %s", ", ".join(
        f"{name} {m['test_ndcg_at_10']:.4f}" for name, m in out.items()))
    return out


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def register(stores: Stores, items: pd.DataFrame, ingested: BatchReport, trained: Trained,
             evaluated: dict[str, dict[str, float]], params: dict, version: str
             ) -> tuple[str, str]:
    """One MLflow run (parameters, data counts, curves, metrics, the model) and a new version
    aliased `challenger`: (version, run id)."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=stores.artifact_location)
    mlflow.set_experiment(EXPERIMENT)
    titles = items.set_index("item_id").loc[trained.index.item_ids, "title"]
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(params | {"embedding_version": version, "start": trained.start,
                                    "best_epoch": trained.result.best_epoch})
        mlflow.log_metrics({"train_users": len(trained.split.train),
                            "train_interactions": sum(map(len, trained.split.train)),
                            "items": len(trained.index)})
        if ingested.status == "accepted":
            mlflow.log_metrics({"ingest_rows_in": ingested.rows_in,
                                "ingest_rows_accepted": ingested.rows_accepted,
                                "ingest_rows_quarantined": ingested.rows_quarantined})
        for row in trained.result.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        metrics = evaluated["model"] | {"valid_ndcg_at_10": trained.result.history[
            trained.result.best_epoch - 1]["valid_ndcg_at_10"]}
        mlflow.log_metrics(metrics | {f"{name}_{k}": v for name in ("champion", "popularity")
                                      for k, v in evaluated.get(name, {}).items()})
        mlflow.log_figure(plot_curves(trained.result.history, trained.result.best_epoch),
                          "training_curves.png")
        mlflow.set_tag("embedding_version", version)
        bundle = Path(tmp) / "recommender.pt"
        save_bundle(bundle, trained.result.model, trained.index, titles.tolist(),
                    trained.popularity, version)
        example = trained.index.decode(trained.split.test_history[0][-5:]).tolist()
        config = Path(tmp) / "feature_store.yaml"
        config.write_text(store_config(stores.state_dir))
        model_uri = log_recommender(bundle, config, example)
        registered = register_challenger(model_uri, MODEL_NAME)
        service = register_model_features(stores.state_dir, MODEL_NAME, registered, version)
        MlflowClient().set_model_version_tag(MODEL_NAME, registered, "feature_service", service)
        mlflow.set_tags({"registered_version": registered, "feature_service": service})
    get_run_logger().info("run %s registered %s version %s as %s", run.info.run_id, MODEL_NAME,
                          registered, CHALLENGER)
    return registered, run.info.run_id


@task(cache_policy=NO_CACHE)
def promote_if_better(stores: Stores, trained: Trained, evaluated: dict[str, dict[str, float]],
                      registered: str, run_id: str, gate: Gate) -> Promotion:
    """Time the registered challenger; the gate decides whether it becomes the champion. The
    decision and its numbers go on the model version and on the run."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        challenger = Recommender()
        challenger.load(registered_bundle(MODEL_NAME, registered, Path(tmp)))
    histories = [trained.index.decode(h[-50:]).tolist()
                 for h in trained.split.test_history[:200] if len(h)]
    p95 = p95_latency_ms(challenger, histories)
    metrics, champion = evaluated["model"], evaluated.get("champion")
    promoted, reason = decide(gate, metrics, champion, p95)
    numbers = {"p95_ms": p95, **{k: metrics[k] for k in GATED if k in metrics},
               **{f"champion_{k}": champion[k] for k in GATED if champion and k in champion}}
    promotion = promote(MODEL_NAME, registered, promoted, reason, numbers)
    client = MlflowClient()
    client.log_metric(run_id, "p95_ms", p95)
    client.set_tag(run_id, "promotion", reason)
    get_run_logger().info("version %s: %s", registered, reason)
    return promotion


@flow(name="train-pipeline")
def train_pipeline(
    data_dir: Path = BUNDLED_MOVIELENS,
    state_dir: Path | None = None,
    encoder: str | None = None,
    pooling: str = "mean",
    prompt: str = "{text}",
    item_repr: str = "hybrid",
    max_len: int = 50,
    hidden: int = 64,
    layers: int = 2,
    dropout: float = 0.2,
    loss: str = "ce",
    negatives: int = 256,
    whiten_text: bool = True,
    repeat_bias: bool = True,
    id_dropout: float = 0.5,
    epochs: int = 100,
    patience: int = 5,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 42,
    warm_start: bool = True,
    margin: float = 0.01,
    slice_tolerance: float = 0.05,
    p95_ms: float = 50.0,
) -> dict:
    """Validate the MovieLens-format data in `data_dir`, embed and publish item features,
    train, evaluate against the champion and popularity, register a challenger and promote it
    when it passes the gate (`margin`, `slice_tolerance`, `p95_ms`)."""
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    now = datetime.now(UTC)
    raw = load(Path(data_dir))
    ingested = ingest(raw, Path(data_dir), stores, now)
    items = stores.store.read_catalog()
    encoder_cfg = EncoderConfig(model=encoder or "", pooling=pooling, prompt=prompt)
    embedded = embed(items, encoder_cfg, stores)
    version = embedded.version
    publish(stores, items, embedded, now)
    model_cfg = {"item_repr": item_repr, "max_len": max_len, "hidden": hidden, "layers": layers,
                 "dropout": dropout, "loss": loss, "negatives": negatives,
                 "whiten_text": whiten_text and item_repr != "id", "repeat_bias": repeat_bias,
                 "id_dropout": id_dropout if item_repr == "hybrid" else 0.0,
                 "text_dim": embedded.vectors.shape[1] if item_repr != "id" else 0,
                 "embedding_version": version if item_repr != "id" else ""}
    train_cfg = TrainConfig(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                            seed=seed)
    champion = load_champion(stores)
    trained = train(stores, items, model_cfg, train_cfg, now, champion if warm_start else None)
    params = {"data_dir": str(data_dir), "encoder": encoder or "bundled all-MiniLM-L6-v2",
              "pooling": pooling, "items_encoded": embedded.encoded, **model_cfg,
              **asdict(train_cfg)}
    evaluated = evaluate(trained, champion)
    registered, run_id = register(stores, items, ingested, trained, evaluated, params, version)
    promotion = promote_if_better(stores, trained, evaluated, registered, run_id,
                                  Gate(margin=margin, slice_tolerance=slice_tolerance,
                                       p95_ms=p95_ms))
    return {"metrics": evaluated["model"], "champion_metrics": evaluated.get("champion"),
            "popularity_metrics": evaluated["popularity"], "version": promotion.version,
            "promoted": promotion.promoted, "reason": promotion.reason,
            "state_dir": str(stores.state_dir)}
