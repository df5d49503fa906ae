"""Tiny model and training settings for tests, the rest as RetrainParams makes them."""

from dataclasses import replace

from training.model import ModelConfig
from training.params import RetrainParams
from training.train import TrainConfig


def model_config(num_items: int, **fields) -> ModelConfig:
    """An ID-only model of RetrainParams' defaults, without its optional parts (repeat bias),
    changed by `fields` (item_repr, text_dim, ... as ModelConfig names them)."""
    return replace(RetrainParams(item_repr="id", repeat_bias=False).model(num_items, None, []),
                   **fields)


def train_config(**fields) -> TrainConfig:
    """RetrainParams' training, without a progress bar, changed by `fields`."""
    return replace(RetrainParams().training(progress=False), **fields)
