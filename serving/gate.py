"""The promotion gate: what a challenger must show before it replaces the champion."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from serving.recommender import Recommender
from serving.schema import Query
from training.params import RetrainParams

SLICES = ("tail", "cold")
GATED = ("test_ndcg_at_10", *(f"test_{name}_ndcg_at_10" for name in SLICES))  # the numbers


@dataclass(frozen=True)
class Gate:
    """What a challenger must show, on the evaluation set the champion is scored on too."""

    margin: float  # relative gain in test NDCG@10 over the champion's
    slice_tolerance: float  # relative loss allowed in tail and cold NDCG@10
    p95_ms: float  # latency budget: one query, in-process predict

    @classmethod
    def of(cls, params: RetrainParams) -> Gate:
        return cls(margin=params.margin, slice_tolerance=params.slice_tolerance,
                   p95_ms=params.p95_ms)


def p95_latency_ms(recommender: Recommender, histories: list[list[int]], k: int = 10,
                   warmup: int = 10) -> float:
    """95th percentile of the in-process predict time of one query, over `histories` (the
    first `warmup` queries are run first and not counted)."""
    for history in histories[:warmup]:
        recommender.predict(None, [Query(history=history, k=k)])
    times = []
    for history in histories:
        started = time.perf_counter()
        recommender.predict(None, [Query(history=history, k=k)])
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.percentile(times, 95))


def decide(gate: Gate, challenger: dict[str, float], champion: dict[str, float] | None,
           p95_ms: float) -> tuple[bool, str]:
    """Whether the challenger's metrics (`evaluate_test` names) beat the champion's on the same
    set by the gate's margin without losing more than its tolerance on the tail and cold slices,
    within the latency budget; and the reason, with every number."""
    checks = [(p95_ms <= gate.p95_ms, f"p95 {p95_ms:.1f} ms vs budget {gate.p95_ms:.1f} ms")]
    if champion is not None:
        new, old = challenger["test_ndcg_at_10"], champion["test_ndcg_at_10"]
        checks.append((new > old * (1 + gate.margin),
                       f"test_ndcg_at_10 {new:.4f} vs champion {old:.4f} (+{gate.margin:.0%})"))
        for name in SLICES:
            key = f"test_{name}_ndcg_at_10"
            if key in champion:
                new, old = challenger.get(key, 0.0), champion[key]
                checks.append((new >= old * (1 - gate.slice_tolerance),
                               f"{key} {new:.4f} vs champion {old:.4f} "
                               f"(-{gate.slice_tolerance:.0%} allowed)"))
    promoted = all(ok for ok, _ in checks)
    failed = [text for ok, text in checks if not ok]
    reason = ("; ".join(text for _, text in checks) if promoted
              else "refused: " + "; ".join(failed))
    return promoted, ("no champion yet; " if champion is None else "") + reason
