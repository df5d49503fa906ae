"""Train the sequential model with early stopping on validation NDCG@10: one process, or
several under `torchrun` (DDP; NCCL on GPUs, gloo on CPUs), and optionally warm-started from
an earlier model whose catalog has since grown."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.evaluate import evaluate_targets, model_scorer
from training.model import ModelConfig, SeqRec, TextTable
from training.sequences import Split, length_batches, pad_left, popularity, training_windows

log = logging.getLogger(__name__)
# the text match's weights tried on validation once training stops (in logit units)
TEXT_MATCH_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@dataclass(frozen=True)
class TrainConfig:
    """How the model is fitted; built from `training.params.RetrainParams`."""

    epochs: int
    batch_size: int  # global batch: split across processes under torchrun
    lr: float
    weight_decay: float
    patience: int  # epochs without a better validation NDCG@10 before stopping
    lr_decay: float  # factor of the learning rate after lr_patience epochs without a better one
    lr_patience: int
    dropout_warmup: int  # optimizer steps over which dropout rises from 0 to the model's rate
    seed: int
    progress: bool = True  # a progress bar per epoch (first process only)


@dataclass
class TrainResult:
    model: SeqRec
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    valid_ndcg_at_10: float = 0.0  # of the model as kept: its best epoch, its text match fitted
    text_match_weight: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_distributed() -> tuple[int, int]:
    """Join the process group when started by torchrun: (rank, world size); (0, 1) alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def keep_freed_memory() -> None:
    """On glibc, keep the memory of freed tensors in the process for the next ones. glibc
    maps each large block (over 32 MiB at most) from the kernel and unmaps it when freed, so
    the (targets x catalog) matrices of every training step were page-faulted in afresh:
    30-45% of a CPU epoch (docs/benchmarks.md, "Epoch time"). The process then holds on to
    its peak memory until it exits, a higher peak where those matrices are large (twice for
    a full softmax over 10^5 items: "Large catalogs"). Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_MAX, 0)  # every block from the heap, which reuses what is freed
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and gives back only a free top over 2 GiB


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def grown_state(previous: SeqRec, previous_items: np.ndarray, cfg: ModelConfig,
                items: np.ndarray) -> dict[str, torch.Tensor]:
    """Weights of `previous` for the catalog `items` (catalog ids in model-id order; the
    previous model's were `previous_items`): a known item keeps its learned row; a new one
    starts from its text (zero ID row) or, in an ID-only model, from a fresh random row."""
    if previous.cfg != ModelConfig(**{**vars(cfg), "num_items": previous.cfg.num_items}):
        raise ValueError("warm start needs the same model settings apart from the catalog")
    state = {k: v.detach().clone() for k, v in previous.state_dict().items()}
    if cfg.item_repr == "text":
        return state
    old = previous.item_id.weight.detach()  # (previous n + 1, C)
    rows = torch.zeros(len(items) + 1, cfg.hidden)  # row 0 is padding
    if cfg.item_repr == "id":
        rows[1:].normal_(std=0.02)
    position = {int(item): i + 1 for i, item in enumerate(previous_items)}
    known = [(new + 1, position[int(item)]) for new, item in enumerate(items)
             if int(item) in position]
    if known:
        new_rows, old_rows = map(torch.tensor, zip(*known, strict=True))
        rows[new_rows] = old[old_rows]
    state["item_id.weight"] = rows
    return state


def grown_model(previous: SeqRec, previous_items: np.ndarray, items: np.ndarray,
                text: TextTable | None) -> SeqRec:
    """`previous` over the catalog `items` (its own was `previous_items`), as `grown_state`
    grows it; `text` the LLM embeddings of `items` (None for an ID-only model)."""
    cfg = dataclasses.replace(previous.cfg, num_items=len(items))
    model = SeqRec(cfg, text)
    model.load_state_dict(grown_state(previous, previous_items, cfg, items))
    return model


def train_model(
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    text: TextTable | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    probe: Callable[[SeqRec], dict[str, float]] | None = None,
) -> TrainResult:
    """Fit on `split.train`; keep the weights of the epoch with the best validation NDCG@10.
    Batches group windows of similar length, so little of a batch is padding. `probe`, for
    benchmarks: more figures of the model after each epoch for its row, untimed and never
    part of a choice (a curve of test metrics)."""
    seed_everything(train_cfg.seed)
    rank, world = init_distributed()
    dev = device()
    if dev.type == "cpu":
        keep_freed_memory()
    model = SeqRec(model_cfg, text).to(dev)
    if init_state is not None:
        model.load_state_dict(init_state)
    if model_cfg.text_match_window:  # fitted once training stops, even on a warm start
        model.set_text_match(0.0)
    if model_cfg.loss == "sampled":
        counts = torch.from_numpy(popularity(split.train, model_cfg.num_items)).double()
        model.target_share.copy_(counts / counts.sum().clamp(min=1))
    net = DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr,
                            weight_decay=train_cfg.weight_decay)
    # once the validation curve flattens, smaller steps settle where larger ones jitter
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=train_cfg.lr_decay, patience=train_cfg.lr_patience - 1,
        threshold=0.0) if train_cfg.lr_decay < 1 else None
    windows = training_windows(split.train, model_cfg.max_len)
    lengths = np.array([len(w) for w in windows])
    rng = np.random.default_rng(train_cfg.seed)  # the same batches in every process
    result = TrainResult(model=model, best_epoch=0)
    best_ndcg, best_state = -1.0, None
    updates = 0  # optimizer steps taken
    for epoch in range(1, train_cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        totals = torch.zeros(2, dtype=torch.float64)  # summed loss, targets
        batches = [b for b in length_batches(lengths, train_cfg.batch_size, rng) if len(b) >= world]
        for ids in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                        disable=rank > 0 or not train_cfg.progress):
            batch = pad_left([windows[i] for i in ids[rank::world]],
                             model_cfg.max_len + 1).to(dev)  # (B, T + 1)
            if train_cfg.dropout_warmup and updates <= train_cfg.dropout_warmup:
                model.set_dropout(model_cfg.dropout * updates / train_cfg.dropout_warmup)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                losses = net(batch[:, :-1], batch[:, 1:])  # (M,)
            step = torch.stack([losses.sum().detach().double().cpu(),
                                torch.tensor(len(losses), dtype=torch.float64)])
            if world > 1:
                dist.all_reduce(step)
            # DDP averages gradients over processes: scale so they are those of the global mean
            loss = losses.sum() * world / max(float(step[1]), 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            updates += 1
            totals += step
        valid = evaluate_targets(model_scorer(model, dev), split.valid_history, split.valid_target)
        row = {"epoch": epoch, "loss": float(totals[0] / totals[1].clamp(min=1)),
               "lr": opt.param_groups[0]["lr"],
               "epoch_seconds": time.perf_counter() - started,
               **{f"valid_{k}": v for k, v in valid.items()}}
        if probe:
            row |= probe(model)
        result.history.append(row)
        log.info("epoch %d loss %.4f valid ndcg@10 %.4f (%.1fs)", epoch, row["loss"],
                 valid["ndcg_at_10"], row["epoch_seconds"])
        if on_epoch:
            on_epoch(row)
        if schedule:
            schedule.step(valid["ndcg_at_10"])
        if valid["ndcg_at_10"] > best_ndcg:
            best_ndcg, result.best_epoch = valid["ndcg_at_10"], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= train_cfg.patience:
            break
    model.load_state_dict(best_state)
    model.set_dropout(model_cfg.dropout)
    model.eval()
    result.valid_ndcg_at_10 = best_ndcg
    if model_cfg.text_match_window:
        result.text_match_weight, result.valid_ndcg_at_10 = fit_text_match(model, split, dev)
        log.info("text match weight %g: valid ndcg@10 %.4f", result.text_match_weight,
                 result.valid_ndcg_at_10)
    return result


@torch.no_grad()
def fit_text_match(model: SeqRec, split: Split, dev: torch.device) -> tuple[float, float]:
    """Set the weight of the model's text match to the one of TEXT_MATCH_WEIGHTS with the best
    validation NDCG@10 (the smallest of equals; 0 leaves the model as trained): (weight, its
    NDCG@10). Every process computes the same."""
    score = model_scorer(model, dev)
    ndcg = {}
    for weight in TEXT_MATCH_WEIGHTS:
        model.set_text_match(weight)
        ndcg[weight] = evaluate_targets(score, split.valid_history,
                                        split.valid_target)["ndcg_at_10"]
    chosen = max(ndcg, key=ndcg.get)
    model.set_text_match(chosen)
    return chosen, ndcg[chosen]
