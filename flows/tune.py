"""Search the retrain settings on the store's data (`llmseqrec tune`): an Optuna study of a
trial or time budget, each trial a Prefect task and an MLflow child run (its settings and its
validation curve) of one parent run, which keeps the best settings as `tuned_params.json` for
the next retrain (`--params-from-run <parent run id>`). Only validation targets are scored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retrain import read_text
from ingestion.readers import DatasetError
from ingestion.state import Stores, default_state_dir
from serving.tracking import check_tracking, use_experiment
from training.model import TextTable
from training.params import RetrainParams
from training.search import TrialOutcome, pruned_by, run_trial, study, suggest

TUNED_PARAMS = "tuned_params.json"  # the best settings, an artifact of the parent run


def load_tuned_params(tracking_uri: str, run_id: str) -> RetrainParams:
    """The best settings a tune run found; a clear error when the run has none."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        found = mlflow.artifacts.load_dict(f"runs:/{run_id}/{TUNED_PARAMS}")
    except Exception as e:  # MLflow raises its own, OSError or a 404 by store
        raise LookupError(f"run {run_id!r} has no {TUNED_PARAMS}: is it a finished tune "
                          f"run? ({type(e).__name__})") from None
    return RetrainParams(**found)


@task(name="trial", cache_policy=NO_CACHE)
def trial_task(interactions: pd.DataFrame, items, text: TextTable | None,
               params: RetrainParams, trial: optuna.Trial, child_run_id: str) -> TrialOutcome:
    """Fit one trial's settings, its validation curve logged to its child run as it goes."""
    client, stop = MlflowClient(), pruned_by(trial)

    def should_stop(epoch: int, value: float) -> bool:
        client.log_metric(child_run_id, "valid_ndcg_at_10", value, step=epoch)
        return stop(epoch, value)

    outcome = run_trial(interactions, items, text, params, should_stop)
    get_run_logger().info("trial %d: valid ndcg@10 %.4f after %d epochs%s", trial.number,
                          outcome.value, outcome.epochs, " (pruned)" if outcome.pruned else "")
    return outcome


def tune_markdown(result: dict, trials: list[dict]) -> str:
    lines = [f"# Tune: best valid NDCG@10 {result['best_value']:.4f} "
             f"(trial {result['best_trial']} of {len(trials)}, {result['pruned']} pruned)", "",
             f"MLflow parent run `{result['run_id']}`: retrain with "
             f"`--params-from-run {result['run_id']}`", "", "| trial | state | valid NDCG@10 "
             "| epochs | settings |", "|---|---|---|---|---|"]
    lines += [f"| {t['number']} | {t['state']} | {t['value']:.4f} | {t['epochs']} | "
              f"{t['params']} |" for t in trials]
    return "\n".join(lines)


@flow(name="tune")
def tune(state_dir: Path | None = None, params: RetrainParams | None = None, trials: int = 20,
         timeout_s: float | None = None, seed: int = 0) -> dict:
    """Search the settings of `suggest` around `params` (default RetrainParams()) for at most
    `trials` trials or `timeout_s` seconds (a trial running then finishes), on the validation
    targets of every interaction in the store."""
    log = get_run_logger()
    base = params or RetrainParams()
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    items = stores.store.read_catalog()
    if items is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    interactions = stores.store.read()
    text = read_text(stores, items, base, datetime.now(UTC))
    check_tracking(stores.tracking_uri)
    use_experiment(stores.tracking_uri, stores.artifact_location)
    searched = study(seed)
    rows: list[dict] = []
    with mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tag("kind", "tune")
        mlflow.log_params({f"base_{k}": v for k, v in base.resolved().model_dump().items()}
                          | {"trials": trials, "timeout_s": timeout_s, "seed": seed})

        def objective(trial: optuna.Trial) -> float:
            drawn = suggest(trial, base)
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                                  parent_run_id=parent.info.run_id) as child:
                mlflow.log_params(trial.params)
                outcome = trial_task(interactions, items["item_id"], text, drawn, trial,
                                     child.info.run_id)
                state = "pruned" if outcome.pruned else "complete"
                mlflow.log_metrics({"best_valid_ndcg_at_10": outcome.value,
                                    "epochs": outcome.epochs})
                mlflow.set_tag("state", state)
            rows.append({"number": trial.number, "state": state, "value": outcome.value,
                         "epochs": outcome.epochs, "params": trial.params})
            if outcome.pruned:
                raise optuna.TrialPruned
            return outcome.value

        searched.optimize(objective, n_trials=trials, timeout=timeout_s)
        # the values trained with, so a later retrain gets them whatever its defaults
        best = suggest(optuna.trial.FixedTrial(searched.best_params), base).resolved().model_dump()
        mlflow.log_dict(best, TUNED_PARAMS)
        mlflow.log_metric("best_valid_ndcg_at_10", searched.best_value)
        mlflow.set_tag("best_trial", str(searched.best_trial.number))
    result = {"run_id": parent.info.run_id, "best_value": searched.best_value,
              "best_trial": searched.best_trial.number, "best_params": best,
              "trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows)}
    log.info("best valid ndcg@10 %.4f (trial %d); retrain with --params-from-run %s",
             result["best_value"], result["best_trial"], result["run_id"])
    create_markdown_artifact(key="tune", markdown=tune_markdown(result, rows),
                             description=f"best valid NDCG@10 {searched.best_value:.4f}")
    return result
