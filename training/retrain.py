"""The retrain stage, without its operators (no Prefect, MLflow or Feast): `fit` a model on an
interaction log, warm-started from the champion when it can be, and `compare` it with the
champion and the popularity baseline on the same leave-one-out split. The nightly retrain,
`llmseqrec evaluate` and `bench/quality.py` all run these two functions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from training.evaluate import evaluate_test, model_scorer, popularity_scorer, remapped_scorer
from training.model import ModelConfig, SeqRec, TextTable
from training.params import RetrainParams
from training.sequences import ItemIndex, Split, leave_one_out, popularity, user_sequences
from training.train import TrainResult, device, grown_state, train_model


class NothingToTrain(ValueError):
    """The data cannot train the model asked for: too few users, or no text for a text model."""


class Ranker(Protocol):
    """A trained model and the catalog of its ids: a fitted model, or a registered one."""

    model: SeqRec
    index: ItemIndex


@dataclass(frozen=True)
class Fitted:
    result: TrainResult
    index: ItemIndex
    split: Split
    start: str  # how training began: from scratch, or from the champion's weights
    evaluation_set: str  # the fingerprint of the split's test histories and targets

    @property
    def model(self) -> SeqRec:
        return self.result.model

    @property
    def popularity(self) -> np.ndarray:
        """Training interactions of every model id."""
        return popularity(self.split.train, len(self.index))


def dataset(interactions: pd.DataFrame, items) -> tuple[ItemIndex, Split]:
    """The model ids of the catalog `items` (catalog item ids) and the leave-one-out split of
    `interactions` (user_id, item_id, timestamp) over them."""
    index = ItemIndex.from_items(items)
    return index, leave_one_out(user_sequences(interactions, index))


def split_fingerprint(split: Split) -> str:
    """Names the evaluation set: equal fingerprints, the same test histories and targets."""
    digest = hashlib.sha256(np.asarray(split.test_target).tobytes())
    for history in split.test_history:
        digest.update(np.asarray(history).tobytes() + b"|")
    return digest.hexdigest()[:12]


def champion_start(champion: Ranker | None, cfg: ModelConfig, index: ItemIndex
                   ) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The champion's weights grown to the current catalog, when its settings are the same
    (new items start from their text); else None. Also says which it is."""
    if champion is None:
        return None, "from scratch: no champion yet"
    try:
        state = grown_state(champion.model, champion.index.item_ids, cfg, index.item_ids)
    except ValueError as e:
        return None, f"from scratch: the champion differs ({e})"
    new = len(set(index.item_ids.tolist()) - set(champion.index.item_ids.tolist()))
    return state, f"warm start from the champion ({new} new items)"


def fit(interactions: pd.DataFrame, items, text: TextTable | None, params: RetrainParams,
        champion: Ranker | None = None, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        probe: Callable[[SeqRec], dict[str, float]] | None = None) -> Fitted:
    """Train on the leave-one-out split of `interactions` over the catalog `items` (catalog
    item ids); `text` holds the LLM embedding of every item in ascending id order (None for
    `id`). Warm-started from `champion` when `params.warm_start` and its settings match.
    `probe`: as `train_model`'s."""
    index, split = dataset(interactions, items)
    if not split.train:
        raise NothingToTrain("no user has 3 or more interactions: nothing to train on")
    if params.item_repr != "id" and text is None:
        raise NothingToTrain(f"item_repr={params.item_repr!r} needs item text embeddings")
    cfg = params.model(len(index), text, split.train)
    init, start = champion_start(champion if params.warm_start else None, cfg, index)
    result = train_model(split, cfg, params.training(progress),
                         text if params.item_repr != "id" else None,
                         on_epoch=on_epoch, init_state=init, probe=probe)
    return Fitted(result, index, split, start, split_fingerprint(split))


def compare(candidate: Ranker, champion: Ranker | None, split: Split
            ) -> dict[str, dict[str, float]]:
    """Test metrics on `split` (in `candidate`'s ids) of the candidate, of the popularity
    baseline and, remapped to the same catalog, of the champion: {"model": ..., "popularity":
    ..., "champion": ... (when there is one)}."""
    counts = popularity(split.train, len(candidate.index))
    out = {"model": evaluate_test(model_scorer(candidate.model, device()), split, counts),
           "popularity": evaluate_test(popularity_scorer(counts), split, counts)}
    if champion is not None:
        out["champion"] = evaluate_test(remapped_scorer(
            champion.model, champion.index.item_ids, candidate.index.item_ids, device()),
            split, counts)
    return out
