"""Tune the text encoder on the recommendation signal: a contrastive next-item objective over
the training sequences (an item's text should be nearest to the text of the item that follows
it, against the other items of the batch), as LLM2Rec and LLMEmb adapt their language models.
Only the top layers learn; the rest stay as they were, so one step costs a forward pass and a
short backward pass. The tuned copy is saved as an HF model directory named by its weights'
hash, and `ItemEncoder` loads it as any other (its revision, and so every embedding version made
with it, is that hash). No Prefect, MLflow or Feast here: the flow is flows/tune_encoder.py."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from features.encoder import ItemEncoder, file_digest, load_text_model, pool
from features.item_text import item_texts
from training.retrain import dataset

WEIGHTS = "model.safetensors"
TUNING_FILE = "tuning.json"  # the settings and data a tuned copy was made with


@dataclass(frozen=True)
class TuningConfig:
    steps: int = 300  # optimizer steps
    batch_pairs: int = 64  # (item, next item) pairs per step; the other pairs are negatives
    lr: float = 5e-5
    temperature: float = 0.05
    top_layers: int = 2  # transformer layers tuned, from the top (0: every weight)
    max_length: int = 64  # tokens per text while tuning
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_pairs, self.max_length) < 1 or self.top_layers < 0:
            raise ValueError(f"tuning settings out of range: {self}")


def next_item_pairs(train: list[np.ndarray]) -> np.ndarray:
    """(n, 2) consecutive (item, next item) of the training sequences, different items only.
    `train` must hold training sequences only (`Split.train`): never a validation or test
    target."""
    pairs = [np.stack([s[:-1], s[1:]], axis=1) for s in train if len(s) > 1]
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def tune_on_interactions(encoder: ItemEncoder, interactions: pd.DataFrame, items: pd.DataFrame,
                         fields: tuple[str, ...], cfg: TuningConfig, out_root: Path,
                         progress: bool = True) -> Path:
    """Tune `encoder` on the training sequences of the leave-one-out split of `interactions`
    (user_id, item_id, timestamp) over the catalog `items` (item_id and the text `fields`), as
    the retrain splits them: the validation and test targets are never seen."""
    index, split = dataset(interactions, items["item_id"])
    ordered = items.set_index("item_id").loc[index.item_ids].reset_index()
    return tune_encoder(encoder, item_texts(ordered, fields), next_item_pairs(split.train) - 1,
                        cfg, out_root, progress)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of an HF model (BERT's encoder.layer, Llama's layers,
    ...): its longest ModuleList."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no stack of layers to tune")
    return max(stacks, key=len)


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit vectors a[k] -> b[k] against the batch's other b (and b -> a);
    `same[k, j]` marks another pair whose item is the positive's own (not a negative)."""
    logits = a @ b.T / temperature  # (B, B)
    logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool,
                                                  device=a.device), float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return (nn.functional.cross_entropy(logits, target)
            + nn.functional.cross_entropy(logits.T, target)) / 2


def tune_encoder(encoder: ItemEncoder, texts: list[str], pairs: np.ndarray, cfg: TuningConfig,
                 out_root: Path, progress: bool = True) -> Path:
    """Tune `encoder` so that texts[i] lies nearest texts[j] for the (i, j) of `pairs` (rows of
    `texts`); save the copy under `out_root`, named after its base and its weights' hash, and
    return its directory. bf16 autocast on CUDA, float32 on CPU."""
    if not len(pairs):
        raise ValueError("no (item, next item) pair to tune the encoder on")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tokenizer, model = load_text_model(encoder.name, encoder.device, torch.float32)
    tokens = tokenizer([encoder.cfg.prompt.format(text=t) for t in texts], truncation=True,
                       max_length=cfg.max_length)
    model.requires_grad_(cfg.top_layers == 0)
    for layer in transformer_layers(model)[-cfg.top_layers:] if cfg.top_layers else []:
        layer.requires_grad_(True)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up over the first tenth
        optimizer, lambda step: min(1.0, (step + 1) / max(1, cfg.steps // 10)))
    model.train()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="tune encoder", disable=not progress):
        batch = pairs[rng.choice(len(pairs), min(cfg.batch_pairs, len(pairs)), replace=False)]
        rows, inverse = np.unique(batch, return_inverse=True)  # each text encoded once
        inputs = tokenizer.pad({k: [tokens[k][r] for r in rows] for k in tokens},
                               return_tensors="pt").to(encoder.device)
        with torch.autocast(encoder.device.type, torch.bfloat16,
                            enabled=encoder.device.type == "cuda"):
            hidden = model(**inputs).last_hidden_state.float()
        vectors = pool(hidden, inputs["attention_mask"], encoder.cfg.pooling)[
            torch.from_numpy(inverse.reshape(batch.shape)).to(encoder.device)]  # (B, 2, dim)
        positives = torch.from_numpy(batch[:, 1]).to(encoder.device)
        loss = contrastive_loss(vectors[:, 0], vectors[:, 1],
                                positives[:, None] == positives[None, :], cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return save_tuned(model, tokenizer, encoder, cfg, {
        "pairs": int(len(pairs)), "items": len(texts),
        "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:]))},
        out_root)


def tuning_record(tuned: Path) -> dict:
    """What a tuned copy was made from and with: its base, settings, pair count and losses."""
    return json.loads((tuned / TUNING_FILE).read_text())


def save_tuned(model, tokenizer, encoder: ItemEncoder, cfg: TuningConfig, stats: dict,
               out_root: Path) -> Path:
    """Write the tuned copy whole or not at all, as out_root/<base>-tuned-<weights hash>
    (<base>: the encoder's label, e.g. minilm)."""
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_root) as tmp:
        staged = Path(tmp) / "model"
        model.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        (staged / TUNING_FILE).write_text(json.dumps({
            "base": encoder.name, "base_revision": encoder.revision, "pooling":
            encoder.cfg.pooling, "prompt": encoder.cfg.prompt, "settings": asdict(cfg)} | stats,
            indent=2) + "\n")
        target = out_root / f"{encoder.stem}-tuned-{file_digest(staged / WEIGHTS)[:12]}"
        if not target.exists():
            staged.rename(target)
    return target
