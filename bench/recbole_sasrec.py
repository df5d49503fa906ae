"""Baseline: RecBole 1.2.1 SASRec (full-softmax CE) on Amazon Beauty, timed epoch by epoch.

Runs inside bench/.recbole-venv (create it with ``bash bench/recbole_venv.sh``); it imports
nothing from this project. It converts the S3-Rec ``Beauty.txt`` (one line per user:
``user item item ...`` in chronological order) into a RecBole atomic ``beauty.inter`` file whose
timestamp is the position in the sequence, trains SASRec with RecBole's own ``Trainer`` (its early
stopping and best-checkpoint logic unchanged), and records per-epoch training and validation wall
time, valid NDCG@10, the best epoch, the seconds to reach it and the test metrics of the best
checkpoint. All RecBole output (checkpoints, logs, tensorboard) stays in a temporary directory.

It avoids ``recbole.quick_start``, which imports an old ``ray`` that does not work here.

Example::

    bench/.recbole-venv/bin/python bench/recbole_sasrec.py \
        --data ../shared/data/amazon-beauty-s3rec/Beauty.txt --out bench/results/recbole-sasrec.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

DATASET = "beauty"
TOPK = [10, 20, 50]
SEEN_ITEMS_NOTE = (
    "RecBole's FullSortEvalDataLoader returns history_index=None for sequential models, so "
    "Trainer._full_sort_batch_eval masks only the padding item 0: items already in the user's "
    "sequence stay rankable (only general, non-sequential models get history masking)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="path to Beauty.txt")
    parser.add_argument("--out", type=Path, required=True, help="JSON result path")
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs")
    parser.add_argument("--patience", type=int, default=10, help="RecBole stopping_step")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-users", type=int, default=None, help="first N users only (smoke)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return parser.parse_args(argv)


def read_sequences(path: Path, max_users: int | None) -> list[tuple[str, list[str]]]:
    """Read ``user item item ...`` lines into (user, items) pairs, keeping the file order."""
    sequences: list[tuple[str, list[str]]] = []
    with path.open() as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 2:
                continue
            sequences.append((fields[0], fields[1:]))
            if max_users is not None and len(sequences) >= max_users:
                break
    return sequences


def write_atomic(sequences: list[tuple[str, list[str]]], data_root: Path) -> Path:
    """Write ``<data_root>/beauty/beauty.inter``; the timestamp is the position in the sequence."""
    folder = data_root / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DATASET}.inter"
    with path.open("w") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in sequences:
            for position, item in enumerate(items):
                handle.write(f"{user}\t{item}\t{position}\n")
    return path


def build_config(args: argparse.Namespace, data_root: Path, work_dir: Path) -> Config:
    """Build the RecBole Config for SASRec with CE loss and leave-one-out full ranking."""
    config_dict: dict[str, Any] = {
        "data_path": str(data_root),
        "checkpoint_dir": str(work_dir / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "val_interval": None,
        "hidden_size": args.hidden,
        "inner_size": 4 * args.hidden,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "eval_step": 1,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "mode": "full",
            "group_by": "user",
        },
        "metrics": ["Recall", "NDCG"],
        "topk": TOPK,
        "valid_metric": "NDCG@10",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "log_wandb": False,
        "state": "WARNING",
    }
    # Config also parses ``--key=value`` from sys.argv with top priority: hide this script's args.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return Config(model="SASRec", dataset=DATASET, config_dict=config_dict)
    finally:
        sys.argv = argv


class TimedTrainer(Trainer):
    """RecBole's Trainer, unchanged, that also records wall time and valid score per epoch."""

    def __init__(self, config: Config, model: torch.nn.Module) -> None:
        super().__init__(config, model)
        self.records: list[dict[str, Any]] = []
        self.best_epoch_idx: int | None = None

    def _train_epoch(
        self, train_data: Any, epoch_idx: int, loss_func: Any = None, show_progress: bool = False
    ) -> Any:
        """Time one training epoch and open its record."""
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        seconds = time.perf_counter() - start
        total = sum(loss) if isinstance(loss, tuple) else loss
        self.records.append(
            {"epoch": epoch_idx + 1, "train_seconds": seconds, "train_loss": float(total)}
        )
        return loss

    def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> tuple[float, dict]:
        """Time one validation pass and complete the current epoch's record."""
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress)
        seconds = time.perf_counter() - start
        if self.records:
            self.records[-1]["valid_seconds"] = seconds
            self.records[-1]["valid_ndcg_at_10"] = float(score)
            self.records[-1]["valid"] = metric_dict(result)
        return score, result

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """Remember the epoch RecBole saves as best (its early stopping updates on >=)."""
        self.best_epoch_idx = epoch
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)


