"""Items new to the catalog, the inductive protocol: a seeded share of the catalog (default 10%)
is withheld from training (every interaction with those items is removed from the data the
model is fitted and validated on, and they are not in its catalog), then the fitted model is
grown to the whole catalog as a warm start grows it (`training.train.grown_state`: a new item
is scored from its text, its ID row zero; an ID-only model gets a random row) and tested on the
same leave-one-out targets as the normal protocol. Users whose test target is a withheld item
form the `new` slice, the others `warm`; head/tail/cold are by training popularity (withheld
items count 0, so they are cold too). Each seed withholds another share and seeds the models.

    .venv/bin/python bench/new_items.py --dataset scientific --seeds 1 2 3
    # every RetrainParams field is a flag too (default: its default), as in bench/quality.py
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from quality import RESULTS, benchmark_arguments, machine, prepare, summarize

from training.evaluate import evaluate_test, model_scorer, popularity_scorer
from training.model import SeqRec, TextTable
from training.params import RetrainParams
from training.retrain import Fitted, fit
from training.sequences import ItemIndex
from training.train import device, grown_model

SLICES = ("", "new_", "warm_", "head_", "tail_", "cold_")
KEYS = tuple(f"test_{protocol}{name}{metric}" for protocol in ("", "unfiltered_")
             for name in SLICES for metric in ("ndcg_at_10", "recall_at_10"))


def withheld_items(index: ItemIndex, share: float, seed: int) -> np.ndarray:
    """A seeded `share` of the catalog, as a mask over model ids (padding never)."""
    chosen = np.random.default_rng(seed).choice(len(index), round(share * len(index)),
                                                replace=False)
    mask = np.zeros(len(index) + 1, dtype=bool)
    mask[chosen + 1] = True
    return mask


def grown(fitted: Fitted, params: RetrainParams, index: ItemIndex, text: TextTable | None
          ) -> SeqRec:
    """The fitted model over the whole catalog `index`, the withheld items added."""
    return grown_model(fitted.model.cpu(), fitted.index.item_ids, index.item_ids,
                       text if params.item_repr != "id" else None).to(device()).eval()


def main() -> None:
    parser = benchmark_arguments(["id", "text", "hybrid"])
    parser.add_argument("--share", type=float, default=0.1, help="share of the catalog withheld")
    args = parser.parse_args()
    data = prepare(args, tune=False)  # a tuned encoder learns from the kept interactions only
    interactions, index, split, text = data.interactions, data.index, data.split, data.text
    result = {
        "benchmark": "new-items", "dataset": args.dataset, "machine": machine(),
        "protocol": __doc__.split("\n\n")[0].replace("\n", " "),
        "users": len(split.test_target), "items": len(index),
        "settings": vars(args) | {"params": data.base.model_dump()},
        "summary_keys": ["test_new_users", *KEYS],
    }
    name = f"new-items-{args.dataset}{args.tag}.json"
    runs, started = [], time.perf_counter()
    for seed in args.seeds:
        new = withheld_items(index, args.share, seed)
        kept = interactions[~interactions["item_id"].isin(index.item_ids[new[1:]])]
        if args.tune_steps:
            text = data.text_from(args, kept)
        kept_text = None if text is None else TextTable(text.vectors[~new[1:]], text.version)
        counts = None
        for item_repr in [r for r in args.item_repr if r == "id" or text is not None]:
            params = data.base.model_copy(update={"item_repr": item_repr, "seed": seed})
            fitted = fit(kept, index.item_ids[~new[1:]], kept_text, params, progress=False)
            if counts is None:  # training interactions per item of the whole catalog
                counts = np.zeros(len(index) + 1, dtype=np.int64)
                counts[index.encode(fitted.index.item_ids)] = fitted.popularity[1:]
                runs.append({"model": "popularity", "seed": seed, **evaluate_test(
                    popularity_scorer(counts), split, counts, new=new)})
            metrics = evaluate_test(model_scorer(grown(fitted, params, index, text), device()),
                                    split, counts, new=new)
            runs.append({"model": item_repr, "seed": seed,
                         "embedding_version": fitted.model.cfg.embedding_version,
                         "withheld_items": int(new.sum()), "best_epoch": fitted.result.best_epoch,
                         "text_match_weight": fitted.result.text_match_weight,
                         "epochs_run": len(fitted.result.history), **metrics})
            shown = ("model", "seed", "best_epoch", "text_match_weight", *KEYS[:6])
            print(json.dumps({k: v for k, v in runs[-1].items() if k in shown}), flush=True)
            result |= {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                       "seconds": time.perf_counter() - started,
                       "summary": summarize(runs, result["summary_keys"]), "runs": runs}
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(pd.DataFrame({m: {k: v[0] for k, v in s.items()} for m, s in
                        result["summary"].items()}).round(4).to_string())


if __name__ == "__main__":
    main()
