"""The served model: an MLflow pyfunc, logged from code, over a saved recommender bundle."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from features.store import online_store, read_recent_items
from serving.schema import Answer, Query, Recommendation
from training.model import ModelConfig, SeqRec, TextTable
from training.sequences import ItemIndex


def save_bundle(path: Path, model: SeqRec, index: ItemIndex, titles: list[str],
                popularity: np.ndarray, embedding_version: str) -> None:
    """Everything the served model needs, in one file that loads with weights_only=True."""
    text = model.item_text[1:].cpu() if hasattr(model, "item_text") else None
    torch.save({
        "config": asdict(model.cfg),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "text_embeddings": text,  # an input of the model, saved beside its weights
        "item_ids": torch.from_numpy(index.item_ids),
        "titles": list(titles),
        "popularity": torch.from_numpy(popularity.astype(np.float32)),
        "embedding_version": embedding_version,
    }, path)


class Recommender(mlflow.pyfunc.PythonModel):
    """Next items for a history: top-k catalog ids with titles and scores, none from the history."""

    def load_context(self, context) -> None:
        self.load(Path(context.artifacts["bundle"]), Path(context.artifacts["feature_store"]))

    def load(self, path: Path, feature_store_config: Path | None = None) -> None:
        """The bundle, and the feature store that `user_id` queries read (if any)."""
        self.features = online_store(feature_store_config) if feature_store_config else None
        bundle = torch.load(path, weights_only=True)
        cfg = ModelConfig(**bundle["config"])
        text = bundle["text_embeddings"]
        self.model = SeqRec(cfg, None if text is None else
                            TextTable(text, bundle["embedding_version"]))
        self.model.load_state_dict(bundle["state_dict"])
        self.model.eval()
        self.index = ItemIndex(bundle["item_ids"].numpy())
        self.titles = bundle["titles"]
        self.popularity = bundle["popularity"]

    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        histories = self.histories(model_input)
        return [self.answer(h, q.k) for h, q in zip(histories, model_input, strict=True)]

    def histories(self, queries: list[Query]) -> list[list[int]]:
        """Each query's history; a user's recent items come from the online feature store."""
        users = [q.user_id for q in queries if q.history is None]
        if users and self.features is None:
            raise MlflowException.invalid_parameter_value(
                "this model has no feature store: send a history instead of a user_id")
        recent = dict(zip(users, read_recent_items(self.features, users) if users else [],
                          strict=True))
        unknown = sorted({u for u, items in recent.items() if items is None})
        if unknown:
            raise MlflowException.invalid_parameter_value(
                f"unknown user_id(s) {unknown}: no recent items in the feature store")
        return [q.history if q.history is not None else recent[q.user_id] for q in queries]

    def answer(self, history: list[int], k: int) -> Answer:
        model_ids = self.index.encode(history)
        unknown = [i for i, m in zip(history, model_ids, strict=True) if m == 0]
        known = model_ids[model_ids > 0]
        if len(known):
            seq = torch.from_numpy(known[-self.model.cfg.max_len :]).unsqueeze(0)  # (1, T)
            scores, source = self.model.score_next(seq)[0], "model"  # (n,)
        else:
            scores, source = self.popularity.clone(), "popularity"
        scores[0] = float("-inf")
        scores[torch.from_numpy(known)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        items = self.index.decode(top.indices.numpy())
        return Answer(
            recommendations=[
                Recommendation(item_id=int(i), title=self.titles[m - 1], score=float(s))
                for i, m, s in zip(items, top.indices.tolist(), top.values.tolist(), strict=True)
            ],
            source=source,
            unknown_items=unknown,
        )
