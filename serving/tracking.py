"""One MLflow run per retrain: its settings, data counts, curves and metrics, the logged model
and its new version, which gets the alias `challenger` as the very last step."""

from __future__ import annotations

from collections.abc import Callable

import mlflow
import requests
from mlflow import MlflowClient

from serving.registry import (
    EXPERIMENT,
    MODEL_NAME,
    alias_challenger,
    log_recommender,
    register_version,
)
from training.curves import plot_curves
from training.retrain import Fitted


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer."""


def check_tracking(uri: str) -> None:
    """Fail fast, and say so, when the tracking server is down (MLflow's own client retries
    for minutes before it gives up)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as e:
        raise TrackingUnavailable(f"the MLflow tracking server at {uri} does not answer "
                                  f"({type(e).__name__}); nothing was registered") from None


def use_experiment(uri: str, artifact_location: str | None) -> None:
    """Point MLflow at `uri` and at the project's experiment (made on first use)."""
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    mlflow.set_experiment(EXPERIMENT)


def log_retrain(fitted: Fitted, compared: dict[str, dict[str, float]], params: dict,
                data: dict[str, int], titles: list[str], embedding_version: str,
                feature_store_config: str, model_features: Callable[[str], str]
                ) -> tuple[str, str]:
    """In the active experiment: one run with `params`, the `data` counts, the curves and the
    metrics of `compared` (`training.retrain.compare`), the model logged with `titles` and
    `feature_store_config`, a new version of it whose features `model_features(version)`
    names, and the alias `challenger` on that version last: (version, run id)."""
    result = fitted.result
    with mlflow.start_run() as run:
        mlflow.log_params(params | {"embedding_version": embedding_version,
                                    "start": fitted.start, "best_epoch": result.best_epoch,
                                    "text_match_weight": result.text_match_weight,
                                    "evaluation_set": fitted.evaluation_set})
        mlflow.log_metrics({f"data_{k}": v for k, v in data.items()})
        mlflow.log_metrics({"train_users": len(fitted.split.train),
                            "train_interactions": sum(map(len, fitted.split.train)),
                            "items": len(fitted.index)})
        for row in result.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.log_metrics(compared["model"] | {"valid_ndcg_at_10": result.valid_ndcg_at_10}
                           | {f"{name}_{k}": v for name in ("champion", "popularity")
                              for k, v in compared.get(name, {}).items()})
        mlflow.log_figure(plot_curves(result.history, result.best_epoch), "training_curves.png")
        mlflow.set_tag("embedding_version", embedding_version)
        example = fitted.index.decode(fitted.split.test_history[0][-5:]).tolist()
        model_uri = log_recommender(fitted.model, fitted.index, titles, fitted.popularity,
                                    embedding_version, feature_store_config, example)
        version = register_version(model_uri, MODEL_NAME)
        service = model_features(version)
        MlflowClient().set_model_version_tag(MODEL_NAME, version, "feature_service", service)
        mlflow.set_tags({"registered_version": version, "feature_service": service})
        alias_challenger(MODEL_NAME, version)
    return version, run.info.run_id
