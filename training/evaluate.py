"""Leave-one-out evaluation by full ranking over all items: the model and a popularity baseline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from training.metrics import mrr, ndcg_at_k, recall_at_k, target_ranks
from training.model import SeqRec
from training.sequences import Split, pad_left

Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories -> (B, num_items + 1) scores


def rank_targets(
    score: Scorer, histories: list[np.ndarray], targets: np.ndarray,
    exclude_seen: bool = True, batch_size: int = 512,
) -> torch.Tensor:
    """0-based rank of every target; items of the history are excluded from the ranking."""
    ranks = []
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        scores = score(batch).float().cpu()  # (B, n)
        scores[:, 0] = float("-inf")
        if exclude_seen:
            rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
            scores[rows, np.concatenate(batch)] = float("-inf")
        ranks.append(target_ranks(scores, torch.from_numpy(targets[start : start + len(batch)])))
    return torch.cat(ranks)


def ranking_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    out = {"mrr": mrr(ranks)}
    for k in ks:
        out[f"ndcg_at_{k}"] = ndcg_at_k(ranks, k)
        out[f"recall_at_{k}"] = recall_at_k(ranks, k)
    return out


def model_scorer(model: SeqRec, device: torch.device) -> Scorer:
    def score(histories: list[np.ndarray]) -> torch.Tensor:
        model.eval()
        return model.score_next(pad_left(histories, model.cfg.max_len).to(device))
    return score


def popularity_scorer(counts: np.ndarray) -> Scorer:
    scores = torch.from_numpy(counts.astype(np.float32))  # (n,)
    return lambda histories: scores.expand(len(histories), -1).clone()


def evaluate(score: Scorer, histories: list[np.ndarray], targets: np.ndarray,
             ks: tuple[int, ...] = (10,), exclude_seen: bool = True) -> dict[str, float]:
    """Metrics of a scorer on one leave-one-out target per user."""
    return ranking_metrics(rank_targets(score, histories, targets, exclude_seen), ks)


def evaluate_split(score: Scorer, split: Split, prefix: str = "", ks: tuple[int, ...] = (10,),
                   exclude_seen: bool = True) -> dict[str, float]:
    """Validation and test metrics, named '{prefix}valid_ndcg_at_10' and so on."""
    out = {}
    for part, histories, targets in (("valid", split.valid_history, split.valid_target),
                                     ("test", split.test_history, split.test_target)):
        metrics = evaluate(score, histories, targets, ks, exclude_seen)
        out |= {f"{prefix}{part}_{name}": value for name, value in metrics.items()}
    return out
