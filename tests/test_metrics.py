import math

import numpy as np
import pytest
import torch

from training.evaluate import (
    evaluate_targets,
    evaluate_test,
    item_slices,
    popularity_scorer,
    rank_targets,
)
from training.metrics import mrr, ndcg_at_k, recall_at_k, target_ranks
from training.sequences import Split


def test_ranks_count_items_scored_at_least_as_high():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.1], [0.0, 0.2, 0.2, 0.2]])
    assert target_ranks(scores, torch.tensor([2, 1])).tolist() == [1, 2]  # ties are pessimistic


def test_ndcg_and_recall_by_hand():
    ranks = torch.tensor([0, 1, 9, 10])
    expected = (1 + 1 / math.log2(3) + 1 / math.log2(11) + 0) / 4
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)
    assert recall_at_k(ranks, 10) == 0.75
    assert ndcg_at_k(ranks, 1) == 0.25 and recall_at_k(ranks, 1) == 0.25
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11) / 4)


def test_seen_items_are_excluded_from_the_ranking():
    counts = np.array([0, 100, 90, 80, 70, 60])  # item 1 most popular
    histories = [np.array([1, 2]), np.array([5])]
    targets = np.array([3, 3])
    ranks = rank_targets(popularity_scorer(counts), histories, targets)
    assert ranks.tolist() == [0, 2]
    ranks_all = rank_targets(popularity_scorer(counts), histories, targets, exclude_seen=False)
    assert ranks_all.tolist() == [2, 2]
    assert evaluate_targets(popularity_scorer(counts), histories, targets)["recall_at_10"] == 1.0


def test_item_slices_split_the_catalog_by_training_popularity():
    counts = np.array([0, 50, 40, 30, 9, 8, 7, 6, 5, 4, 0])  # 10 items; padding first
    slices = item_slices(counts, head_share=0.2, cold_max=4)
    assert np.flatnonzero(slices["head"]).tolist() == [1, 2]
    assert np.flatnonzero(slices["tail"]).tolist() == [3, 4, 5, 6, 7, 8]
    assert np.flatnonzero(slices["cold"]).tolist() == [9, 10]  # few or no training interactions
    assert not any(mask[0] for mask in slices.values())


def test_test_metrics_per_slice_are_those_of_its_users():
    counts = np.array([0, 50, 40, 30, 9, 8, 7, 6, 5, 4, 0])
    histories = [np.array([1]), np.array([2]), np.array([9])]
    targets = np.array([2, 3, 10])  # a head, a tail and a cold target
    split = Split(train=[], valid_history=[], valid_target=np.array([]),
                  test_history=histories, test_target=targets)
    metrics = evaluate_test(popularity_scorer(counts), split, counts, ks=(1, 10))
    # popularity ranks: target 2 after seen 1 is first; 3 is second; 10 is last of 9 left
    assert metrics["test_head_users"] == metrics["test_tail_users"] == 1
    assert metrics["test_head_recall_at_1"] == 1.0 and metrics["test_tail_recall_at_1"] == 0.0
    assert metrics["test_tail_ndcg_at_10"] == pytest.approx(1 / math.log2(3))
    assert metrics["test_cold_mrr"] == pytest.approx(1 / 9)
    assert metrics["test_unfiltered_head_recall_at_1"] == 0.0  # unfiltered: item 1 comes first
    assert metrics["test_recall_at_1"] == pytest.approx(1 / 3)
    # new: by default the items never trained on (item 10), else the ones named
    assert metrics["test_new_users"] == 1 and metrics["test_warm_users"] == 2
    assert metrics["test_new_mrr"] == pytest.approx(1 / 9)
    named = np.zeros(len(counts), dtype=bool)
    named[3] = True
    metrics = evaluate_test(popularity_scorer(counts), split, counts, ks=(1,), new=named)
    assert metrics["test_new_users"] == 1 and metrics["test_new_recall_at_1"] == 0.0
    assert metrics["test_warm_recall_at_1"] == 0.5


def test_a_model_of_another_catalog_is_scored_on_ours():
    from configs import model_config

    from training.evaluate import remapped_scorer
    from training.model import SeqRec

    torch.manual_seed(0)
    old = SeqRec(model_config(num_items=3, max_len=4, hidden=8, layers=1)).eval()
    old_items = np.array([10, 20, 30])  # its ids 1..3
    ours = np.array([10, 15, 30])  # 20 left, 15 is new: our ids 1..3
    scores = remapped_scorer(old, old_items, ours, torch.device("cpu"))([np.array([1, 3])])
    direct = old.score_next(torch.tensor([[1, 3]]))  # the same history in its own ids
    torch.testing.assert_close(scores[0, [1, 3]], direct[0, [1, 3]])
    assert torch.isinf(scores[0, [0, 2]]).all()  # padding, and 15 it never saw
