"""Leave-one-out evaluation by full ranking over all items: the model and a popularity baseline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from training.metrics import mrr, ndcg_at_k, recall_at_k, target_ranks
from training.model import SeqRec
from training.sequences import ItemIndex, Split, pad_left

Scorer = Callable[[list[np.ndarray]], torch.Tensor]  # histories -> (B, num_items + 1) scores


def rank_targets(
    score: Scorer, histories: list[np.ndarray], targets: np.ndarray,
    exclude_seen: bool = True, batch_size: int = 512,
) -> torch.Tensor:
    """0-based rank of every target; with `exclude_seen`, the items of the history are left
    out of the ranking. Histories are scored in batches of similar length (little padding)."""
    order = np.argsort([len(h) for h in histories], kind="stable")
    ranks = torch.empty(len(histories), dtype=torch.long)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [histories[i] for i in rows]
        scores = score(batch).float().cpu()  # (B, n)
        scores[:, 0] = float("-inf")
        if exclude_seen:
            users = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
            scores[users, np.concatenate(batch)] = float("-inf")
        ranks[rows] = target_ranks(scores, torch.from_numpy(targets[rows]))
    return ranks


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


def remapped_scorer(model: SeqRec, model_items: np.ndarray, items: np.ndarray,
                    device: torch.device) -> Scorer:
    """A model trained on another catalog (`model_items`: the catalog id of each of its ids),
    scoring over the ids of `items`: histories are translated to its ids, and the items it does
    not know score -inf. Two versions are so compared on one evaluation set."""
    own = np.concatenate([[0], ItemIndex(model_items).encode(items)])  # (n,) its id of ours

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        translated = [own[h][own[h] > 0] for h in histories]
        scores = model.score_next(pad_left(translated, model.cfg.max_len).to(device)).cpu()
        out = scores[:, torch.from_numpy(own)]  # (B, n)
        out[:, torch.from_numpy(own == 0)] = float("-inf")
        return out
    return score


def popularity_scorer(counts: np.ndarray) -> Scorer:
    scores = torch.from_numpy(counts.astype(np.float32))  # (n,)
    return lambda histories: scores.expand(len(histories), -1).clone()


def evaluate_targets(score: Scorer, histories: list[np.ndarray], targets: np.ndarray,
             ks: tuple[int, ...] = (10,), exclude_seen: bool = True) -> dict[str, float]:
    """Metrics of a scorer on one leave-one-out target per user."""
    return ranking_metrics(rank_targets(score, histories, targets, exclude_seen), ks)


def item_slices(counts: np.ndarray, head_share: float = 0.2, cold_max: int = 4
                ) -> dict[str, np.ndarray]:
    """Disjoint item groups by training popularity, as masks over model ids: `cold` items have
    at most `cold_max` training interactions (none included), `head` items are the most
    popular `head_share` of the catalog, `tail` the rest."""
    real = np.arange(len(counts)) > 0  # id 0 is padding
    ranked = np.argsort(-counts[1:], kind="stable") + 1
    head = np.zeros(len(counts), dtype=bool)
    head[ranked[: int(round(head_share * (len(counts) - 1)))]] = True
    cold = real & (counts <= cold_max)
    head &= ~cold
    return {"head": head, "tail": real & ~head & ~cold, "cold": cold}


def evaluate_test(score: Scorer, split: Split, counts: np.ndarray,
                  ks: tuple[int, ...] = (10, 20, 50), new: np.ndarray | None = None
                  ) -> dict[str, float]:
    """The test numbers: full ranking of each user's last item, with the history's items
    excluded (`test_ndcg_at_10`) and not (`test_unfiltered_ndcg_at_10`), overall and for the
    users whose target is a head, tail or cold item (`test_tail_ndcg_at_10`, `test_tail_users`),
    and a `new` item or a `warm` one. `counts` are the training interactions of each item
    (`sequences.popularity`); `new` marks the items new to the model (a mask over model ids),
    by default those it never saw in training (count 0; they are cold items too)."""
    targets = split.test_target
    slices = item_slices(counts)
    slices["new"] = counts == 0 if new is None else np.asarray(new, dtype=bool)
    slices["new"][0] = False  # padding
    slices["warm"] = ~slices["new"]
    slices["warm"][0] = False
    out = {}
    for protocol, exclude_seen in (("", True), ("unfiltered_", False)):
        ranks = rank_targets(score, split.test_history, targets, exclude_seen)
        out |= {f"test_{protocol}{k}": v for k, v in ranking_metrics(ranks, ks).items()}
        for name, items in slices.items():
            users = torch.from_numpy(items[targets])
            out[f"test_{name}_users"] = int(users.sum())
            if users.any():
                out |= {f"test_{protocol}{name}_{k}": v
                        for k, v in ranking_metrics(ranks[users], ks).items()}
    return out
