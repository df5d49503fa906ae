"""Train a tiny model on a synthetic split and write its loss curve as JSON: run alone or by
`torchrun --nproc_per_node 2` (DDP over gloo) from tests/test_train.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch.distributed as dist
from configs import model_config, train_config

from training.sequences import leave_one_out
from training.train import train_model


def synthetic_split(users: int = 40, items: int = 30, seed: int = 0):
    """Users walk through the catalog in steps of 1 or 2, so the next item is learnable."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        start, length = rng.integers(1, items + 1), rng.integers(4, 12)
        steps = rng.integers(1, 3, size=length)
        seqs.append((start + np.cumsum(steps)) % items + 1)
    return leave_one_out(seqs)


def curve(epochs: int = 3) -> list[float]:
    cfg = model_config(num_items=30, max_len=8, hidden=16, layers=1, heads=2, dropout=0.0)
    result = train_model(synthetic_split(), cfg, train_config(epochs=epochs, batch_size=16,
                                                             patience=epochs))
    return [row["loss"] for row in result.history]


if __name__ == "__main__":
    losses = curve()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(losses, f)
    dist.destroy_process_group()
