"""The served model that follows a registry alias: when the alias moves (a promotion, a
rollback), the new version is loaded beside the old one and swapped in, with no restart."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from serving.recommender import Recommender
from serving.registry import load_recommender
from serving.schema import Answer, Query

FOLLOW = "LLMSEQREC_FOLLOW"  # "<registered model>@<alias>": follow it; unset: serve as loaded
REFRESH_S = "LLMSEQREC_REFRESH_S"  # how often the alias is looked up, seconds
log = logging.getLogger(__name__)


class AliasFollower(mlflow.pyfunc.PythonModel):
    """Answers with the version an alias names: looks the alias up every few seconds and, when
    it points elsewhere, loads that version and swaps it in between two queries."""

    def load_context(self, context) -> None:
        recommender = Recommender()
        recommender.load_context(context)
        self.serving: tuple[Recommender, str | None] = (recommender, None)  # swapped whole
        follow = os.environ.get(FOLLOW)
        if not follow:
            return
        self.name, self.alias = follow.rsplit("@", 1)
        model_dir = Path(context.artifacts["bundle"]).parents[1]
        self.run_id = yaml.safe_load((model_dir / "MLmodel").read_text()).get("run_id")
        self.refresh_s = float(os.environ.get(REFRESH_S, "10"))
        self.refresh()
        threading.Thread(target=self.keep_following, daemon=True, name="follow-alias").start()

    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        recommender, version = self.serving
        answers = recommender.predict(context, model_input, params)
        for answer in answers:
            answer.model_version = version
        return answers

    def keep_following(self) -> None:
        while True:
            time.sleep(self.refresh_s)
            try:
                self.refresh()
            except Exception as e:  # the registry may be down for a while: keep serving
                log.warning("could not follow %s@%s: %s", self.name, self.alias, e)

    def refresh(self) -> None:
        """Load the version the alias names, unless it is the one being served."""
        target = MlflowClient().get_model_version_by_alias(self.name, self.alias)
        if target.run_id == self.run_id:
            self.serving = (self.serving[0], str(target.version))
            return
        recommender = load_recommender(self.name, str(target.version), with_features=True)
        self.run_id = target.run_id
        self.serving = (recommender, str(target.version))
        log.warning("now serving %s version %s (%s)", self.name, target.version, self.alias)
