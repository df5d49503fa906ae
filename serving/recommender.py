"""The served model: an MLflow pyfunc, logged from code, over a saved recommender bundle."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch

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
        self.load(Path(context.artifacts["bundle"]))

    def load(self, path: Path) -> None:
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
        self.embedding_version = bundle["embedding_version"]

    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        return [self.answer(q) for q in model_input]

    def answer(self, query: Query) -> Answer:
        model_ids = self.index.encode(query.history)
        unknown = [i for i, m in zip(query.history, model_ids, strict=True) if m == 0]
        known = model_ids[model_ids > 0]
        if len(known):
            seq = torch.from_numpy(known[-self.model.cfg.max_len :]).unsqueeze(0)  # (1, T)
            scores, source = self.model.score_next(seq)[0], "model"  # (n,)
        else:
            scores, source = self.popularity.clone(), "popularity"
        scores[0] = float("-inf")
        scores[torch.from_numpy(known)] = float("-inf")
        k = min(query.k, int(torch.isfinite(scores).sum()))
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
