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


def register_and_promote(model_uri: str, name: str, metric: str, value: float) -> Promotion:
    """Register a new version; make it champion when there is none or `value` beats the
    champion's `metric` (higher is better). The decision is tagged on the version."""
    client = MlflowClient()
    version = str(mlflow.register_model(model_uri, name).version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is None:
        promoted, reason = True, "no champion yet"
    else:
        best = client.get_run(champion.run_id).data.metrics.get(metric, float("-inf"))
        promoted = value > best
        reason = (f"{metric} {value:.4f} {'>' if promoted else '<='} "
                  f"{best:.4f} of champion version {champion.version}")
    client.set_model_version_tag(name, version, "promotion", "promoted" if promoted else "refused")
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(version=version, promoted=promoted, reason=reason)
