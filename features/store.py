"""The Feast store of LLMSeqRec: write the offline sources, apply the definitions,
materialize to the online store, and read features back."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, RepoConfig

from features.data_sources import (
    embedded_items_source,
    item_embeddings_source,
    user_recent_items_source,
)
from features.entities import embedding_recipe, item, user
from features.feature_services import recommender
from features.feature_views import embedded_items, item_embeddings, user_recent_items
from features.files import write_parquet
from training.model import EmbeddingVersionError

FEATURE_REPO = Path(__file__).resolve().parent
# a feature_store.yaml template to use instead of FEATURE_REPO's (another online store)
FEATURE_STORE_TEMPLATE = "LLMSEQREC_FEATURE_STORE_YAML"
FIRST_FEATURE_TIME = datetime(2000, 1, 1, tzinfo=UTC)
DEFINITIONS = [item, user, embedding_recipe, item_embeddings_source, embedded_items_source,
               user_recent_items_source, item_embeddings, embedded_items, user_recent_items,
               recommender]


def store_config(state_dir: Path, expand_env: bool = True) -> str:
    """The Feast configuration for the state directory `state_dir`: the template named by
    $LLMSEQREC_FEATURE_STORE_YAML (e.g. features/feature_store.redis.yaml), else
    features/feature_store.yaml, with ${LLMSEQREC_HOME} the state directory and every other
    ${VAR} read from the environment (a host, a password); one that is not set is an error.
    With `expand_env=False` the other ${VAR}s stay as they are: the copy logged with a model
    holds no secret, and the serving host supplies its own values (`online_store`)."""
    template = Path(os.environ.get(FEATURE_STORE_TEMPLATE) or FEATURE_REPO / "feature_store.yaml")
    text = template.read_text()
    if not expand_env:
        return Template(text).safe_substitute(LLMSEQREC_HOME=str(state_dir))
    return _expand(text, template, LLMSEQREC_HOME=str(state_dir))


def _expand(text: str, source: Path, **values: str) -> str:
    try:
        return Template(text).substitute(os.environ, **values)
    except KeyError as e:
        raise KeyError(f"{source} uses ${{{e.args[0]}}}, which is not set") from None


def feature_store(state_dir: Path) -> FeatureStore:
    """The store configured by features/feature_store.yaml, its state under `state_dir`."""
    config = RepoConfig(**yaml.safe_load(store_config(state_dir)))
    config.repo_path = state_dir / "feast"
    (config.repo_path / "data").mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=config)


def online_store(config_file: Path) -> FeatureStore:
    """A store to read online features with, from a feature_store.yaml logged with a model
    (its ${VAR}s, such as a password, read from this host's environment)."""
    return FeatureStore(config=RepoConfig(**yaml.safe_load(_expand(config_file.read_text(),
                                                                   config_file))))


def _source_path(store: FeatureStore, source) -> Path:
    return Path(store.config.repo_path) / source.path


def _materialize(store: FeatureStore, view_name: str, as_of: datetime) -> None:
    """Bring the online store up to `as_of`: incrementally once a view has been materialized."""
    end = as_of + timedelta(milliseconds=1)
    if store.get_feature_view(view_name).most_recent_end_time is None:
        store.materialize(start_date=FIRST_FEATURE_TIME, end_date=end, feature_views=[view_name])
    else:
        store.materialize_incremental(end_date=end, feature_views=[view_name])


def publish_item_embeddings(state_dir: Path, items: pd.DataFrame, embeddings: np.ndarray,
                            embedding_version: str, as_of: datetime) -> int:
    """Append, as of `as_of`, the embedding and title of every item that is new or whose
    vector, title or version changed to the offline source (earlier rows stay: point-in-time
    reads see them), and the items embedded with this version; `feast apply`, materialize the
    change online; the item rows appended."""
    store = feature_store(state_dir)
    ids = items["item_id"].to_numpy(np.int64)
    rows = pd.DataFrame({
        "item_id": ids,
        "embedding": list(embeddings.astype(np.float32)),
        "title": items["title"].astype(str).to_numpy(),
        "embedding_version": embedding_version,
        "event_timestamp": as_of,
    })
    path = _source_path(store, item_embeddings_source)
    table = rows
    if path.is_file():
        stored = pd.read_parquet(path)
        latest = stored.sort_values("event_timestamp").groupby("item_id").tail(1)
        latest = latest.set_index("item_id").reindex(rows["item_id"])
        changed = [not (isinstance(old, np.ndarray) and version == embedding_version
                        and title == new_title and np.array_equal(old, new))
                   for old, version, title, new, new_title in zip(
                       latest["embedding"], latest["embedding_version"], latest["title"],
                       rows["embedding"], rows["title"], strict=True)]
        rows = rows[np.array(changed, dtype=bool)]
        table = pd.concat([stored, rows], ignore_index=True)
    write_parquet(table, path)
    _publish_embedded_items(store, ids, embedding_version, as_of)
    store.apply(DEFINITIONS)
    _materialize(store, item_embeddings.name, as_of)
    _materialize(store, embedded_items.name, as_of)
    return len(rows)


def _publish_embedded_items(store: FeatureStore, item_ids: np.ndarray, embedding_version: str,
                            as_of: datetime) -> None:
    """Add `item_ids` to the items embedded with `embedding_version`, as of `as_of`."""
    path = _source_path(store, embedded_items_source)
    stored = pd.read_parquet(path) if path.is_file() else None
    before = np.array([], dtype=np.int64)
    if stored is not None:
        own = stored[stored["recipe"] == embedding_version].sort_values("event_timestamp")
        if len(own):
            before = np.asarray(own["item_ids"].iloc[-1], dtype=np.int64)
    ids = np.union1d(before, item_ids.astype(np.int64))
    if len(ids) == len(before):
        return
    row = pd.DataFrame({"recipe": [embedding_version], "item_ids": [ids],
                        "event_timestamp": [as_of]})
    write_parquet(row if stored is None else pd.concat([stored, row], ignore_index=True), path)


def published_embedding_version(state_dir: Path) -> str | None:
    """The embedding version most recently published to the offline store; None before any."""
    path = _source_path(feature_store(state_dir), item_embeddings_source)
    if not path.is_file():
        return None
    rows = pd.read_parquet(path, columns=["embedding_version", "event_timestamp"])
    return str(rows.sort_values("event_timestamp", kind="stable")["embedding_version"].iloc[-1])


def refresh_user_features(state_dir: Path, interactions: pd.DataFrame, as_of: datetime,
                          recent_n: int = 50) -> int:
    """Append, as of `as_of`, the recent items of every user in `interactions` (their whole
    stored history) to the offline source and materialize the change; the users refreshed."""
    store = feature_store(state_dir)
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    recent = ordered.groupby("user_id").tail(recent_n).groupby("user_id")["item_id"].agg(list)
    rows = pd.DataFrame({"user_id": recent.index.to_numpy(np.int64),
                         "recent_items": recent.to_list(), "event_timestamp": as_of})
    path = _source_path(store, user_recent_items_source)
    if path.is_file():
        rows = pd.concat([pd.read_parquet(path), rows], ignore_index=True)
    write_parquet(rows, path)
    store.apply(DEFINITIONS)
    _materialize(store, user_recent_items.name, as_of)
    return len(recent)


def read_item_embeddings(state_dir: Path, item_ids: np.ndarray, as_of: datetime,
                         version: str) -> np.ndarray:
    """Point-in-time item embeddings from the offline store, in the order of `item_ids`;
    refuses vectors of any other embedding version than `version`."""
    entity_df = pd.DataFrame({"item_id": item_ids.astype(np.int64), "event_timestamp": as_of})
    df = feature_store(state_dir).get_historical_features(
        entity_df=entity_df,
        features=["item_embeddings:embedding", "item_embeddings:embedding_version"],
    ).to_df().set_index("item_id").reindex(item_ids)
    missing = df["embedding"].isna()
    if missing.any():
        raise LookupError(f"{int(missing.sum())} items have no embedding as of {as_of}, "
                          f"e.g. item {item_ids[missing.to_numpy()][0]}")
    other = sorted(set(df["embedding_version"]) - {version})
    if other:
        raise EmbeddingVersionError(f"the feature store holds embedding version(s) {other} "
                                    f"where {version} was expected: re-embed the items")
    return np.stack(df["embedding"].to_numpy()).astype(np.float32)


def register_model_features(state_dir: Path, model_name: str, model_version: str,
                            embedding_version: str) -> str:
    """One FeatureService per model version, naming the features it reads and the embedding
    version it was trained with; its name."""
    service = FeatureService(
        name=f"{model_name}_v{model_version}",
        features=[item_embeddings, embedded_items, user_recent_items],
        tags={"model": model_name, "model_version": str(model_version),
              "embedding_version": embedding_version},
        description=f"Features of {model_name} version {model_version}",
    )
    feature_store(state_dir).apply([service])
    return service.name


def read_recent_items(store: FeatureStore, user_ids: list[int]) -> list[list[int] | None]:
    """Each user's recent items from the online store; None for an unknown user."""
    rows = store.get_online_features(
        features=["user_recent_items:recent_items"],
        entity_rows=[{"user_id": int(u)} for u in user_ids],
    ).to_dict()
    return [list(r) if r is not None else None for r in rows["recent_items"]]


def read_embedded_items(store: FeatureStore, embedding_version: str) -> np.ndarray:
    """Catalog ids of the items with an embedding of `embedding_version`, from the online
    store (sorted; empty before any)."""
    [ids] = store.get_online_features(features=["embedded_items:item_ids"],
                                      entity_rows=[{"recipe": embedding_version}]
                                      ).to_dict()["item_ids"]
    return np.asarray(ids if ids is not None else [], dtype=np.int64)


def read_online_items(store: FeatureStore, item_ids: np.ndarray) -> pd.DataFrame:
    """The latest embedding, title and embedding version of each item, from the online store,
    indexed by item id (missing values for an item it lacks)."""
    rows = store.get_online_features(
        features=["item_embeddings:embedding", "item_embeddings:title",
                  "item_embeddings:embedding_version"],
        entity_rows=[{"item_id": int(i)} for i in item_ids]).to_dict()
    return pd.DataFrame(rows).set_index("item_id")
