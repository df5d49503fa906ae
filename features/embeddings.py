"""Item embeddings as versioned, incremental features: a content hash per item text, so a
re-run encodes only new or changed items; a version per recipe (encoder, revision, pooling,
prompt, text fields), stored with every vector."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.encoder import ItemEncoder
from features.files import write_parquet
from features.item_text import item_texts


@dataclass(frozen=True)
class ItemEmbeddings:
    item_ids: np.ndarray
    vectors: np.ndarray  # (items, dim), unit length
    version: str
    encoded: int  # how many texts this run had to encode


def embedding_version(encoder: ItemEncoder, fields: tuple[str, ...]) -> str:
    """Names the recipe of an embedding; equal versions mean comparable vectors."""
    recipe = json.dumps(encoder.fingerprint() | {"fields": list(fields)}, sort_keys=True)
    return f"{encoder.stem}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def embed_catalog(items: pd.DataFrame, encoder: ItemEncoder, fields: tuple[str, ...],
                cache_dir: Path) -> ItemEmbeddings:
    """Vectors of every item, encoding only the texts the cache of this version lacks."""
    version = embedding_version(encoder, fields)
    texts = item_texts(items, fields)
    hashes = [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts]
    ids = items["item_id"].to_numpy(np.int64)
    cache_file = cache_dir / f"{version}.parquet"
    cached = (pd.read_parquet(cache_file).set_index(["item_id", "text_hash"])["embedding"]
              if cache_file.is_file() else pd.Series(dtype=object))
    found = cached.reindex(pd.MultiIndex.from_arrays([ids, hashes]))
    need = np.flatnonzero(found.isna().to_numpy())
    vectors = np.zeros((len(items), encoder.dim), dtype=np.float32)
    have = np.flatnonzero(found.notna().to_numpy())
    if len(have):
        vectors[have] = np.stack(found.iloc[have].to_numpy())
    if len(need):
        vectors[need] = encoder.encode([texts[i] for i in need])
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_parquet(pd.DataFrame({"item_id": ids, "text_hash": hashes,
                                    "embedding": list(vectors)}), cache_file)
    return ItemEmbeddings(ids, vectors, version, len(need))


def similar_items(embeddings: np.ndarray, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the k items nearest to row `item` by cosine (vectors are unit length), the item
    itself left out, with their similarities."""
    sims = embeddings @ embeddings[item]  # (items,)
    sims[item] = -np.inf
    top = np.argsort(-sims, kind="stable")[: min(k, len(sims) - 1)]
    return top, sims[top]
