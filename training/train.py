"""Train the sequential model with full-softmax cross-entropy and early stopping on validation."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from training.evaluate import evaluate, model_scorer
from training.model import ModelConfig, SeqRec, TextTable
from training.sequences import Split, pad_left, training_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    seed: int = 42


@dataclass
class TrainResult:
    model: SeqRec
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_model(
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    text: TextTable | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fit on `split.train`; keep the weights of the epoch with the best validation NDCG@10."""
    seed_everything(train_cfg.seed)
    dev = device()
    model = SeqRec(model_cfg, text).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr,
                            weight_decay=train_cfg.weight_decay)
    windows = training_windows(split.train, model_cfg.max_len)
    rng = np.random.default_rng(train_cfg.seed)
    result = TrainResult(model=model, best_epoch=0)
    best_ndcg, best_state = -1.0, None
    for epoch in range(1, train_cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        losses = []
        order = rng.permutation(len(windows))
        for start in range(0, len(order), train_cfg.batch_size):
            batch = pad_left([windows[i] for i in order[start : start + train_cfg.batch_size]],
                             model_cfg.max_len + 1).to(dev)  # (B, T + 1)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = model(batch[:, :-1], batch[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        valid = evaluate(model_scorer(model, dev), split.valid_history, split.valid_target)
        row = {"epoch": epoch, "loss": float(np.mean(losses)),
               "epoch_seconds": time.perf_counter() - started,
               **{f"valid_{k}": v for k, v in valid.items()}}
        result.history.append(row)
        log.info("epoch %d loss %.4f valid ndcg@10 %.4f (%.1fs)", epoch, row["loss"],
                 valid["ndcg_at_10"], row["epoch_seconds"])
        if on_epoch:
            on_epoch(row)
        if valid["ndcg_at_10"] > best_ndcg:
            best_ndcg, result.best_epoch = valid["ndcg_at_10"], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= train_cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
