"""Where LLMSeqRec keeps its state, and how each embedded store is reached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ingestion.interaction_store import InteractionStore, Ledger

# The tracking server the user named, read before anything here runs: `mlflow.set_tracking_uri`
# writes the variable too, and must not send a later state directory to an earlier one's store.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def default_state_dir() -> Path:
    """$LLMSEQREC_HOME, else .llmseqrec in the current directory."""
    return Path(os.environ.get("LLMSEQREC_HOME", ".llmseqrec")).resolve()


@dataclass(frozen=True)
class Stores:
    """Everything under one state directory: inbox, interaction store and ledger, Data Docs,
    MLflow. MLflow's tracking URI may point elsewhere (a server on Postgres) through
    $MLFLOW_TRACKING_URI."""

    state_dir: Path

    @property
    def tracking_uri(self) -> str:
        return USER_TRACKING_URI or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: under the state directory, unless a
        tracking server decides (its --artifacts-destination: a bucket, a shared volume)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.state_dir / "mlartifacts").as_uri()

    @property
    def inbox(self) -> Path:
        return self.state_dir / "inbox"

    @property
    def store(self) -> InteractionStore:
        return InteractionStore(self.state_dir / "store")

    @property
    def ledger(self) -> Ledger:
        """The interaction batches taken from the inbox."""
        return Ledger(self.state_dir / "store" / "ledger.db")

    @property
    def catalog_ledger(self) -> Ledger:
        """The catalog batches taken from inbox/items/."""
        return Ledger(self.state_dir / "store" / "catalog_ledger.db")

    @property
    def data_docs(self) -> Path:
        """The Great Expectations project whose Data Docs site shows every validation."""
        return self.state_dir / "data_docs"
