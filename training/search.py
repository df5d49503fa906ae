"""The search over the retrain settings, without its operators (no Prefect or MLflow): the
settings an Optuna trial draws, and one trial's fit, scored by the validation NDCG@10 of the
model it keeps (its best epoch, its text match fitted) and stopped early when the pruner finds
its validation curve behind the others'. A trial never ranks a test target: `fit` trains on
each user's items but the last two and validates on the second to last; the last is left to
`training.retrain.compare`, which this never calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import pandas as pd

from training.model import TextTable
from training.params import RetrainParams
from training.retrain import fit

# the settings searched, and their ranges; the others stay as the base settings have them
WEIGHT_DECAYS = [0.0, 0.01, 0.1, 0.5]
HIDDEN = [32, 64, 128]
BATCH_SIZES = [64, 128, 256]
CONSISTENCY = [0.0, 1.0]  # R-Drop off or on: it pays on some data and not on other
ADAPTER_WIDTHS = [64, 256]  # text and hybrid


def suggest(trial: optuna.Trial, base: RetrainParams) -> RetrainParams:
    """The settings `trial` draws: learning rate, dropout, weight decay, width, depth, batch
    size, R-Drop's weight, with text the adapter's width and, for `hybrid`, the ID-row
    dropout; `base` for everything else."""
    drawn = {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.8),
        "weight_decay": trial.suggest_categorical("weight_decay", WEIGHT_DECAYS),
        "hidden": trial.suggest_categorical("hidden", HIDDEN),
        "layers": trial.suggest_int("layers", 1, 3),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "consistency": trial.suggest_categorical("consistency", CONSISTENCY),
    }
    if base.item_repr != "id":
        drawn["adapter_width"] = trial.suggest_categorical("adapter_width", ADAPTER_WIDTHS)
    if base.item_repr == "hybrid":
        drawn["id_dropout"] = trial.suggest_float("id_dropout", 0.0, 0.7)
    return RetrainParams(**base.model_dump() | drawn | {"warm_start": False})


@dataclass
class TrialOutcome:
    value: float  # validation NDCG@10 of the model kept (pruned: of its best epoch)
    epochs: int  # epochs it ran
    pruned: bool  # stopped by the pruner
    curve: list[float] = field(default_factory=list)  # validation NDCG@10 of every epoch


class _Pruned(Exception):
    pass


def run_trial(interactions: pd.DataFrame, items, text: TextTable | None, params: RetrainParams,
              should_stop: Callable[[int, float], bool]) -> TrialOutcome:
    """Fit `params`; after each epoch `should_stop(epoch, validation NDCG@10)` says whether to
    prune it (an Optuna trial's report + should_prune)."""
    curve: list[float] = []

    def on_epoch(row: dict[str, float]) -> None:
        curve.append(row["valid_ndcg_at_10"])
        if should_stop(int(row["epoch"]), row["valid_ndcg_at_10"]):
            raise _Pruned

    try:
        value = fit(interactions, items, text, params, progress=False,
                    on_epoch=on_epoch).result.valid_ndcg_at_10
        pruned = False
    except _Pruned:
        value, pruned = max(curve), True
    return TrialOutcome(value, len(curve), pruned, curve)


def pruned_by(trial: optuna.Trial) -> Callable[[int, float], bool]:
    """`should_stop` for `run_trial`: reports each epoch to `trial` and asks its pruner."""
    def should_stop(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()
    return should_stop


def study(seed: int) -> optuna.Study:
    """Maximise validation NDCG@10: TPE sampling; a trial is pruned when its curve falls below
    the median of the earlier trials' at the same epoch (after 3 trials and 3 epochs)."""
    return optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3))
