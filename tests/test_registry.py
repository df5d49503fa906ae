from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from configs import model_config
from mlflow import MlflowClient

from features.store import store_config
from serving.gate import Gate, decide
from serving.recommender import Recommender, save_bundle
from serving.registry import (
    Promotion,
    alias_challenger,
    log_recommender,
    promote,
    register_version,
    rollback,
)
from serving.schema import Answer, Query
from training.model import SeqRec, TextTable
from training.params import RetrainParams
from training.sequences import ItemIndex


@pytest.fixture
def bundle(tmp_path):
    index = ItemIndex.from_items([101, 102, 103, 104, 105])
    torch.manual_seed(4)
    model = SeqRec(model_config(num_items=5, max_len=4, hidden=8, layers=1, repeat_bias=True))
    with torch.no_grad():
        model.repeat_bias.fill_(0.3)  # as if learned: a history's own items score higher
    path = tmp_path / "recommender.pt"
    save_bundle(path, model, index, ["A", "B", "C", "D", "E"], np.array([0, 5, 4, 3, 2, 1]), "v")
    return path


@pytest.fixture
def matched_bundle(tmp_path):
    """A hybrid model with its text match on, as a retrain fits it."""
    torch.manual_seed(5)
    model = SeqRec(model_config(num_items=5, max_len=4, hidden=8, layers=1, repeat_bias=True,
                                item_repr="hybrid", text_dim=6, embedding_version="v",
                                whiten_text=True, text_match_window=2),
                   TextTable(torch.randn(5, 6), "v"))
    with torch.no_grad():
        model.repeat_bias.fill_(0.3)
    model.set_text_match(2.0)
    path = tmp_path / "matched.pt"
    save_bundle(path, model.eval(), ItemIndex.from_items([101, 102, 103, 104, 105]),
                ["A", "B", "C", "D", "E"], np.array([0, 5, 4, 3, 2, 1]), "v")
    return path


def ask(rec: Recommender, **query) -> Answer:
    [answer] = rec.predict(None, [Query(**query)])
    return answer


def test_bundle_answers_without_the_history_and_falls_back_to_popularity(bundle):
    rec = Recommender()
    rec.load(bundle)
    answer = ask(rec, history=[101, 999, 103], k=10)
    ids = [r.item_id for r in answer.recommendations]
    assert sorted(ids) == [102, 104, 105] and answer.source == "model"
    assert answer.unknown_items == [999]
    assert all(r.because is None for r in answer.recommendations)
    cold = ask(rec, history=[999], k=2)
    assert cold.source == "popularity" and [r.item_id for r in cold.recommendations] == [101, 102]
    assert [r.title for r in cold.recommendations] == ["A", "B"]
    seen_too = ask(rec, history=[101, 103], k=5, exclude_seen=False)
    assert sorted(r.item_id for r in seen_too.recommendations) == [101, 102, 103, 104, 105]


@pytest.mark.parametrize("saved", ["bundle", "matched_bundle"])
def test_served_scores_are_the_models_own_for_every_history_length(saved, request):
    rec = Recommender()
    rec.load(request.getfixturevalue(saved))  # max_len 4: histories shorter, as long and longer
    matched = saved == "matched_bundle"
    assert (rec.model.cfg.text_match_window, rec.model.matching) == ((2, True) if matched
                                                                     else (0, False))
    for history in ([104], [101, 103], [105, 101, 103], [102, 101, 105, 104],
                    [103, 102, 101, 105, 104, 102]):
        seq = torch.from_numpy(rec.index.encode(history[-4:])).unsqueeze(0)
        expected = rec.model.score_next(seq, rec.items)[0, 1:]  # the model, run op by op
        answer = ask(rec, history=history, k=5, exclude_seen=False)
        served = torch.tensor([r.score for r in answer.recommendations])
        assert torch.allclose(served, expected.sort(descending=True).values, atol=1e-5)


def test_a_bundle_saved_before_blocks_positions_and_adapter_width_had_a_choice_serves_it(
        tmp_path):
    torch.manual_seed(4)
    model = SeqRec(model_config(num_items=5, max_len=4, hidden=8, layers=1, block="prenorm",
                                item_repr="hybrid", text_dim=6, embedding_version="v",
                                adapter_width=8), TextTable(torch.randn(5, 6), "v"))
    path = tmp_path / "old.pt"
    save_bundle(path, model.eval(), ItemIndex.from_items([101, 102, 103, 104, 105]),
                ["A", "B", "C", "D", "E"], np.array([0, 5, 4, 3, 2, 1]), "v")
    saved = torch.load(path, weights_only=True)
    for field in ("block", "positions", "adapter_width", "text_match_window"):  # as written
        # before the fields
        del saved["config"][field]
    torch.save(saved, path)
    rec = Recommender()
    rec.load(path)
    assert (rec.model.cfg.block, rec.model.cfg.positions) == ("prenorm", "absolute")
    seq = torch.tensor([[0, 1, 3, 2]])
    torch.testing.assert_close(rec.model.score_next(seq), model.score_next(seq))


def test_explanations_are_the_score_each_history_item_adds(bundle):
    rec = Recommender()
    rec.load(bundle)
    history = [101, 103, 104]
    answer = ask(rec, history=history, k=2, exclude_seen=False, explain=True)

    def score(ids: list[int], target: int) -> float:
        return float(rec.model.score_next(torch.tensor([rec.index.encode(ids)]))[0, target])

    for r in answer.recommendations:  # by hand: the score without each item against the full
        target = int(rec.index.encode([r.item_id])[0])
        added = {i: max(0.0, score(history, target) - score([j for j in history if j != i],
                                                            target)) for i in history}
        expected = {i: a / sum(added.values()) for i, a in added.items() if a > 0}
        assert {x.item_id: x.weight for x in r.because} == pytest.approx(expected)
        assert [x.weight for x in r.because] == sorted((x.weight for x in r.because),
                                                       reverse=True)
    assert any(r.because for r in answer.recommendations)  # empty: no item raises the score


