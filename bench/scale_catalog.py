"""Training and serving over large catalogs: seconds per training step (and so per epoch) and
peak memory of the full softmax (`--loss ce`) and of the sampled one (`--loss sampled`: the
batch's targets and uniform negatives, logQ-corrected), for catalogs of 10^4, 10^5 and 10^6
items; and the in-process latency of one served query over the largest catalog trained.

Synthetic data: `--users` users of 20 interactions each, every item drawn independently from a
Zipf law of exponent 1.1 over the catalog (item k with probability proportional to k^-1.1), so
that a few items are popular and most are rare, as in real logs. The model: RetrainParams'
defaults with IDs only (`item_repr id`: a text table of 10^6 rows would be timed, not the
loss). Each configuration runs in a process of its own, its memory capped (RLIMIT_DATA) so
that one that does not fit fails alone, with its error, instead of the machine.

    .venv/bin/python -m bench.scale_catalog   # 10^4, 10^5, 10^6 items, ce and sampled
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
LENGTH = 20  # interactions per user


def zipf_sequences(users: int, items: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 1.1
    drawn = rng.choice(items, size=(users, LENGTH), p=weights / weights.sum()) + 1
    return list(drawn)


def measure(items: int, loss: str, users: int, steps: int, cap_gib: float, out) -> None:
    """One configuration, in its own process: its figures (or its error) put on `out`."""
    resource.setrlimit(resource.RLIMIT_DATA, (int(cap_gib * 2**30),) * 2)
    torch.set_num_threads(1)
    from training.model import SeqRec
    from training.params import RetrainParams
    from training.sequences import length_batches, pad_left, popularity
    from training.train import keep_freed_memory

    keep_freed_memory()  # as training does

    params = RetrainParams(item_repr="id", loss=loss)
    try:
        sequences = zipf_sequences(users, items)
        model = SeqRec(params.model(items, None, sequences))
        if loss == "sampled":
            counts = torch.from_numpy(popularity(sequences, items)).double()
            model.target_share.copy_(counts / counts.sum())
        opt = torch.optim.AdamW(model.parameters(), lr=params.lr)
        lengths = np.full(len(sequences), LENGTH)
        batches = length_batches(lengths, params.batch_size, np.random.default_rng(0))
        times = []
        for i, ids in enumerate(batches[: steps + 2]):
            batch = pad_left([sequences[j] for j in ids], params.max_len + 1)
            started = time.perf_counter()
            step_loss = model(batch[:, :-1], batch[:, 1:]).mean()
            opt.zero_grad(set_to_none=True)
            step_loss.backward()
            opt.step()
            if i >= 2:  # the first two steps warm up the allocator
                times.append(time.perf_counter() - started)
        step_s = statistics.median(times)
        out.put({"items": items, "loss": loss, "steps_timed": len(times),
                 "seconds_per_step": step_s, "steps_per_epoch": len(batches),
                 "seconds_per_epoch": step_s * len(batches),
                 "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                 "serving_p50_ms": serving_p50(model, items) if loss == "sampled" else None})
    except (RuntimeError, MemoryError) as e:  # torch's allocator failing under the cap
        out.put({"items": items, "loss": loss, "error": f"{type(e).__name__}: {e}"[:300],
                 "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})


def serving_p50(model, items: int, queries: int = 200) -> float:
    """Median milliseconds of one query (history of 50, top 10) by the served model."""
    from serving.recommender import Recommender
    from serving.schema import Query
    from training.sequences import ItemIndex

    served = Recommender()
    served.features = None
    served.use(model, ItemIndex(np.arange(1, items + 1)), [f"item {i}" for i in
                                                           range(1, items + 1)],
               torch.zeros(items + 1))
    rng = np.random.default_rng(1)
    times = []
    for _ in range(queries):
        query = Query(history=rng.integers(1, items + 1, 50).tolist(), k=10)
        started = time.perf_counter()
        served.predict(None, [query])
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", nargs="+", type=int, default=[10**4, 10**5, 10**6])
    parser.add_argument("--losses", nargs="+", default=["ce", "sampled"])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--cap-gib", type=float, default=12.0,
                        help="memory cap of each configuration's process")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_catalog.json")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for items in args.items:
        for loss in args.losses:
            out = context.Queue()
            child = context.Process(target=measure, args=(items, loss, args.users, args.steps,
                                                          args.cap_gib, out))
            child.start()
            child.join()
            row = out.get() if not out.empty() else {
                "items": items, "loss": loss, "error": f"process ended with {child.exitcode}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
            result = {"benchmark": "scale_catalog",
                      "date": datetime.now(UTC).isoformat(timespec="seconds"),
                      "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, "
                                 f"torch {torch.__version__}, 1 thread per configuration",
                      "data": __doc__.split("\n\n")[1].replace("\n", " "),
                      "settings": vars(args) | {"out": str(args.out)}, "rows": rows}
            RESULTS.mkdir(exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
