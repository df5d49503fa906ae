"""Where LLMSeqRec keeps its state, and how each embedded store is reached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME = "llmseqrec"
EXPERIMENT = "llmseqrec"


def default_state_dir() -> Path:
    """$LLMSEQREC_HOME, else .llmseqrec in the current directory."""
    return Path(os.environ.get("LLMSEQREC_HOME", ".llmseqrec")).resolve()


@dataclass(frozen=True)
class Stores:
    """The embedded stores under one state directory. MLflow's tracking URI may point
    elsewhere (a server on Postgres) through $MLFLOW_TRACKING_URI."""

    state_dir: Path

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        return (self.state_dir / "mlartifacts").as_uri()

    @property
    def quarantine_dir(self) -> Path:
        return self.state_dir / "quarantine"
