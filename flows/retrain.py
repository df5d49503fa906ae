"""Retrain on the store: a dataset of every accepted interaction, warm-started from the
champion, evaluated beside it and popularity on the same split, registered as the challenger,
promoted when it passes the gate; then the served model is checked to answer with the champion.
Two retrains never run at once: a Prefect global concurrency limit of one slot."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import requests
import torch
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from features.store import (
    published_embedding_version,
    read_item_embeddings,
    register_model_features,
    store_config,
)
from flows.params import RetrainParams
from llmseqrec.datasets import DatasetError
from llmseqrec.settings import EXPERIMENT, MODEL_NAME, Stores, default_state_dir
from serving.gate import GATED, Gate, decide, p95_latency_ms
from serving.recommender import Recommender, save_bundle
from serving.registry import (
    CHALLENGER,
    CHAMPION,
    Promotion,
    alias_challenger,
    log_recommender,
    promote,
    register_version,
    registered_bundle,
)
from training.curves import plot_curves
from training.evaluate import evaluate_test, model_scorer, popularity_scorer, remapped_scorer
from training.model import ModelConfig, TextTable
from training.sequences import ItemIndex, Split, leave_one_out, popularity, user_sequences
from training.train import TrainConfig, TrainResult, device, grown_state, train_model

RETRAIN_LOCK = "llmseqrec-retrain"  # the global concurrency limit (one slot) of retrains
# a killed retrain's slot is freed this long after its last renewal (Prefect's minimum: 60)
LOCK_LEASE_S = float(os.environ.get("LLMSEQREC_LOCK_LEASE_S", "60"))


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer."""


class RetrainBusy(RuntimeError):
    """Another retrain held the lock for longer than this one would wait."""


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    index: ItemIndex
    split: Split
    popularity: np.ndarray
    start: str  # how training began: from scratch, or from the champion's weights
    embedding_version: str
    evaluation_set: str  # the fingerprint of the split's test histories and targets


def check_tracking(stores: Stores) -> None:
    """Fail fast, and say so, when the tracking server is down (MLflow's own client retries
    for minutes before it gives up)."""
    uri = stores.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as e:
        raise TrackingUnavailable(f"the MLflow tracking server at {uri} does not answer "
                                  f"({type(e).__name__}); nothing was registered") from None


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def load_champion(stores: Stores) -> Recommender | None:
    """The current champion, to start from and to compare with; None before the first."""
    check_tracking(stores)
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


def model_config(params: RetrainParams, num_items: int, text: TextTable | None) -> ModelConfig:
    uses_text = params.item_repr != "id"
    return ModelConfig(
        num_items=num_items, item_repr=params.item_repr, max_len=params.max_len,
        hidden=params.hidden, layers=params.layers, dropout=params.dropout, loss=params.loss,
        negatives=params.negatives, whiten_text=params.whiten_text and uses_text,
        repeat_bias=params.repeat_bias,
        id_dropout=params.id_dropout if params.item_repr == "hybrid" else 0.0,
        text_dim=text.vectors.shape[1] if text is not None else 0,
        embedding_version=text.version if text is not None else "")


def split_fingerprint(split: Split) -> str:
    """Names the evaluation set: equal fingerprints, the same test histories and targets."""
    digest = hashlib.sha256(np.asarray(split.test_target).tobytes())
    for history in split.test_history:
        digest.update(np.asarray(history).tobytes() + b"|")
    return digest.hexdigest()[:12]


