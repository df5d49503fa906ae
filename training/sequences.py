"""User sequences from an interaction log, the leave-one-out split, and padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class ItemIndex:
    """Maps catalog item ids to contiguous model ids from 1 (0 is padding)."""

    item_ids: np.ndarray  # item_ids[i] is the catalog id of model id i + 1

    @classmethod
    def from_items(cls, item_ids) -> ItemIndex:
        return cls(np.unique(np.asarray(item_ids, dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.item_ids)

    def encode(self, item_ids) -> np.ndarray:
        """Model ids of catalog ids; 0 for an id outside the index."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, item_ids).clip(max=len(self.item_ids) - 1)
        return np.where(self.item_ids[pos] == item_ids, pos + 1, 0)

    def decode(self, model_ids) -> np.ndarray:
        return self.item_ids[np.asarray(model_ids, dtype=np.int64) - 1]


@dataclass(frozen=True)
class Split:
    """Leave-one-out: the last item is the test target, the one before the validation target."""

    train: list[np.ndarray]  # each user's sequence without its last two items
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray


def user_sequences(interactions: pd.DataFrame, index: ItemIndex) -> list[np.ndarray]:
    """Each user's model item ids in time order (ties keep log order); users by id."""
    df = interactions.assign(item=index.encode(interactions["item_id"]))
    df = df[df["item"] > 0].sort_values(["user_id", "timestamp"], kind="stable")
    return [g.to_numpy() for _, g in df.groupby("user_id", sort=True)["item"]]


def leave_one_out(sequences: list[np.ndarray]) -> Split:
    """Split users with at least three interactions; shorter ones cannot be evaluated."""
    seqs = [s for s in sequences if len(s) >= 3]
    return Split(
        train=[s[:-2] for s in seqs],
        valid_history=[s[:-2] for s in seqs],
        valid_target=np.array([s[-2] for s in seqs], dtype=np.int64),
        test_history=[s[:-1] for s in seqs],
        test_target=np.array([s[-1] for s in seqs], dtype=np.int64),
    )


def training_windows(train: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each training sequence, from its end, into windows of at most max_len + 1 items:
    every item of a long history is a training target once."""
    windows = []
    for seq in train:
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1) : end])
    return windows


def cut_share(train: list[np.ndarray], max_len: int) -> float:
    """Share of the training targets in windows cut from before a user's most recent
    max_len + 1 items (training_windows): 0 when every history fits one window."""
    lengths = np.array([len(s) for s in train], dtype=np.int64)
    targets = np.clip(lengths - 1, 0, None).sum()
    in_last = np.clip(np.minimum(lengths, max_len + 1) - 1, 0, None).sum()
    return float(1 - in_last / targets) if targets else 0.0


def pad_left(seqs: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-pad the last max_len items of each sequence to the longest one: (B, T)."""
    T = max(1, min(max_len, max(len(s) for s in seqs)))
    out = np.zeros((len(seqs), T), dtype=np.int64)
    for row, s in enumerate(seqs):
        s = s[-T:]
        if len(s):
            out[row, -len(s) :] = s
    return torch.from_numpy(out)


def popularity(train: list[np.ndarray], num_items: int) -> np.ndarray:
    """Training interaction count of every model id (index 0, padding, counts 0)."""
    return np.bincount(np.concatenate([np.zeros(0, np.int64), *train]), minlength=num_items + 1)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of indices whose sequences have similar lengths, each about as large as
    `batch_size` sequences of the mean length once padded, so that every batch holds about the
    same number of targets (a target weighs the same in a short batch as in a long one):
    shuffle, sort each pool of `pool` batches by length, cut it, shuffle the batches."""
    order = rng.permutation(len(lengths))
    budget = batch_size * float(lengths.mean())  # padded items per batch
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        # sorted ascending, a batch from i to j - 1 pads to lengths[chunk[j - 1]] items each
        first = 0
        for i in range(1, len(chunk) + 1):
            if i == len(chunk) or i > first and (i + 1 - first) * lengths[chunk[i]] > budget:
                batches.append(chunk[first:i])
                first = i
    return [batches[i] for i in rng.permutation(len(batches))]
