"""Log the recommender to MLflow, register it, and promote it to champion when it is better."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from serving.schema import Query

MODEL_CODE = Path(__file__).resolve().parent / "model_code.py"
PACKAGE_ROOT = MODEL_CODE.parents[1]
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    reason: str


def log_recommender(bundle: Path, feature_store_config: Path, example_history: list[int]) -> str:
    """Log the pyfunc (code, bundle, feature store config, signature, input example) in the
    active run; its URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts={"bundle": str(bundle), "feature_store": str(feature_store_config)},
        code_paths=[str(PACKAGE_ROOT / p) for p in ("training", "serving", "features")],
        input_example=[Query(history=example_history, k=10).model_dump()],
    )
    return info.model_uri


def registered_bundle(name: str, ref: str, dest: Path) -> Path | None:
    """The recommender bundle of version `ref` (a number, or an alias such as 'champion'),
    downloaded into `dest`; None when there is no such version."""
    client = MlflowClient()
    try:
        version = (client.get_model_version(name, ref) if ref.isdigit()
                   else client.get_model_version_by_alias(name, ref))
    except MlflowException:
        return None
    model_dir = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}",
                                                    dst_path=dest)
    return Path(model_dir) / "artifacts" / "recommender.pt"


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
