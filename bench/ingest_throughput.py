"""Validation + ingest throughput of one 1,000,000-row interaction batch, end to end
(hash, ledger, read, Great Expectations, store write, quarantine, Data Docs), against a store
holding a 10,000-item catalog and 100,000 earlier interactions; 1% of rows are bad. The median
of `--trials` runs is reported; peak memory is the process's peak resident set.

    .venv/bin/python bench/ingest_throughput.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ingestion.batches import ingest_catalog, ingest_file
from ingestion.state import Stores

RESULTS = Path(__file__).resolve().parent / "results"


def generated_batch(rows: int, items: int, users: int, bad_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "user_id": rng.integers(1, users + 1, rows),
        "item_id": rng.zipf(1.3, rows) % items + 1,
        "timestamp": 1_600_000_000 + np.arange(rows),
        "rating": rng.integers(1, 11, rows) / 2,
    })
    bad = rng.random(rows) < bad_share
    df.loc[bad, "item_id"] = items + 1  # not in the catalog
    return df


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    trials = []
    for trial in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            stores = Stores(Path(tmp) / "state")
            catalog = pd.DataFrame({"item_id": np.arange(1, args.items + 1).astype(str),
                                    "title": [f"item {i}" for i in range(1, args.items + 1)]})
            ingest_catalog(catalog, stores, "catalog")
            stores.inbox.mkdir(parents=True)
            history = stores.inbox / "history.csv"
            generated_batch(100_000, args.items, args.users, 0.0, seed=1).assign(
                timestamp=lambda d: d["timestamp"] - 10_000_000).to_csv(history, index=False)
            ingest_file(history, stores, datetime.now(UTC))
            batch = stores.inbox / "batch.csv"
            generated_batch(args.rows, args.items, args.users, args.bad_share,
                            seed=trial).to_csv(batch, index=False)
            started = time.perf_counter()
            report = ingest_file(batch, stores, datetime.now(UTC))
            trials.append(time.perf_counter() - started)
        assert report.rows_in == report.rows_accepted + report.rows_quarantined == args.rows
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = float(np.median(trials))
    result = {
        "benchmark": "ingest_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"{platform.python_implementation()} {platform.python_version()}",
        "rows": args.rows,
        "rows_accepted": report.rows_accepted,
        "rows_quarantined": report.rows_quarantined,
        "trials_seconds": [round(t, 2) for t in trials],
        "median_seconds": round(seconds, 2),
        "rows_per_second": round(args.rows / seconds),
        "peak_rss_mib": round(peak_mib),
        "target_rows_per_second": 200_000,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