def test_similar_items_are_the_nearest_representations(bundle):
    rec = Recommender()
    rec.load(bundle)
    answer = ask(rec, similar=103, k=3)
    ids = [r.item_id for r in answer.recommendations]
    assert answer.source == "similar" and len(ids) == 3 and 103 not in ids
    items = torch.nn.functional.normalize(rec.model.item_embeddings().detach(), dim=1)
    cosine = (items @ items[3])[1:]  # model ids 1..5 are items 101..105
    cosine[2] = -2
    assert ids == [101 + int(i) for i in cosine.argsort(descending=True)[:3]]
    assert ask(rec, similar=999).unknown_items == [999]


def test_queries_name_one_subject(bundle):
    from mlflow.exceptions import MlflowException
    from pydantic import ValidationError

    for bad in ({}, {"history": [1], "user_id": 3}, {"similar": 1, "history": [2]}):
        with pytest.raises(ValidationError, match="one of a history, a user_id or a similar"):
            Query(**bad)
    rec = Recommender()
    rec.load(bundle)
    with pytest.raises(MlflowException, match="no feature store"):
        rec.predict(None, [Query(user_id=3)])


def metrics(ndcg: float, tail: float = 0.02, cold: float = 0.01) -> dict[str, float]:
    return {"test_ndcg_at_10": ndcg, "test_tail_ndcg_at_10": tail, "test_cold_ndcg_at_10": cold}


def test_gate_wants_a_better_model_no_worse_on_tail_and_cold_and_fast_enough():
    gate = Gate(margin=0.05, slice_tolerance=0.1, p95_ms=20)
    champion = metrics(0.100)
    assert decide(gate, metrics(0.110), champion, p95_ms=5)[0]
    promoted, reason = decide(gate, metrics(0.104), champion, p95_ms=5)  # under the margin
    assert not promoted and reason.startswith("refused: test_ndcg_at_10 0.1040 vs champion")
    promoted, reason = decide(gate, metrics(0.120, tail=0.017), champion, p95_ms=5)
    assert not promoted and "test_tail_ndcg_at_10 0.0170 vs champion 0.0200" in reason
    assert decide(gate, metrics(0.120, tail=0.0185), champion, p95_ms=5)[0]  # within 10%
    promoted, reason = decide(gate, metrics(0.120), champion, p95_ms=25)
    assert not promoted and "p95 25.0 ms vs budget 20.0 ms" in reason
    promoted, reason = decide(gate, metrics(0.001), None, p95_ms=5)
    assert promoted and reason.startswith("no champion yet")


def register(bundle: Path, config: str, ndcg: float, champion: dict | None,
             tail: float = 0.02) -> Promotion:
    rec = Recommender()
    rec.load(bundle)
    with mlflow.start_run():
        version = register_version(log_recommender(
            rec.model, rec.index, rec.titles, rec.popularity.numpy(), "v", config, [101, 102]),
            "rec")
        alias_challenger("rec", version)
        promoted, reason = decide(Gate.of(RetrainParams()), metrics(ndcg, tail), champion,
                                  p95_ms=1.0)
        return promote("rec", version, promoted, reason, metrics(ndcg, tail))


def aliases(client: MlflowClient) -> dict[str, str]:
    return {a: str(client.get_model_version_by_alias("rec", a).version)
            for a in ("champion", "challenger")}


@pytest.mark.e2e  # five models logged to and loaded from a real MLflow registry
def test_champion_changes_only_for_a_better_model_and_rolls_back(tmp_path, bundle, monkeypatch):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "promotion", artifact_location=(tmp_path / "artifacts").as_uri()))
    config = store_config(tmp_path / "state")
    client = MlflowClient()
    first = register(bundle, config, 0.10, None)
    worse = register(bundle, config, 0.05, metrics(0.10))
    tail_loss = register(bundle, config, 0.20, metrics(0.10), tail=0.001)
    assert [first.promoted, worse.promoted, tail_loss.promoted] == [True, False, False]
    assert aliases(client) == {"champion": "1", "challenger": "3"}
    assert client.get_model_version("rec", "2").tags["promotion"] == "refused"
    assert client.get_model_version("rec", "3").tags["gate_test_tail_ndcg_at_10"] == "0.001"

    # a promotion that fails midway (the registry goes away) leaves the champion as it was
    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "set_model_version_tag", fail)
        with pytest.raises(ConnectionError):
            register(bundle, config, 0.30, metrics(0.10))
    assert aliases(client) == {"champion": "1", "challenger": "4"}

    better = register(bundle, config, 0.30, metrics(0.10))
    assert better.promoted and aliases(client)["champion"] == better.version == "5"
    assert client.get_model_version("rec", "5").tags["previous_champion"] == "1"
    served = mlflow.pyfunc.load_model("models:/rec@champion")
    [answer] = served.predict([{"history": [101, 102], "k": 2}])
    assert len(answer.recommendations) == 2

    assert rollback("rec") == ("5", "1")
    assert aliases(client)["champion"] == "1"
    assert client.get_model_version("rec", "5").tags["promotion"] == "rolled back"
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback("rec")


def fail(*args, **kwargs):
    raise ConnectionError("tracking server unreachable")
