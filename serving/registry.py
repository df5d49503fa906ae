"""The registered recommender: log it to MLflow, register it, load a version back, and
promote it to champion when it is better. The one place that knows the logged model's layout."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from serving.recommender import Recommender, save_bundle
from serving.schema import Query
from training.model import SeqRec
from training.sequences import ItemIndex

MODEL_NAME = "llmseqrec"  # the registered model
EXPERIMENT = "llmseqrec"  # the MLflow experiment of its runs
MODEL_CODE = Path(__file__).resolve().parent / "model_code.py"
PACKAGE_ROOT = MODEL_CODE.parents[1]
CHAMPION = "champion"
CHALLENGER = "challenger"
# the logged model's artifacts: <model dir>/artifacts/<file>
BUNDLE = "recommender.pt"  # weights, catalog, titles, popularity (serving.recommender)
FEATURE_STORE = "feature_store.yaml"  # where `user_id` queries read recent items


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    reason: str


def log_recommender(model: SeqRec, index: ItemIndex, titles: list[str], popularity: np.ndarray,
                    embedding_version: str, feature_store_config: str,
                    example_history: list[int]) -> str:
    """Log the pyfunc (code, bundle, feature store config, signature, input example) in the
    active run; its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle, config = Path(tmp) / BUNDLE, Path(tmp) / FEATURE_STORE
        save_bundle(bundle, model, index, titles, popularity, embedding_version)
        config.write_text(feature_store_config)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(bundle), "feature_store": str(config)},
            code_paths=[str(PACKAGE_ROOT / p) for p in ("training", "serving", "features")],
            input_example=[Query(history=example_history, k=10).model_dump()],
        )
    return info.model_uri


def load_recommender(name: str, ref: str, with_features: bool = False) -> Recommender | None:
    """Version `ref` of `name` (a number, or an alias such as 'champion') as a Recommender
    (reading the feature store for `user_id` queries when `with_features`); None when there is
    no such version."""
    client = MlflowClient()
    try:
        version = (client.get_model_version(name, ref) if ref.isdigit()
                   else client.get_model_version_by_alias(name, ref))
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(mlflow.artifacts.download_artifacts(
            f"models:/{name}/{version.version}", dst_path=tmp)) / "artifacts"
        recommender = Recommender()
        recommender.load(artifacts / BUNDLE, artifacts / FEATURE_STORE if with_features else None)
    return recommender


def register_version(model_uri: str, name: str) -> str:
    """A new version of `name` for the logged model; its number (no alias yet)."""
    return str(mlflow.register_model(model_uri, name).version)


def alias_challenger(name: str, version: str) -> None:
    """Give a fully registered version the alias `challenger`."""
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version)


def promote(name: str, version: str, promoted: bool, reason: str,
            numbers: dict[str, float], evaluation_set: str = "") -> Promotion:
    """Record the decision and its numbers on the version; then, as the very last step (one
    call: a failure before it leaves the aliases as they were), make it the champion."""
    client = MlflowClient()
    try:
        previous = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        previous = None
    tags = {"promotion": "promoted" if promoted else "refused", "promotion_reason": reason,
            **{f"gate_{k}": f"{v:.6g}" for k, v in numbers.items()}}
    if evaluation_set:
        tags["gate_evaluation_set"] = evaluation_set
    if promoted and previous is not None:
        tags["previous_champion"] = str(previous)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(version=version, promoted=promoted, reason=reason)


def rollback(name: str) -> tuple[str, str]:
    """Give the alias `champion` back to the version the current champion replaced:
    (from version, to version)."""
    client = MlflowClient()
    current = client.get_model_version_by_alias(name, CHAMPION)
    previous = current.tags.get("previous_champion")
    if previous is None:
        raise ValueError(f"version {current.version} replaced no champion: nothing to roll back to")
    client.set_model_version_tag(name, current.version, "promotion", "rolled back")
    client.set_registered_model_alias(name, CHAMPION, previous)
    return str(current.version), previous
