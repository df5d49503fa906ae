"""Every setting of a retrain, and the one place their defaults live: the model, its training
and the promotion gate. `llmseqrec run`, the nightly retrain, `bench/quality.py` and the CLI
options (generated from the fields below, with their descriptions as help) all start here."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.model import ModelConfig, TextTable
from training.sequences import cut_share
from training.train import TrainConfig

# The settings whose best value depends on whether the model reads item text: a field left at
# None takes its model's value here (measured: docs/benchmarks.md, "Defaults by
# representation"). The ID-only model has nothing but its ID rows to fit and overfits them
# unless it is regularized as SASRec's reference is; the fused model generalizes through its
# text rows and learns at half the pace under that much dropout.
ID_ONLY = {"block": "sasrec", "dropout": 0.7}
WITH_TEXT = {"block": "prenorm", "dropout": 0.2}  # text and hybrid

# Long histories: more than this share of the training targets lies in windows cut from
# histories longer than max_len. There positions="auto" reads order by distance (relative),
# since a position counted from a window's end says nothing of how recent an item is (else by
# position from the end: absolute); and the ID-only model, on data this dense, takes less
# dropout (ID_ONLY_LONG), as SASRec takes less on MovieLens than on the sparse Amazon sets.
# Measured: docs/benchmarks.md, "Positions chosen from the data" and "Dropout by history
# length".
LONG_ABOVE_CUT_SHARE = 0.5
ID_ONLY_LONG = {"dropout": 0.6}


def by_representation(name: str) -> str:
    """The help text's note of the defaults of the setting `name`."""
    long = f" ({ID_ONLY_LONG[name]} on long histories)" if name in ID_ONLY_LONG else ""
    return f"; default: {ID_ONLY[name]} for id{long}, {WITH_TEXT[name]} with text"


