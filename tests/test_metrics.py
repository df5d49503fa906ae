import math

import numpy as np
import pytest
import torch

from training.evaluate import evaluate, popularity_scorer, rank_targets
from training.metrics import mrr, ndcg_at_k, recall_at_k, target_ranks


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
    assert evaluate(popularity_scorer(counts), histories, targets)["recall_at_10"] == 1.0
