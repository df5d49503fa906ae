"""Merge the results of benchmark runs made in parallel (one seed or one model per process) of
bench/quality.py or bench/new_items.py into one file with the mean and spread over seeds;
each part's settings are kept:

    .venv/bin/python bench/merge_quality.py bench/results/quality-beauty-id-ce-seed{1,2,3}.json \\
        --out bench/results/quality-beauty-id-ce.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quality import SUMMARY, summarize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    parts = [json.loads(p.read_text()) for p in args.parts]
    # one run per model and seed: bench/quality.py's popularity baseline (no seed) is the same
    # in every part; bench/new_items.py's is of each seed's withheld items
    runs = list({(r["model"], r.get("seed")): r for part in parts for r in part["runs"]}.values())
    keys = tuple(parts[0].get("summary_keys", SUMMARY))
    merged = {**parts[0], "date": max(p["date"] for p in parts),
              "seconds": max(p["seconds"] for p in parts),
              "settings": {**parts[0]["settings"],
                           "seeds": sorted({r["seed"] for r in runs if "seed" in r})},
              "parts": [{"file": path.name, "settings": p["settings"]}
                        for path, p in zip(args.parts, parts, strict=True)],
              "summary": summarize([r for r in runs if "seed" in r], keys), "runs": runs}
    args.out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(merged["summary"], indent=2))


if __name__ == "__main__":
    main()
