"""The served model that follows a registry alias: when the alias moves (a promotion, a
rollback), the new version is loaded beside the old one and swapped in, with no restart; and
at every refresh, the items new to the catalog since that version was trained (their text
embedding in the feature store) are added to its item table, with no retrain."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient

from serving.new_items import NewItems, read_new_items, with_new_items
from serving.recommender import Recommender
from serving.registry import load_recommender
from serving.schema import Answer, Query

FOLLOW = "LLMSEQREC_FOLLOW"  # "<registered model>@<alias>": follow it; unset: serve as loaded
REFRESH_S = "LLMSEQREC_REFRESH_S"  # how often the alias and new items are looked up, seconds
DEFAULT_REFRESH_S = 10.0
log = logging.getLogger(__name__)


class AliasFollower(mlflow.pyfunc.PythonModel):
    """Answers with the version an alias names: looks the alias up every few seconds and, when
    it points elsewhere, loads that version and swaps it in between two queries; then swaps in
    that version grown by the catalog's new items, when they changed."""

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
        self.refresh_s = float(os.environ.get(REFRESH_S, DEFAULT_REFRESH_S))
        self.base, self.added = recommender, NewItems()  # the version as registered, and
        self.grown = recommender  # the items added to it
        self.refresh()
        self.stopped = threading.Event()  # set: follow no more, serve what is loaded
        threading.Thread(target=self.keep_following, daemon=True, name="follow-alias").start()

    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        recommender, version = self.serving
        answers = recommender.answers(model_input)  # validated by this predict's hints
        for answer in answers:
            answer.model_version = version
        return answers

    def keep_following(self) -> None:
        while not self.stopped.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as e:  # the registry may be down for a while: keep serving
                log.warning("could not follow %s@%s: %s", self.name, self.alias, e)

    def refresh(self) -> None:
        """Load the version the alias names, unless it is the one being served, and serve it
        with the catalog's new items."""
        target = MlflowClient().get_model_version_by_alias(self.name, self.alias)
        if target.run_id != self.run_id:
            recommender = load_recommender(self.name, str(target.version), with_features=True)
            self.base, self.added, self.grown = recommender, NewItems(), recommender
            self.run_id = target.run_id
            log.warning("now serving %s version %s (%s)", self.name, target.version,
                        self.alias)
        self.serving = (self.with_new_items(), str(target.version))

    def with_new_items(self) -> Recommender:
        """The served version grown by the items new since it was trained; as it was grown
        before when the feature store cannot be read."""
        try:
            new = read_new_items(self.base)
        except Exception as e:  # the online store may be down for a while: keep serving
            log.warning("could not read new items from the feature store: %s", e)
            return self.grown
        if new.refused != self.added.refused:
            log.warning("new items refused, their embedding version is not the model's %s: %s",
                        self.base.model.cfg.embedding_version, new.refused)
        if not new.same_as(self.added):
            self.grown = with_new_items(self.base, new)
            log.warning("serving %d new items from their text, e.g. %s", len(new.item_ids),
                        new.item_ids[:5].tolist())
        self.added = new
        return self.grown
