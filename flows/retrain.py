"""Retrain on the store, as a flow of tasks over the retrain stage (`training.retrain`): take
the lock, load the champion, fit, compare on the same split, register the challenger, promote
it when it passes the gate, check that the model server answers with the champion. Two
retrains never run at once: a Prefect global concurrency limit of one slot."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
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
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from features.store import (
    published_embedding_version,
    read_item_embeddings,
    register_model_features,
    store_config,
)
from flows.retries import retry_if
from ingestion.readers import DatasetError
from ingestion.state import Stores, default_state_dir
from serving.gate import GATED, Gate, decide, p95_latency_ms
from serving.recommender import Recommender
from serving.registry import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    MODEL_NAME,
    Promotion,
    load_recommender,
    promote,
)
from serving.tracking import check_tracking, log_retrain, use_experiment
from training.model import TextTable
from training.params import RetrainParams
from training.retrain import Fitted, compare, fit
from training.sequences import ItemIndex

RETRAIN_LOCK = "llmseqrec-retrain"  # the global concurrency limit (one slot) of retrains
# a killed retrain's slot is freed this long after its last renewal (Prefect's minimum: 60)
LOCK_LEASE_S = float(os.environ.get("LLMSEQREC_LOCK_LEASE_S", "60"))


class RetrainBusy(RuntimeError):
    """Another retrain held the lock for longer than this one would wait."""


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def load_champion(stores: Stores) -> Recommender | None:
    """The current champion, to start from and to compare with; None before the first."""
    check_tracking(stores.tracking_uri)
    mlflow.set_tracking_uri(stores.tracking_uri)
    return load_recommender(MODEL_NAME, CHAMPION)


@task(retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_if(
          # not when it answered that the data is missing or of another version
          lambda e: not isinstance(e, ValueError | LookupError)),
      cache_policy=NO_CACHE)
def read_text(stores: Stores, items: pd.DataFrame, params: RetrainParams,
              now: datetime) -> TextTable | None:
    """The published LLM embedding of every catalog item, as of `now` (None for `id`)."""
    if params.item_repr == "id":
        return None
    version = published_embedding_version(stores.state_dir)
    if version is None:
        raise DatasetError("no item embeddings in the feature store: run embed-items first")
    ids = ItemIndex.from_items(items["item_id"]).item_ids
    vectors = read_item_embeddings(stores.state_dir, ids, now, version)
    return TextTable(torch.from_numpy(vectors), version)


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(stores: Stores, items: pd.DataFrame, text: TextTable | None,
             params: RetrainParams, champion: Recommender | None) -> Fitted:
    """Train on every interaction in the store: only validated rows ever get there."""
    log = get_run_logger()
    fitted = fit(stores.store.read(), items["item_id"], text, params, champion,
                 on_epoch=lambda r: log.info("epoch %(epoch)d loss %(loss).4f "
                                             "valid ndcg@10 %(valid_ndcg_at_10).4f", r))
    log.info("trained %s; best epoch %d", fitted.start, fitted.result.best_epoch)
    return fitted


@task(name="compare", cache_policy=NO_CACHE)
def compare_task(fitted: Fitted, champion: Recommender | None) -> dict[str, dict[str, float]]:
    """The fitted model, the champion and popularity on the fitted model's test split."""
    compared = compare(fitted, champion, fitted.split)
    get_run_logger().info("test ndcg@10 on evaluation set %s: %s", fitted.evaluation_set,
                          ", ".join(f"{name} {m['test_ndcg_at_10']:.4f}"
                                    for name, m in compared.items()))
    return compared


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def register(stores: Stores, items: pd.DataFrame, text: TextTable | None, fitted: Fitted,
             compared: dict[str, dict[str, float]], params: RetrainParams) -> tuple[str, str]:
    """One MLflow run and a new version with the alias `challenger`: (version, run id)."""
    check_tracking(stores.tracking_uri)
    use_experiment(stores.tracking_uri, stores.artifact_location)
    cfg = fitted.model.cfg
    logged = params.resolved(fitted.split.train).model_dump() | {
        "text_dim": cfg.text_dim, "id_dropout": cfg.id_dropout, "whiten_text": cfg.whiten_text}
    batches = stores.ledger.all().query("status == 'accepted'")
    data = {k: int(batches[k].sum()) for k in ("rows_in", "rows_accepted", "rows_quarantined")}
    titles = items.set_index("item_id").loc[fitted.index.item_ids, "title"].tolist()
    version = text.version if text is not None else ""
    registered, run_id = log_retrain(
        fitted, compared, logged, data | {"batches": len(batches)}, titles, version,
        store_config(stores.state_dir, expand_env=False),  # no secrets in the logged model
        lambda v: register_model_features(stores.state_dir, MODEL_NAME, v, version))
    get_run_logger().info("run %s registered %s version %s as %s", run_id, MODEL_NAME,
                          registered, CHALLENGER)
    return registered, run_id


@task(retries=2, retry_delay_seconds=[5, 15], cache_policy=NO_CACHE)
def promote_if_better(stores: Stores, fitted: Fitted, compared: dict[str, dict[str, float]],
                      registered: str, run_id: str, gate: Gate) -> Promotion:
    """Time the registered challenger; the gate decides whether it becomes the champion. The
    decision and its numbers go on the model version and on the run."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    challenger = load_recommender(MODEL_NAME, registered)
    histories = [fitted.index.decode(h[-50:]).tolist()
                 for h in fitted.split.test_history[:200] if len(h)]
    p95 = p95_latency_ms(challenger, histories)
    metrics, champion = compared["model"], compared.get("champion")
    promoted, reason = decide(gate, metrics, champion, p95)
    numbers = {"p95_ms": p95, **{k: metrics[k] for k in GATED if k in metrics},
               **{f"champion_{k}": champion[k] for k in GATED if champion and k in champion}}
    promotion = promote(MODEL_NAME, registered, promoted, reason, numbers,
                        evaluation_set=fitted.evaluation_set)
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
    """The one-slot global concurrency limit retrains take (made on first use; looked up
    first, so the server does not log a refused insert at every run)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(RETRAIN_LOCK)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # made meanwhile by another run
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
    items = stores.store.read_catalog()
    if items is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    champion = load_champion(stores)
    text = read_text(stores, items, params, datetime.now(UTC))
    fitted = fit_task(stores, items, text, params, champion)
    compared = compare_task(fitted, champion)
    registered, run_id = register(stores, items, text, fitted, compared, params)
    promotion = promote_if_better(stores, fitted, compared, registered, run_id, Gate.of(params))
    summary = {"metrics": compared["model"], "champion_metrics": compared.get("champion"),
               "popularity_metrics": compared["popularity"], "version": promotion.version,
               "promoted": promotion.promoted, "reason": promotion.reason,
               "run_id": run_id, "start": fitted.start,
               "best_epoch": fitted.result.best_epoch,
               "evaluation_set": fitted.evaluation_set,
               "state_dir": str(stores.state_dir)}
    if serving_url:
        summary["served"] = check_served(stores, serving_url)
    create_markdown_artifact(
        key="retrain", markdown=retrain_markdown(
            summary, mlflow_links(stores, run_id, promotion.version), stores.data_docs),
        description=f"version {promotion.version}: {promotion.reason}")
    return summary
