"""What a retrain is given: the model, its training and the promotion gate (light to import:
the command line takes its defaults from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RetrainParams(BaseModel):
    """The model, its training and the promotion gate."""

    item_repr: Literal["id", "text", "hybrid"] = "hybrid"
    max_len: int = Field(50, ge=2)
    hidden: int = Field(64, ge=2)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    loss: Literal["ce", "sampled"] = "ce"
    negatives: int = Field(256, ge=1)
    whiten_text: bool = True
    repeat_bias: bool = True
    id_dropout: float = Field(0.5, ge=0, lt=1)
    epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 42
    warm_start: bool = True
    margin: float = Field(0.01, description="Relative NDCG@10 gain needed over the champion")
    slice_tolerance: float = Field(0.05, description="Relative tail/cold NDCG@10 loss allowed")
    p95_ms: float = Field(50.0, description="Latency budget of one in-process query (p95)")
