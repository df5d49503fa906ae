from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from features.encoder import default_encoder, encode_texts
from features.item_text import item_texts
from features.store import (
    feature_store,
    publish_item_embeddings,
    read_item_embeddings,
    read_recent_items,
    refresh_user_features,
)


def test_item_text_leaves_out_empty_fields():
    items = pd.DataFrame({"title": ["Heat (1995)", "Up (2009)"],
                          "genres": ["Action, Crime", None], "tags": ["  ", "pixar"]})
    assert item_texts(items) == ["Heat (1995). Genres: Action, Crime.", "Up (2009). Tags: pixar."]


def test_bundled_encoder_embeds_similar_titles_close():
    texts = ["Toy Story (1995). Genres: Animation, Children, Comedy.",
             "Toy Story 2 (1999). Genres: Animation, Children, Comedy.",
             "Schindler's List (1993). Genres: Drama, War."]
    vectors = encode_texts(texts, default_encoder(), batch_size=2)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    # batching and length sorting do not change a text's vector
    np.testing.assert_allclose(encode_texts(texts[2:], default_encoder()), vectors[2:], atol=1e-5)


@pytest.fixture
def published(tmp_path):
    items = pd.DataFrame({"item_id": [10, 20, 30], "title": ["A", "B", "C"]})
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    log = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [30, 10, 20, 20],
                        "timestamp": [3, 1, 2, 5]})
    as_of = datetime.now(UTC)
    publish_item_embeddings(tmp_path, items, vectors, "v-test", as_of)
    assert refresh_user_features(tmp_path, log, as_of, recent_n=2) == 2
    return tmp_path, vectors, as_of


def test_offline_store_returns_the_published_embeddings(published):
    state, vectors, as_of = published
    got = read_item_embeddings(state, np.array([30, 10]), as_of)
    np.testing.assert_allclose(got, vectors[[2, 0]], rtol=1e-6)
    with pytest.raises(LookupError, match="no embedding"):
        read_item_embeddings(state, np.array([10, 99]), as_of)


def test_online_store_serves_recent_items_and_embeddings(published):
    state, vectors, as_of = published
    assert read_recent_items(state, [1, 2, 7]) == [[20, 30], [20], None]
    later = datetime.now(UTC)
    assert refresh_user_features(state, pd.DataFrame(
        {"user_id": [2, 2], "item_id": [20, 10], "timestamp": [5, 6]}), later, recent_n=2) == 1
    assert read_recent_items(state, [1, 2]) == [[20, 30], [20, 10]]
    history = feature_store(state).get_historical_features(
        entity_df=pd.DataFrame({"user_id": [2, 2], "event_timestamp": [as_of, later]}),
        features=["user_recent_items:recent_items"]).to_df().sort_values("event_timestamp")
    assert [list(v) for v in history["recent_items"]] == [[20], [20, 10]]  # point in time
    online = feature_store(state).get_online_features(
        features=["item_embeddings:embedding", "item_embeddings:embedding_version"],
        entity_rows=[{"item_id": 20}]).to_dict()
    np.testing.assert_allclose(online["embedding"][0], vectors[1], rtol=1e-6)
    assert online["embedding_version"] == ["v-test"]
