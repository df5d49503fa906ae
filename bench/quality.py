"""Accuracy and training cost of the sequential model on the published data sets, measured the
way the papers do: leave-one-out, full ranking over all items, Recall/NDCG@10/20/50 and MRR on
test, with and without filtering the items of the history, overall and for head, tail and cold
target items; the checkpoint is the epoch with the best validation NDCG@10. The popularity
baseline and every requested item representation are computed in the same run. RecBole's
SASRec, the baseline users compare with, runs in its own environment: bench/recbole_sasrec.py.

    .venv/bin/python bench/quality.py --dataset scientific --item-repr id text hybrid \\
        --seeds 1 2 3   # every RetrainParams field is a flag too: --dropout 0.5, --lr 1e-3
    .venv/bin/torchrun --nproc_per_node 2 bench/quality.py --dataset beauty   # DDP
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import time
import types
import typing
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from features.embeddings import embed_catalog
from features.encoder import EncoderConfig, ItemEncoder
from features.encoder_tuning import TuningConfig, tune_on_interactions
from features.item_text import DEFAULT_FIELDS
from ingestion.published import load_sequences, read_recbole_split, read_sequences
from ingestion.readers import load_movielens
from training.model import TextTable
from training.params import RetrainParams
from training.retrain import compare, dataset, fit
from training.sequences import ItemIndex, Split
from training.train import device, init_distributed

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DATA = BENCH.parents[1] / "shared" / "data"
BEAUTY = DATA / "amazon-beauty-s3rec" / "Beauty.txt"
BEAUTY_TEXT = BEAUTY.with_name("Beauty.item_text.tsv")  # title and categories, same item ids
SUMMARY = ("test_ndcg_at_10", "test_recall_at_10", "test_unfiltered_ndcg_at_10",
           "test_unfiltered_recall_at_10", "test_unfiltered_ndcg_at_50",
           "test_unfiltered_recall_at_50", "test_tail_ndcg_at_10", "test_cold_ndcg_at_10",
           "test_unfiltered_tail_ndcg_at_10", "test_unfiltered_cold_ndcg_at_10",
           "best_epoch", "mean_epoch_seconds", "seconds_to_best")


def load(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame | None, tuple[str, ...]]:
    """Interactions (typed), items with text (None for ID-only data) and their text fields."""
    if dataset == "beauty":
        items = load_sequences(BEAUTY, BEAUTY_TEXT).items.astype({"item_id": "int64"})
        return read_sequences(BEAUTY), items, ("title", "genres")
    if dataset == "scientific":
        interactions, items = read_recbole_split(DATA / "amazon2018-scientific", "Scientific")
        return interactions, items, ("text",)
    if dataset == "ml-latest-small":
        raw = load_movielens()
        interactions = raw.interactions.astype({"user_id": "int64", "item_id": "int64",
                                                "timestamp": "int64"})
        return interactions, raw.items.astype({"item_id": "int64"}), DEFAULT_FIELDS
    raise ValueError(f"unknown data set {dataset!r}")


def text_table(items: pd.DataFrame, index: ItemIndex, fields: tuple[str, ...],
               encoder: str = "") -> TextTable:
    """The `encoder`'s embedding of each item's text (default the bundled MiniLM), cached in
    bench/.cache."""
    ordered = items.set_index("item_id").loc[index.item_ids].reset_index()
    embedded = embed_catalog(ordered, ItemEncoder(EncoderConfig(model=encoder, max_length=256)),
                             fields, BENCH / ".cache")
    return TextTable(torch.from_numpy(embedded.vectors), embedded.version)


def tuned_encoder(args: argparse.Namespace, interactions: pd.DataFrame, items: pd.DataFrame,
                  fields: tuple[str, ...]) -> str:
    """The encoder the flags name, tuned on `interactions` for --tune-steps steps first (when
    given): its directory, in bench/.cache/encoders."""
    if not args.tune_steps:
        return args.encoder
    return str(tune_on_interactions(ItemEncoder(EncoderConfig(model=args.encoder)), interactions,
                                    items, fields, TuningConfig(steps=args.tune_steps),
                                    BENCH / ".cache" / "encoders"))


def train_and_test(interactions: pd.DataFrame, items, text: TextTable | None,
                   params: RetrainParams) -> tuple[dict, dict]:
    """One fit and its test numbers; and the popularity baseline's on the same split."""
    fitted = fit(interactions, items, text, params, progress=False)
    compared = compare(fitted, None, fitted.split)
    result = fitted.result
    epoch_seconds = [r["epoch_seconds"] for r in result.history]
    return {"model": params.item_repr, "loss": params.loss, "seed": params.seed,
            "embedding_version": fitted.model.cfg.embedding_version,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "mean_epoch_seconds": float(np.mean(epoch_seconds)),
            "seconds_to_best": float(sum(epoch_seconds[: result.best_epoch])),
            "valid_ndcg_at_10": result.valid_ndcg_at_10,
            "text_match_weight": result.text_match_weight,
            "valid_curve": [round(r["valid_ndcg_at_10"], 5) for r in result.history],
            "epoch_seconds": [round(t, 2) for t in epoch_seconds],
            "params": params.resolved(fitted.split.train).model_dump(),
            **compared["model"]}, compared["popularity"]


