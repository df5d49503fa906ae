"""Items new to the catalog served with no retrain: the served model grows its item table from
the Feast online store (text embeddings of its version only), in process and through the
registry alias it follows."""

import logging
import time
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from configs import model_config
from mlflow import MlflowClient

from features.store import publish_item_embeddings, store_config
from serving.follower import FOLLOW, REFRESH_S
from serving.new_items import read_new_items, with_new_items
from serving.recommender import Recommender, save_bundle
from serving.registry import log_recommender, register_version
from serving.schema import Answer, Query
from training.model import SeqRec, TextTable
from training.sequences import ItemIndex

ITEMS = [101, 102, 103, 104, 105]
VECTORS = torch.nn.functional.normalize(
    torch.randn(5, 4, generator=torch.Generator().manual_seed(3)), dim=1)  # (items, text_dim)
T0 = datetime.now(UTC)


def publish(state, item_ids: list[int], vectors: np.ndarray, version: str, seconds: int) -> None:
    items = pd.DataFrame({"item_id": item_ids, "title": [f"Item {i}" for i in item_ids]})
    publish_item_embeddings(state, items, vectors, version, T0 + timedelta(seconds=seconds))


def with_item(item: int, like: int) -> tuple[list[int], np.ndarray]:
    """The catalog and an item `item` whose text embedding is that of item `like`."""
    vectors = np.concatenate([VECTORS.numpy(), VECTORS[ITEMS.index(like)][None].numpy()])
    return [*ITEMS, item], vectors


@pytest.fixture
def served(tmp_path):
    """A hybrid model's bundle, and a feature store holding its catalog's embeddings (v1)."""
    state = tmp_path / "state"
    publish(state, ITEMS, VECTORS.numpy(), "v1", 0)
    torch.manual_seed(4)
    cfg = model_config(num_items=5, max_len=4, hidden=8, layers=1, item_repr="hybrid",
                       text_dim=4, embedding_version="v1", whiten_text=True, id_dropout=0.5)
    model = SeqRec(cfg, TextTable(VECTORS, "v1"))
    bundle, config = tmp_path / "recommender.pt", tmp_path / "feature_store.yaml"
    save_bundle(bundle, model, ItemIndex.from_items(ITEMS), [f"Item {i}" for i in ITEMS],
                np.array([0, 5, 4, 3, 2, 1]), "v1")
    config.write_text(store_config(state))
    return state, bundle, config


def ask(rec, **query) -> Answer:
    [answer] = rec.predict(None, [Query(**query)])
    return answer


def test_a_new_item_is_scored_from_its_text_with_a_zero_id_row(served):
    state, bundle, config = served
    rec = Recommender()
    rec.load(bundle, config)
    assert len(read_new_items(rec).item_ids) == 0
    publish(state, *with_item(106, like=103), "v1", 5)
    new = read_new_items(rec)
    assert new.item_ids.tolist() == [106] and new.titles == ("Item 106",) and not new.refused
    grown = with_new_items(rec, new)
    [m_new, m_twin] = grown.index.encode([106, 103])
    assert torch.count_nonzero(grown.model.item_id.weight[m_new]) == 0
    torch.testing.assert_close(grown.items[grown.index.encode(ITEMS)], rec.items[1:])
    # its text part is its twin's, whitened the same way: the learned ID row aside, the same
    torch.testing.assert_close(grown.items[m_new],
                               grown.items[m_twin] - grown.model.item_id.weight[m_twin])
    similar = ask(grown, similar=106, k=3)
    assert similar.unknown_items == [] and len(similar.recommendations) == 3
    answer = ask(grown, history=[101, 106], k=6, exclude_seen=False)
    assert answer.source == "model" and answer.unknown_items == []
    assert {r.item_id: r.title for r in answer.recommendations}[106] == "Item 106"
    assert ask(rec, similar=106).unknown_items == [106]  # the version as registered: unchanged


def test_an_id_only_model_is_left_unchanged(served, tmp_path):
    state, _, config = served
    publish(state, *with_item(106, like=103), "v1", 5)
    bundle = tmp_path / "id.pt"
    save_bundle(bundle, SeqRec(model_config(num_items=5, max_len=4, hidden=8, layers=1)),
                ItemIndex.from_items(ITEMS), [f"Item {i}" for i in ITEMS],
                np.array([0, 5, 4, 3, 2, 1]), "")
    rec = Recommender()
    rec.load(bundle, config)
    assert len(read_new_items(rec).item_ids) == 0


def wait_for(predicate, timeout_s: float) -> float:
    """Seconds until `predicate()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, "not within the refresh interval"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.e2e  # a model logged to and followed through a real MLflow registry
def test_the_follower_serves_new_items_within_a_refresh_and_refuses_other_versions(
        served, tmp_path, monkeypatch, caplog, request):
    state, bundle, config = served
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "new-items", artifact_location=(tmp_path / "artifacts").as_uri()))
    rec = Recommender()
    rec.load(bundle)
    with mlflow.start_run():
        version = register_version(log_recommender(
            rec.model, rec.index, rec.titles, rec.popularity.numpy(), "v1",
            config.read_text(), [101, 102]), "rec")
    MlflowClient().set_registered_model_alias("rec", "champion", version)
    refresh_s = 0.5
    monkeypatch.setenv(FOLLOW, "rec@champion")
    monkeypatch.setenv(REFRESH_S, str(refresh_s))
    model = mlflow.pyfunc.load_model("models:/rec@champion")
    follower = model.unwrap_python_model()
    request.addfinalizer(follower.stopped.set)  # its thread does not outlive the test

    def known(item: int) -> bool:  # a query, as a client would send it: it never fails
        [answer] = model.predict([{"similar": item, "k": 3}])
        return answer.unknown_items == [] and answer.model_version == version

    assert not known(106)
    publish(state, *with_item(106, like=103), "v1", 5)
    assert wait_for(lambda: known(106), timeout_s=refresh_s + 2) < refresh_s + 2
    [answer] = model.predict([{"history": [106], "k": 6}])
    assert answer.source == "model" and answer.unknown_items == []

    # item 107 is embedded in v1, then again in another recipe: the model refuses it
    caplog.set_level(logging.WARNING, logger="serving.follower")
    publish(state, [107], VECTORS[:1].numpy(), "v1", 10)
    publish(state, [107], VECTORS[1:2].numpy(), "v2", 15)
    wait_for(lambda: follower.added.refused == {107: "v2"}, timeout_s=refresh_s + 2)
    assert not known(107) and known(106)
    assert "new items refused, their embedding version is not the model's v1: {107: 'v2'}" \
        in caplog.text
