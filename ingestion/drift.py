"""How a new batch differs from the stored history: volume, new users and items, popularity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DriftThresholds:
    volume_ratio: float = 5.0  # flag a batch this many times larger or smaller than usual
    new_user_share: float = 0.8
    new_item_share: float = 0.5
    popularity_divergence: float = 0.6  # Jensen-Shannon, base 2: 0 same, 1 disjoint


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) of two count vectors over the same items."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return (kl(p) + kl(q)) / 2


def drift_summary(batch: pd.DataFrame, history: pd.DataFrame, usual_rows: float | None,
                  thresholds: DriftThresholds = DriftThresholds()) -> dict:
    """Drift figures of `batch` against `history` (both with user_id, item_id) and the flags
    raised; `usual_rows` is the median size of earlier batches (None for the first)."""
    if batch.empty or history.empty:
        return {"rows": len(batch), "flags": []}
    batch_counts = batch["item_id"].value_counts()
    history_counts = history["item_id"].value_counts()
    items = batch_counts.index.union(history_counts.index)
    summary = {
        "rows": len(batch),
        "volume_ratio": len(batch) / usual_rows if usual_rows else None,
        "new_user_share": float((~batch["user_id"].isin(history["user_id"])).mean()),
        "new_item_share": float((~batch["item_id"].isin(history_counts.index)).mean()),
        "popularity_divergence": js_divergence(
            batch_counts.reindex(items, fill_value=0).to_numpy(float),
            history_counts.reindex(items, fill_value=0).to_numpy(float)),
    }
    flags = []
    ratio = summary["volume_ratio"]
    if ratio is not None and not 1 / thresholds.volume_ratio <= ratio <= thresholds.volume_ratio:
        flags.append("volume")
    for name in ("new_user_share", "new_item_share", "popularity_divergence"):
        if summary[name] > getattr(thresholds, name):
            flags.append(name)
    return summary | {"flags": flags}