@task(cache_policy=NO_CACHE)
def train(stores: Stores, items: pd.DataFrame, params: RetrainParams, now: datetime,
          champion: Recommender | None) -> Trained:
    """Train on every interaction in the store: only validated rows ever get there."""
    log = get_run_logger()
    index = ItemIndex.from_items(items["item_id"])
    split = leave_one_out(user_sequences(stores.store.read(), index))
    if not split.train:
        raise DatasetError("no user has 3 or more accepted interactions: nothing to train on")
    text, version = None, ""
    if params.item_repr != "id":
        version = published_embedding_version(stores.state_dir)
        if version is None:
            raise DatasetError("no item embeddings in the feature store: run embed-items first")
        vectors = read_item_embeddings(stores.state_dir, index.item_ids, now, version)
        text = TextTable(torch.from_numpy(vectors), version)
    cfg = model_config(params, len(index), text)
    init, start = champion_start(champion if params.warm_start else None, cfg, index)
    log.info("training %s", start)
    train_cfg = TrainConfig(epochs=params.epochs, patience=params.patience,
                            batch_size=params.batch_size, lr=params.lr, seed=params.seed)
    result = train_model(split, cfg, train_cfg, text, init_state=init,
                         on_epoch=lambda r: log.info("epoch %(epoch)d loss %(loss).4f "
                                                     "valid ndcg@10 %(valid_ndcg_at_10).4f", r))
    return Trained(result, index, split, popularity(split.train, len(index)), start, version,
                   split_fingerprint(split))


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
    get_run_logger().info("test ndcg@10 on evaluation set %s: %s", trained.evaluation_set,
                          ", ".join(f"{name} {m['test_ndcg_at_10']:.4f}"
                                    for name, m in out.items()))
    return out


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def register(stores: Stores, items: pd.DataFrame, trained: Trained,
             evaluated: dict[str, dict[str, float]], params: dict) -> tuple[str, str]:
    """One MLflow run (parameters, data counts, curves, metrics, the model) and a new version;
    the alias `challenger` is its last step, so a failure leaves no alias on a half-registered
    version: (version, run id)."""
    check_tracking(stores)
    mlflow.set_tracking_uri(stores.tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=stores.artifact_location)
    mlflow.set_experiment(EXPERIMENT)
    titles = items.set_index("item_id").loc[trained.index.item_ids, "title"]
    version = trained.embedding_version
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(params | {"embedding_version": version, "start": trained.start,
                                    "best_epoch": trained.result.best_epoch,
                                    "evaluation_set": trained.evaluation_set})
        batches = stores.ledger.all().query("status == 'accepted'")
        mlflow.log_metrics({f"data_{k}": int(batches[k].sum()) for k in
                            ("rows_in", "rows_accepted", "rows_quarantined")}
                           | {"data_batches": len(batches)})
        mlflow.log_metrics({"train_users": len(trained.split.train),
                            "train_interactions": sum(map(len, trained.split.train)),
                            "items": len(trained.index)})
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
        config.write_text(store_config(stores.state_dir, expand_env=False))  # no secrets
        model_uri = log_recommender(bundle, config, example)
        registered = register_version(model_uri, MODEL_NAME)
        service = register_model_features(stores.state_dir, MODEL_NAME, registered, version)
        MlflowClient().set_model_version_tag(MODEL_NAME, registered, "feature_service", service)
        mlflow.set_tags({"registered_version": registered, "feature_service": service})
        alias_challenger(MODEL_NAME, registered)
    get_run_logger().info("run %s registered %s version %s as %s", run.info.run_id, MODEL_NAME,
                          registered, CHALLENGER)
    return registered, run.info.run_id


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
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
    promotion = promote(MODEL_NAME, registered, promoted, reason, numbers,
                        evaluation_set=trained.evaluation_set)
    client = MlflowClient()
    client.log_metric(run_id, "p95_ms", p95)
    client.set_tag(run_id, "promotion", reason)
    get_run_logger().info("version %s: %s", registered, reason)
    return promotion


@task(cache_policy=NO_CACHE)
def check_served(stores: Stores, serving_url: str, timeout_s: float = 90) -> str:
    """Wait until the model server answers with the champion (it follows the alias, and loads
    a new champion within its refresh interval); what it saw."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    champion = str(MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    query = {"inputs": [{"history": [], "k": 1}]}
    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            answer = requests.post(f"{serving_url.rstrip('/')}/invocations", json=query,
                                   timeout=10).json()
            seen = answer["predictions"][0].get("model_version")
        except (requests.RequestException, ValueError, KeyError, IndexError) as e:
            seen = f"no answer ({type(e).__name__})"
        if seen == champion:
            return f"the model server at {serving_url} answers with version {champion}"
        time.sleep(2)
    get_run_logger().warning("the model server at %s answers with %s, not champion %s",
                             serving_url, seen, champion)
    return f"the model server at {serving_url} answers with {seen}, not champion {champion}"


def ensure_retrain_lock() -> None:
    """The one-slot global concurrency limit retrains take (made on first use)."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=RETRAIN_LOCK, limit=1))


