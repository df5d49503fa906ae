"""The served model: an MLflow pyfunc, logged from code, over a saved recommender bundle."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from features.store import online_store, read_recent_items
from serving.schema import Answer, Query, Reason
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
        # a query is a few small matrix products: one thread each; scale out by server workers
        torch.set_num_threads(1)
        self.load(Path(context.artifacts["bundle"]), Path(context.artifacts["feature_store"]))

    def load(self, path: Path, feature_store_config: Path | None = None) -> None:
        """The bundle, and the feature store that `user_id` queries read (if any)."""
        self.features = online_store(feature_store_config) if feature_store_config else None
        bundle = torch.load(path, weights_only=True)
        # a bundle saved before blocks, positions and the adapter's width had a choice
        # (pre-norm, absolute, hidden), before training could take two passes (one) and
        # before the text match (none)
        saved = bundle["config"]
        cfg = ModelConfig(**{"block": "prenorm", "positions": "absolute", "consistency": 0.0,
                             "adapter_width": saved["hidden"], "text_match_window": 0,
                             **saved})
        text = bundle["text_embeddings"]
        self.model = SeqRec(cfg, None if text is None else
                            TextTable(text, bundle["embedding_version"]))
        self.model.load_state_dict(bundle["state_dict"])
        self.use(self.model, ItemIndex(bundle["item_ids"].numpy()), bundle["titles"],
                 bundle["popularity"])

    def use(self, model: SeqRec, index: ItemIndex, titles: list[str],
            popularity: torch.Tensor) -> None:
        """Serve `model` over the catalog `index` (model id i + 1 is `index.item_ids[i]`, with
        `titles[i]`; `popularity` (n + 1,) the fallback scores, padding first)."""
        self.model = model.eval()
        with torch.no_grad():  # fixed while served: computed once, not per query
            self.items = self.model.item_embeddings()  # (n, C)
        self.state_scores = traced_state_scores(self.model, self.items)
        self.index, self.titles, self.popularity = index, titles, popularity

    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        return self.answers(model_input)

    def answers(self, queries: list[Query]) -> list[Answer]:
        """The answer to each query, validated already (by `predict`'s type hints)."""
        histories = self.histories(queries)
        return [self.answer(q, h) for h, q in zip(histories, queries, strict=True)]

    def histories(self, queries: list[Query]) -> list[list[int] | None]:
        """Each query's history; a user's recent items come from the online feature store."""
        users = [q.user_id for q in queries if q.user_id is not None]
        if users and self.features is None:
            raise MlflowException.invalid_parameter_value(
                "this model has no feature store: send a history instead of a user_id")
        recent = dict(zip(users, read_recent_items(self.features, users) if users else [],
                          strict=True))
        unknown = sorted({u for u, items in recent.items() if items is None})
        if unknown:
            raise MlflowException.invalid_parameter_value(
                f"unknown user_id(s) {unknown}: no recent items in the feature store")
        return [recent[q.user_id] if q.user_id is not None else q.history for q in queries]

    def answer(self, query: Query, history: list[int] | None) -> Answer:
        """The top `query.k` items after `history`, or nearest to `query.similar`."""
        if query.similar is not None:
            return self.nearest(query.similar, query.k)
        model_ids = self.index.encode(history)
        known = model_ids[model_ids > 0]
        unknown = (np.asarray(history, dtype=np.int64)[model_ids == 0].tolist()
                   if len(known) < len(model_ids) else [])
        tail = known[-self.model.cfg.max_len:]
        if len(tail):
            padded = np.zeros((1, self.model.cfg.max_len), dtype=np.int64)
            padded[0, -len(tail):] = tail
            scores, source = self.state_scores(torch.from_numpy(padded))[0], "model"  # (n,)
        else:
            scores, source = self.popularity.clone(), "popularity"
            scores[0] = float("-inf")
        if query.exclude_seen:  # all the history's items, not only those the model reads
            scores[torch.from_numpy(known)] = float("-inf")
        elif source == "model" and self.model.cfg.repeat_bias:  # the rest of `score_next`
            with torch.no_grad():
                self.model.shift_repeats_(scores.unsqueeze(0), torch.from_numpy(padded))
        top = self.top(scores, query.k)
        because = (self.explain(torch.from_numpy(tail).unsqueeze(0), [m for m, _ in top])
                   if query.explain and source == "model" else None)
        return self.answer_of(top, because, source, unknown)

    def nearest(self, item_id: int, k: int) -> Answer:
        """The items whose learned representations are closest (cosine) to `item_id`'s."""
        [m] = self.index.encode([item_id])
        if m == 0:
            return Answer(recommendations=[], source="similar", unknown_items=[item_id])
        items = torch.nn.functional.normalize(self.items, dim=1)  # (n, C)
        scores = items @ items[m]  # (n,)
        scores[[0, m]] = float("-inf")
        return self.answer_of(self.top(scores, k), None, "similar", [])

    @torch.no_grad()
    def explain(self, seq: torch.Tensor, targets: list[int]) -> list[list[Reason]]:
        """Occlusion: how much each history item adds to each target's score (the score minus
        the score without that item), as shares of the positive additions, largest first."""
        T = seq.shape[1]
        if T == 1:
            return [[Reason(item_id=int(self.index.decode(seq[0])[0]), weight=1.0)]
                    for _ in targets]
        keep = ~torch.eye(T, dtype=torch.bool)  # (T, T): row t leaves item t out
        without = seq.expand(T, T)[keep].view(T, T - 1)  # (T, T - 1)
        full = self.model.score_next(seq, self.items)[0, targets]  # (K,)
        without_scores = self.model.score_next(without, self.items)[:, targets]  # (T, K)
        drop = (full - without_scores).clamp(min=0)  # (T, K)
        history = self.index.decode(seq[0].numpy())
        reasons = []
        for column in drop.T.tolist():  # one target at a time
            share: dict[int, float] = {}
            for item, added in zip(history.tolist(), column, strict=True):
                share[item] = share.get(item, 0.0) + added
            total = sum(share.values()) or 1.0
            reasons.append([Reason(item_id=i, weight=w / total)
                            for i, w in sorted(share.items(), key=lambda x: -x[1])[:5] if w > 0])
        return reasons

    @staticmethod
    def top(scores: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """The (at most) k best items of finite score, best first: (model id, score)."""
        values, indices = torch.topk(scores, min(k, len(scores)))
        return [(m, s) for m, s in zip(indices.tolist(), values.tolist(), strict=True)
                if math.isfinite(s)]

    def answer_of(self, top: list[tuple[int, float]], because: list[list[Reason]] | None,
                  source: str, unknown: list[int]) -> Answer:
        """The answer naming the `top` items (model ids), each with its reasons (if any).
        Validated as one object by pydantic's core: cheaper than building each part."""
        items = self.index.decode([m for m, _ in top]).tolist()
        return Answer.model_validate({
            "recommendations": [
                {"item_id": i, "title": self.titles[m - 1], "score": s, "because": b}
                for i, (m, s), b in zip(items, top, because or [None] * len(top), strict=True)],
            "source": source, "unknown_items": unknown})


def traced_state_scores(model: SeqRec, items: torch.Tensor
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model.state_scores(seq, items)` of one history left-padded to `max_len` (1, max_len)
    -> (1, n), traced and frozen (weights as constants) once per served model: a query then
    runs one graph, without the Python cost of each of its small operations, about 40% of the
    time of scoring one history on this project's CPU machine. (torch 2.13 marks `torch.jit`
    deprecated for `torch.export` and `torch.compile`; measured here, an exported program took
    16 s to build and ran slower than eager, and compiling needs a C++ toolchain per model.)"""
    example = torch.zeros(1, model.cfg.max_len, dtype=torch.long)
    example[0, -1] = 1
    with torch.no_grad():
        graph = torch.jit.freeze(
            torch.jit.trace_module(model, {"state_scores": (example, items)}),
            preserved_attrs=["state_scores"])
        for _ in range(2):  # the executor profiles a graph's first runs: done here, not on a query
            graph.state_scores(example, items)

    def state_scores(seq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return graph.state_scores(seq, items)

    return state_scores
