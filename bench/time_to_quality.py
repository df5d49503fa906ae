"""Time to quality against RecBole 1.2.1, in one run: RecBole's SASRec (full-softmax CE, in its
own environment: bench/recbole_sasrec.py) and our model with `RetrainParams`' defaults (IDs
only, as RecBole's) train side by side on Beauty, the same number of threads each.

After every epoch ours also ranks the test targets, seen items not filtered as RecBole ranks
them; that curve is for this benchmark only and nothing is chosen on it (ours keeps its best
validation epoch as always). The figure: seconds for ours to first reach the test NDCG@10 of
RecBole's best checkpoint, against RecBole's seconds to that checkpoint; seconds are training
plus validation on both sides (ours' test ranking is not counted).

    bash bench/recbole_venv.sh && .venv/bin/python bench/time_to_quality.py --threads 1
    .venv/bin/python bench/time_to_quality.py --max-users 300 --recbole-epochs 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from quality import BEAUTY, BENCH, RESULTS, add_params_flags, machine, params_from

from ingestion.published import read_sequences
from training.evaluate import evaluate_targets, model_scorer
from training.model import SeqRec
from training.retrain import dataset, fit
from training.train import device

RECBOLE_PYTHON = BENCH / ".recbole-venv" / "bin" / "python"


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    parser.add_argument("--max-users", type=int, default=None,
                        help="the first N users of Beauty.txt only, both sides (smoke)")
    parser.add_argument("--recbole-epochs", type=int, default=200)
    parser.add_argument("--recbole-patience", type=int, default=10)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    add_params_flags(parser)
    return parser


def start_recbole(args: argparse.Namespace, out: Path, log: Path) -> subprocess.Popen:
    if not RECBOLE_PYTHON.exists():
        sys.exit(f"no RecBole environment at {RECBOLE_PYTHON}: run bash bench/recbole_venv.sh")
    command = [str(RECBOLE_PYTHON), str(BENCH / "recbole_sasrec.py"), "--data", str(BEAUTY),
               "--out", str(out), "--threads", str(args.threads),
               "--epochs", str(args.recbole_epochs), "--patience", str(args.recbole_patience)]
    if args.max_users:
        command += ["--max-users", str(args.max_users)]
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def seconds_to_reach(history: list[dict], target: float) -> tuple[int, float] | None:
    """The first epoch whose test NDCG@10 reaches `target`, and the seconds through it."""
    spent = np.cumsum([row["epoch_seconds"] for row in history])
    for row, seconds in zip(history, spent, strict=True):
        if row["test_unfiltered_ndcg_at_10"] >= target:
            return int(row["epoch"]), float(seconds)
    return None


def main() -> None:
    args = arguments().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    interactions = read_sequences(BEAUTY)
    if args.max_users:  # the file's first users, as bench/recbole_sasrec.py reads them
        first = interactions["user_id"].drop_duplicates().head(args.max_users)
        interactions = interactions[interactions["user_id"].isin(first)]
    catalog = interactions["item_id"].drop_duplicates()
    _, split = dataset(interactions, catalog)
    params = params_from(args).model_copy(update={"item_repr": "id"})

    def test_curve(model: SeqRec) -> dict[str, float]:
        ranked = evaluate_targets(model_scorer(model, device()), split.test_history,
                                  split.test_target, exclude_seen=False)
        return {"test_unfiltered_ndcg_at_10": ranked["ndcg_at_10"]}

    with tempfile.TemporaryDirectory(prefix="time-to-quality-") as tmp:
        recbole_out, recbole_log = Path(tmp) / "recbole.json", Path(tmp) / "recbole.log"
        started = time.perf_counter()
        recbole = start_recbole(args, recbole_out, recbole_log)
        fitted = fit(interactions, catalog, None, params, progress=False, probe=test_curve)
        ours_done = time.perf_counter() - started
        if recbole.wait() != 0:
            sys.exit(f"RecBole failed:\n{recbole_log.read_text()[-3000:]}")
        theirs = json.loads(recbole_out.read_text())
    history = fitted.result.history
    target = theirs["test"]["ndcg_at_10"]
    reached = seconds_to_reach(history, target)
    best = history[fitted.result.best_epoch - 1]
    result = {
        "benchmark": "time-to-quality", "dataset": "beauty",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "protocol": "leave-one-out, full ranking, seen items not filtered (RecBole's); "
                    "seconds are training plus validation of every epoch through the one "
                    "counted, each side on its own threads, both started together",
        "max_users": args.max_users, "params": params.resolved(fitted.split.train).model_dump(),
        "recbole": {k: theirs[k] for k in ("settings", "best_epoch", "seconds_to_best",
                                           "mean_epoch_seconds", "test")},
        "recbole_best_test_ndcg_at_10": target,
        "ours": {"epoch_reaching_recbole": reached[0] if reached else None,
                 "seconds_to_recbole": reached[1] if reached else None,
                 "best_epoch": fitted.result.best_epoch,
                 "seconds_to_best": float(sum(r["epoch_seconds"] for r in history
                                              [: fitted.result.best_epoch])),
                 "test_unfiltered_ndcg_at_10_at_best": best["test_unfiltered_ndcg_at_10"],
                 "wall_seconds": ours_done,
                 "curve": [{k: round(v, 5) for k, v in row.items()
                            if k in ("epoch", "epoch_seconds", "valid_ndcg_at_10",
                                     "test_unfiltered_ndcg_at_10")} for row in history]},
        "speedup": theirs["seconds_to_best"] / reached[1] if reached else None,
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"time-to-quality-beauty{'-smoke' if args.max_users else ''}{args.tag}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("recbole_best_test_ndcg_at_10", "speedup")}
                     | {k: result["ours"][k] for k in ("epoch_reaching_recbole",
                                                       "seconds_to_recbole")}
                     | {"recbole_seconds_to_best": theirs["seconds_to_best"]}, indent=2))


if __name__ == "__main__":
    main()