def mlflow_links(stores: Stores, run_id: str, version: str) -> list[str]:
    """Markdown links to the run and the model version in the MLflow UI, when one is known."""
    uri = stores.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return [f"MLflow run `{run_id}`, version {version}: open them with "
                f"`mlflow ui --backend-store-uri {uri}`"]
    ui = uri.rstrip("/")
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    return [f"[MLflow run {run_id}]({ui}/#/experiments/{experiment}/runs/{run_id})",
            f"[{MODEL_NAME} version {version}]({ui}/#/models/{MODEL_NAME}/versions/{version})"]


def retrain_markdown(summary: dict, links: list[str], data_docs: Path) -> str:
    rows = [(name, m) for name, m in (("challenger", summary["metrics"]),
                                      ("champion", summary["champion_metrics"]),
                                      ("popularity", summary["popularity_metrics"])) if m]
    keys = ("test_ndcg_at_10", "test_recall_at_10", "test_tail_ndcg_at_10",
            "test_cold_ndcg_at_10")
    lines = [f"# Retrain: version {summary['version']} "
             f"{'promoted to champion' if summary['promoted'] else 'not promoted'}", "",
             f"Decision: {summary['reason']}", "",
             f"Evaluation set {summary['evaluation_set']} (every row scored on it)", "",
             "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"
              for name, m in rows]
    lines += ["", f"Training: {summary['start']}; best epoch {summary['best_epoch']}", ""]
    lines += [f"- {link}" for link in links]
    for index in sorted(data_docs.glob("**/data_docs/local_site/index.html"))[:1]:
        lines.append(f"- [Data Docs of the validations]({index.as_uri()})")
    if summary.get("served"):
        lines.append(f"- Serving: {summary['served']}")
    return "\n".join(lines)


@flow(name="retrain")
def retrain(state_dir: Path | None = None, params: RetrainParams | None = None,
            serving_url: str | None = None, lock_timeout_s: float = 6 * 3600) -> dict:
    """Retrain on the store and promote the result when it passes the gate. Waits up to
    `lock_timeout_s` for a retrain already running, then refuses. With `serving_url`, waits
    for the model server there to answer with the champion."""
    params = params or RetrainParams()
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    ensure_retrain_lock()
    try:
        with concurrency(RETRAIN_LOCK, timeout_seconds=lock_timeout_s, strict=True,
                         lease_duration=LOCK_LEASE_S, raise_on_lease_renewal_failure=False):
            summary = retrain_locked(stores, params, serving_url)
    except TimeoutError:
        raise RetrainBusy(f"another retrain held {RETRAIN_LOCK!r} for more than "
                          f"{lock_timeout_s:.0f} s: this one was refused") from None
    return summary


def retrain_locked(stores: Stores, params: RetrainParams, serving_url: str | None) -> dict:
    now = datetime.now(UTC)
    items = stores.store.read_catalog()
    if items is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    champion = load_champion(stores)
    trained = train(stores, items, params, now, champion)
    evaluated = evaluate(trained, champion)
    logged = params.model_dump() | {"text_dim": trained.result.model.cfg.text_dim,
                                    "id_dropout": trained.result.model.cfg.id_dropout,
                                    "whiten_text": trained.result.model.cfg.whiten_text}
    registered, run_id = register(stores, items, trained, evaluated, logged)
    gate = Gate(margin=params.margin, slice_tolerance=params.slice_tolerance,
                p95_ms=params.p95_ms)
    promotion = promote_if_better(stores, trained, evaluated, registered, run_id, gate)
    summary = {"metrics": evaluated["model"], "champion_metrics": evaluated.get("champion"),
               "popularity_metrics": evaluated["popularity"], "version": promotion.version,
               "promoted": promotion.promoted, "reason": promotion.reason,
               "run_id": run_id, "start": trained.start,
               "best_epoch": trained.result.best_epoch,
               "evaluation_set": trained.evaluation_set,
               "state_dir": str(stores.state_dir)}
    if serving_url:
        summary["served"] = check_served(stores, serving_url)
    create_markdown_artifact(
        key="retrain", markdown=retrain_markdown(
            summary, mlflow_links(stores, run_id, promotion.version), stores.data_docs),
        description=f"version {promotion.version}: {promotion.reason}")
    return summary