class RetrainParams(BaseModel):
    """The model, its training and the promotion gate."""

    model_config = ConfigDict(frozen=True)

    # the model (training.model.ModelConfig)
    item_repr: Literal["id", "text", "hybrid"] = Field(
        "hybrid", description="Item representation: learned ID, LLM text, or both fused")
    max_len: int = Field(50, ge=2, description="Longest history the model reads")
    hidden: int = Field(64, ge=2, description="Width of the transformer")
    layers: int = Field(2, ge=1, description="Transformer blocks")
    heads: int = Field(1, ge=1, description="Attention heads (must divide hidden)")
    block: Literal["prenorm", "sasrec"] | None = Field(
        None, description="Transformer block: GPT-2's pre-norm, or SASRec's own wiring (keys "
                          "from the raw stream, feed-forward of width hidden)"
                          + by_representation("block"))
    positions: Literal["auto", "absolute", "relative"] = Field(
        "auto", description="Order as a learned embedding per position from the end of the "
                            "window, or as a learned attention bias per distance; auto: "
                            "relative when most training targets lie in windows cut from "
                            "histories longer than max_len")
    dropout: float | None = Field(None, ge=0, lt=1, description="Dropout in every block"
                                  + by_representation("dropout"))
    loss: Literal["ce", "sampled"] = Field(
        "ce", description="ce: softmax over every item; sampled: over the batch's targets and "
                          "uniform negatives, logQ-corrected (for large catalogs)")
    negatives: int = Field(256, ge=1, description="Uniform negatives per batch of the sampled "
                                                  "softmax")
    whiten_text: bool = Field(True, description="PCA-whiten the LLM item embeddings before "
                                                "the adapter (text and hybrid)")
    adapter_width: int | None = Field(None, ge=1, description="Width of the hidden layer of "
                                      "the adapter from text to hidden (text and hybrid); "
                                      "default: hidden")
    text_match_window: int = Field(
        5, ge=0, description="text and hybrid: add to each item's score a weight (fitted on "
                             "validation after training) times the mean cosine of its LLM "
                             "embedding with those of this many of the history's latest items "
                             "(0: off)")
    repeat_bias: bool = Field(True, description="Learn a score shift for the items already in "
                                                "a history")
    id_dropout: float = Field(0.5, ge=0, lt=1, description="hybrid: share of ID rows left out "
                                                           "in a training step")
    consistency: float = Field(0.0, ge=0, description="R-Drop: two training passes under "
                               "their own dropout masks, and this weight on the symmetric KL "
                               "divergence of their next-item distributions (0: one pass)")
    # its training (training.train.TrainConfig)
    epochs: int = Field(100, ge=1, description="Most epochs to train")
    patience: int = Field(20, ge=1, description="Epochs without a better validation NDCG@10 "
                                               "before stopping")
    lr_decay: float = Field(0.5, gt=0, le=1, description="Factor of the learning rate after "
                            "lr_patience epochs without a better validation NDCG@10 (1: constant)")
    lr_patience: int = Field(3, ge=1, description="Epochs without a better validation NDCG@10 "
                                                  "before the learning rate decays")
    dropout_warmup: int = Field(0, ge=0, description="Optimizer steps over which dropout rises "
                                "linearly from 0 to its rate (0: at its rate from the start)")
    batch_size: int = Field(128, ge=1, description="Sequences per batch (split across "
                                                   "processes under torchrun)")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    seed: int = Field(42, description="Seed of initialisation and batch order")
    warm_start: bool = Field(True, description="Start from the champion's weights when its "
                                               "settings are the same")
    # the promotion gate (serving.gate.Gate)
    margin: float = Field(0.01, description="Relative NDCG@10 gain needed over the champion")
    slice_tolerance: float = Field(0.05, description="Relative tail/cold NDCG@10 loss allowed")
    p95_ms: float = Field(50.0, description="Latency budget of one in-process query (p95)")

    def resolved(self, train: list[np.ndarray] | None = None) -> RetrainParams:
        """These settings with every field left at None given its value: its representation's
        (ID_ONLY or WITH_TEXT), the adapter's width that of hidden, and, for the training
        sequences `train` when given, the values their history lengths decide (ID_ONLY_LONG,
        positions "auto"): what a run records and trains with."""
        kind = ID_ONLY if self.item_repr == "id" else WITH_TEXT
        given = {}
        if train is not None:
            long = cut_share(train, self.max_len) > LONG_ABOVE_CUT_SHARE
            if long and self.item_repr == "id":
                kind = kind | ID_ONLY_LONG
            if self.positions == "auto":
                given["positions"] = "relative" if long else "absolute"
        given |= {k: v for k, v in kind.items() if getattr(self, k) is None}
        if self.adapter_width is None:
            given["adapter_width"] = self.hidden
        return self.model_copy(update=given)

    def model(self, num_items: int, text: TextTable | None, train: list[np.ndarray]
              ) -> ModelConfig:
        """The model's shape over `num_items` items and the LLM embeddings `text` (None for
        `id`), to be trained on the sequences `train`; whitening and ID-row dropout only where
        they act, so a recorded config names only what the model does."""
        uses_text = self.item_repr != "id"
        own = self.resolved(train)
        return ModelConfig(
            num_items=num_items, max_len=self.max_len, hidden=self.hidden, layers=self.layers,
            heads=self.heads, dropout=own.dropout, item_repr=self.item_repr,
            text_dim=text.vectors.shape[1] if uses_text and text is not None else 0,
            embedding_version=text.version if uses_text and text is not None else "",
            loss=self.loss, negatives=self.negatives, whiten_text=self.whiten_text and uses_text,
            adapter_width=own.adapter_width,
            text_match_window=self.text_match_window if uses_text else 0,
            repeat_bias=self.repeat_bias,
            id_dropout=self.id_dropout if self.item_repr == "hybrid" else 0.0, block=own.block,
            positions=own.positions, consistency=self.consistency)

    def training(self, progress: bool = True) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, patience=self.patience,
                           lr_decay=self.lr_decay, lr_patience=self.lr_patience,
                           dropout_warmup=self.dropout_warmup,
                           seed=self.seed, progress=progress)