def summarize(runs: list[dict], keys: tuple[str, ...] = SUMMARY
              ) -> dict[str, dict[str, list[float]]]:
    """Mean and standard deviation over seeds of the headline figures `keys`, per model."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == model]
        out[model] = {k: [statistics.fmean(r[k] for r in rows),
                          statistics.pstdev(r[k] for r in rows)]
                      for k in keys if all(k in r for r in rows)}
    return out


def add_params_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every RetrainParams field but item_repr and seed, defaulting to its default."""
    settings = parser.add_argument_group("retrain settings (RetrainParams; default its own)")
    for name, field in RetrainParams.model_fields.items():
        if name in ("item_repr", "seed"):
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            settings.add_argument(flag, action=argparse.BooleanOptionalAction,
                                  default=field.default, help=field.description)
        else:
            settings.add_argument(flag, **value_type(field.annotation), default=field.default,
                                  help=field.description)


def value_type(annotation: object) -> dict:
    """argparse's `type` (and `choices`) for a field annotated `annotation`: int, float,
    a Literal, or one of them or None (None: the default by representation)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return {"type": str, "choices": typing.get_args(annotation)}
    return {"type": annotation}


def params_from(args: argparse.Namespace) -> RetrainParams:
    """The settings the flags of `add_params_flags` name; never warm-started."""
    return RetrainParams(**{k: v for k, v in vars(args).items()
                            if k in RetrainParams.model_fields and k != "item_repr"}
                         | {"warm_start": False})


def machine(world: int = 1) -> str:
    return (f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
            f"torch {torch.__version__}, device {device()}, {world} process(es), "
            f"{torch.get_num_threads()} thread(s) each")


def benchmark_arguments(item_reprs: list[str]) -> argparse.ArgumentParser:
    """The flags of a model benchmark: data set, models (default `item_reprs`), seeds,
    threads, results tag, encoder, and every RetrainParams field."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=["beauty", "scientific", "ml-latest-small"],
                        required=True)
    parser.add_argument("--item-repr", nargs="+", default=item_reprs,
                        choices=["id", "text", "hybrid"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--encoder", default="", help="text encoder: minilm (default), mpnet, "
                                                      "a hub id or a local directory")
    parser.add_argument("--tune-steps", type=int, default=0,
                        help="tune the encoder on the training sequences' next-item pairs for "
                             "this many steps first (features.encoder_tuning; 0: frozen)")
    add_params_flags(parser)
    return parser


@dataclasses.dataclass(frozen=True)
class Prepared:
    interactions: pd.DataFrame
    items: pd.DataFrame | None  # the catalog with its text (None for ID-only data)
    fields: tuple[str, ...]  # the text fields of `items`
    catalog: pd.Series  # catalog item ids
    index: ItemIndex
    split: Split
    text: TextTable | None  # None when no model asked for reads text
    base: RetrainParams

    def text_from(self, args: argparse.Namespace, interactions: pd.DataFrame
                  ) -> TextTable | None:
        """The text table of the whole catalog, its encoder tuned on `interactions` (those the
        models are fitted on) when --tune-steps is given; None when no model reads text."""
        if self.items is None or set(args.item_repr) == {"id"}:
            return None
        return text_table(self.items, self.index, self.fields,
                          tuned_encoder(args, interactions, self.items, self.fields))


def prepare(args: argparse.Namespace, tune: bool = True) -> Prepared:
    """Logging and threads as the flags say; the data set, its split, its text table (with
    `tune`, the encoder tuned on every interaction's training sequences first, when the flags
    ask for it: the benchmark that fits on a subset tunes on that subset itself)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    interactions, items, fields = load(args.dataset)
    catalog = interactions["item_id"] if items is None else items["item_id"]
    index, split = dataset(interactions, catalog)
    data = Prepared(interactions, items, fields, catalog, index, split, None, params_from(args))
    if args.tune_steps and not tune:
        return data
    return dataclasses.replace(data, text=data.text_from(args, interactions))


def main() -> None:
    args = benchmark_arguments(["id"]).parse_args()
    data = prepare(args)
    rank, world = init_distributed()  # under torchrun: DDP, results from the first process
    runs = []
    result = {
        "benchmark": "quality", "dataset": args.dataset,
        "machine": machine(world),
        "protocol": "leave-one-out, full ranking over all items; test_* exclude the items of "
                    "the history, test_unfiltered_* do not; slices by the target's training "
                    "popularity (head: top 20% of items, cold: <= 4 training interactions)",
        "users": len(data.split.test_target), "items": len(data.index),
        "settings": vars(args) | {"params": data.base.model_dump()},
    }
    name = f"quality-{args.dataset}-{'-'.join(args.item_repr)}-{args.loss}{args.tag}.json"
    started = time.perf_counter()
    for item_repr in args.item_repr:
        for seed in args.seeds:
            params = data.base.model_copy(update={"item_repr": item_repr, "seed": seed})
            run, baseline = train_and_test(data.interactions, data.catalog, data.text, params)
            runs += [run] if runs else [{"model": "popularity", **baseline}, run]
            if rank == 0:  # written after every run: a long benchmark keeps what it measured
                print(json.dumps({k: v for k, v in runs[-1].items() if k in SUMMARY}),
                      flush=True)
                result |= {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "seconds": time.perf_counter() - started,
                           "summary": summarize(runs[1:]), "runs": runs}
                RESULTS.mkdir(exist_ok=True)
                (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    if rank == 0:
        print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
