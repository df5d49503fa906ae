"""Accuracy and training cost of the sequential model on the published data sets, measured the
way the papers do: leave-one-out, full ranking over all items, Recall/NDCG@10/20/50 and MRR on
test, with and without filtering the items of the history; the checkpoint is the epoch with the
best validation NDCG@10. The popularity baseline is computed in the same run.

    .venv/bin/python bench/quality.py --dataset beauty --item-repr id --seeds 42
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from features.embeddings import embed_items
from features.encoder import EncoderConfig, ItemEncoder
from llmseqrec.datasets import read_recbole_split, read_sequences
from training.evaluate import evaluate, model_scorer, popularity_scorer
from training.model import ModelConfig, TextTable
from training.sequences import ItemIndex, leave_one_out, popularity, user_sequences
from training.train import TrainConfig, device, train_model

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KS = (10, 20, 50)


def load(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if dataset == "beauty":
        return read_sequences(DATA / "amazon-beauty-s3rec" / "Beauty.txt"), None
    if dataset == "scientific":
        return read_recbole_split(DATA / "amazon2018-scientific", "Scientific")
    raise ValueError(f"unknown data set {dataset!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["beauty", "scientific"], required=True)
    parser.add_argument("--item-repr", nargs="+", default=["id"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    interactions, items = load(args.dataset)
    index = ItemIndex.from_items(interactions["item_id"] if items is None else items["item_id"])
    split = leave_one_out(user_sequences(interactions, index))
    counts = popularity(split.train, len(index))
    text, version = None, ""
    if items is not None:
        embedded = embed_items(items.set_index("item_id").loc[index.item_ids].reset_index(),
                               ItemEncoder(EncoderConfig(max_length=256)), ("text",),
                               RESULTS.parent / ".cache")
        text, version = torch.from_numpy(embedded.vectors), embedded.version
    runs = [{"model": "popularity", **{
        f"{'filtered' if seen else 'unfiltered'}_{k}": v
        for seen in (True, False)
        for k, v in evaluate(popularity_scorer(counts), split.test_history, split.test_target,
                             KS, exclude_seen=seen).items()}}]
    for item_repr in args.item_repr:
        for seed in args.seeds:
            cfg = ModelConfig(num_items=len(index), max_len=50, hidden=args.hidden,
                              layers=args.layers, dropout=args.dropout, item_repr=item_repr,
                              text_dim=0 if item_repr == "id" else text.shape[1],
                              embedding_version="" if item_repr == "id" else version)
            train_cfg = TrainConfig(epochs=args.epochs, patience=args.patience, lr=args.lr,
                                    batch_size=args.batch_size, seed=seed)
            started = time.perf_counter()
            result = train_model(split, cfg, train_cfg,
                                 None if item_repr == "id" else TextTable(text, version))
            seconds = time.perf_counter() - started
            scorer = model_scorer(result.model, device())
            row = {"model": item_repr, "seed": seed, "best_epoch": result.best_epoch,
                   "epochs_run": len(result.history),
                   "mean_epoch_seconds": float(np.mean([r["epoch_seconds"]
                                                        for r in result.history])),
                   "seconds_to_best": float(sum(r["epoch_seconds"]
                                                for r in result.history[:result.best_epoch])),
                   "train_seconds": seconds,
                   "valid_ndcg_at_10": max(r["valid_ndcg_at_10"] for r in result.history)}
            for seen in (True, False):
                metrics = evaluate(scorer, split.test_history, split.test_target, KS,
                                   exclude_seen=seen)
                row |= {f"{'filtered' if seen else 'unfiltered'}_{k}": v
                        for k, v in metrics.items()}
            print(json.dumps(row), flush=True)
            runs.append(row)
    result = {
        "benchmark": "quality", "dataset": args.dataset,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"torch {torch.__version__}, device {device()}",
        "users": len(split.test_target), "items": len(index),
        "settings": vars(args), "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"quality-{args.dataset}-{'-'.join(args.item_repr)}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