def metric_dict(result: dict[str, float] | None) -> dict[str, float]:
    """Turn RecBole's {'ndcg@10': x} result into {'ndcg_at_10': x}."""
    return {key.replace("@", "_at_"): float(value) for key, value in (result or {}).items()}


def summarize(trainer: TimedTrainer) -> dict[str, Any]:
    """Best epoch (1-based), cumulative train+valid seconds to it and the mean epoch time."""
    records = trainer.records
    best_idx = trainer.best_epoch_idx
    best_epoch = None if best_idx is None else best_idx + 1
    through_best = [r for r in records if best_epoch is not None and r["epoch"] <= best_epoch]
    epoch_seconds = [r["train_seconds"] + r.get("valid_seconds", 0.0) for r in records]
    return {
        "best_epoch": best_epoch,
        "seconds_to_best": sum(
            r["train_seconds"] + r.get("valid_seconds", 0.0) for r in through_best
        ),
        "mean_epoch_seconds": sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None,
        "mean_train_seconds": (
            sum(r["train_seconds"] for r in records) / len(records) if records else None
        ),
        "best_valid": next((r.get("valid") for r in records if r["epoch"] == best_epoch), None),
    }


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings as they go into the JSON."""
    return {
        "model": "SASRec",
        "loss": "CE (full softmax)",
        "hidden": args.hidden,
        "inner_size": 4 * args.hidden,
        "layers": args.layers,
        "heads": args.heads,
        "dropout": args.dropout,
        "max_len": args.max_len,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "max_epochs": args.epochs,
        "patience": args.patience,
        "max_users": args.max_users,
        "split": "leave-one-out (RecBole LS valid_and_test, order TO), full ranking",
        "training_samples": "every prefix of the training part of each sequence (RecBole default)",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the data, train and test SASRec; return the result document."""
    # RecBole's checkpoints pickle its Config; torch>=2.6 loads with weights_only=True by default,
    # which refuses it. The checkpoint is our own temporary file, so full unpickling is safe.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    sequences = read_sequences(args.data, args.max_users)
    with tempfile.TemporaryDirectory(prefix="recbole-sasrec-") as tmp:
        work_dir = Path(tmp)
        write_atomic(sequences, work_dir / "data")
        previous_cwd = Path.cwd()
        os.chdir(work_dir)  # RecBole writes ./log_tensorboard relative to the working directory
        try:
            result = train_and_test(args, work_dir)
        finally:
            os.chdir(previous_cwd)
    result["settings"] = settings_of(args)
    return result


def train_and_test(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Build dataset, model and trainer as quick_start does, fit, then test the best checkpoint."""
    config = build_config(args, work_dir / "data", work_dir)
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prepare_seconds = time.perf_counter() - start
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = TimedTrainer(config, model)
    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_seconds = time.perf_counter() - start
    summary = summarize(trainer)
    return {
        "library": "recbole 1.2.1",
        "epochs": trainer.records,
        **summary,
        "test": metric_dict(test),
        "users": dataset.user_num - 1,
        "items": dataset.item_num - 1,
        "interactions": len(dataset.inter_feat),
        "parameters": sum(p.numel() for p in model.parameters()),
        "prepare_seconds": prepare_seconds,
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
        "device": str(config["device"]),
        "seen_items_filtered": False,
        "seen_items_note": SEEN_ITEMS_NOTE,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the baseline, write the JSON to --out and print it."""
    args = parse_args(argv)
    args.data = args.data.resolve()
    args.out = args.out.resolve()
    result = {"library": "recbole 1.2.1", **run(args)}
    ordered = {"library": result.pop("library"), "settings": result.pop("settings"), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ordered, indent=2)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
