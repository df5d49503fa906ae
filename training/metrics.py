"""Full-ranking metrics for leave-one-out evaluation: one held-out target per user."""

from __future__ import annotations

import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items: (B, n), (B,) -> (B,).
    Ties count against the target, so a constant scorer earns nothing."""
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    return (scores >= target_scores).sum(1) - 1


def ndcg_at_k(ranks: torch.Tensor, k: int) -> float:
    """Mean NDCG@k with a single relevant item: 1 / log2(rank + 2) when rank < k."""
    gains = 1.0 / torch.log2(ranks.double() + 2.0)
    return float(torch.where(ranks < k, gains, 0.0).mean())


def mrr(ranks: torch.Tensor) -> float:
    """Mean reciprocal rank of the targets over the whole ranking."""
    return float((1.0 / (ranks.double() + 1.0)).mean())


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Share of targets ranked in the top k."""
    return float((ranks < k).double().mean())
