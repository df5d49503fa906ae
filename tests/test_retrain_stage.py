"""The retrain stage on its own (no Prefect, MLflow or Feast): fit on the 25-user slice, warm
start from a champion, compare on one split."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ingestion.readers import load_movielens
from training.model import TextTable
from training.params import RetrainParams
from training.retrain import NothingToTrain, compare, fit

TINY = RetrainParams(item_repr="id", hidden=16, layers=1, max_len=20, epochs=2, seed=1)


@pytest.fixture(scope="module")
def slice_data(movielens_slice):
    raw = load_movielens(movielens_slice)
    interactions = raw.interactions.astype({"user_id": "int64", "item_id": "int64",
                                            "timestamp": "int64"})
    return interactions, raw.items["item_id"].astype("int64")


def test_the_stage_imports_without_the_operators():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, training.retrain; print(sorted(m for m in "
         "('prefect', 'mlflow', 'feast', 'great_expectations') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_fit_then_compare_with_a_champion_on_the_same_split(slice_data):
    interactions, items = slice_data
    first = fit(interactions, items, None, TINY, progress=False)
    assert first.start == "from scratch: no champion yet"
    assert len(first.split.train) == 25 and len(first.result.history) == 2
    assert 1 <= first.result.best_epoch <= 2
    alone = compare(first, None, first.split)
    assert set(alone) == {"model", "popularity"}
    assert alone["model"]["test_tail_users"] + alone["model"]["test_head_users"] + \
        alone["model"]["test_cold_users"] == 25

    second = fit(interactions, items, None, TINY, champion=first, progress=False)
    assert second.start == "warm start from the champion (0 new items)"
    assert second.evaluation_set == first.evaluation_set  # the same data: the same split
    both = compare(second, first, second.split)
    assert both["champion"] == pytest.approx(alone["model"])  # the champion, scored again
    assert both["popularity"] == alone["popularity"]


def test_a_champion_of_other_settings_is_not_a_start(slice_data):
    interactions, items = slice_data
    first = fit(interactions, items, None, TINY, progress=False)
    wider = TINY.model_copy(update={"hidden": 32})
    assert fit(interactions, items, None, wider, champion=first, progress=False
               ).start.startswith("from scratch: the champion differs")


def test_text_models_need_text_and_users_need_three_interactions(slice_data):
    interactions, items = slice_data
    with pytest.raises(NothingToTrain, match="needs item text embeddings"):
        fit(interactions, items, None, TINY.model_copy(update={"item_repr": "hybrid"}))
    few = interactions.groupby("user_id").head(2)
    with pytest.raises(NothingToTrain, match="3 or more interactions"):
        fit(few, items, None, TINY)
    n = items.nunique()
    text = TextTable(torch.from_numpy(np.random.default_rng(0).standard_normal(
        (n, 8)).astype(np.float32)), "v1")
    fitted = fit(interactions, items, text, TINY.model_copy(update={"item_repr": "hybrid"}),
                 progress=False)
    cfg = fitted.model.cfg
    assert (cfg.text_dim, cfg.embedding_version, cfg.whiten_text, cfg.id_dropout) == \
        (8, "v1", True, 0.5)
