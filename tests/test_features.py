from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaModel

from features.embeddings import embed_catalog, embedding_version, similar_items
from features.encoder import EncoderConfig, ItemEncoder, default_encoder
from features.item_text import item_texts
from features.store import (
    FEATURE_STORE_TEMPLATE,
    EmbeddingVersionError,
    feature_store,
    publish_item_embeddings,
    read_item_embeddings,
    read_recent_items,
    refresh_user_features,
    store_config,
)

TEXTS = ["Toy Story (1995). Genres: Animation, Children, Comedy.",
         "Toy Story 2 (1999). Genres: Animation, Children, Comedy.",
         "Schindler's List (1993). Genres: Drama, War."]


def test_item_text_leaves_out_empty_fields():
    items = pd.DataFrame({"title": ["Heat (1995)", "Up (2009)"],
                          "genres": ["Action, Crime", None], "tags": ["  ", "pixar"]})
    assert item_texts(items, ("title", "genres", "tags")) == [
        "Heat (1995). Genres: Action, Crime.", "Up (2009). Tags: pixar."]


def test_bundled_encoder_embeds_similar_titles_close():
    encoder = ItemEncoder(EncoderConfig(batch_size=2))
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    # batching and length sorting do not change a text's vector
    np.testing.assert_allclose(encoder.encode(TEXTS[2:]), vectors[2:], atol=1e-5)
    top, _ = similar_items(vectors, 0, k=2)
    assert top.tolist() == [1, 2]


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A decoder LLM built from a config (random weights, no hub) with a local tokenizer."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(default_encoder())
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    LlamaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_decoder_llm_with_last_token_pooling(tiny_decoder):
    cfg = EncoderConfig(model=tiny_decoder, pooling="last", prompt='This item: "{text}" means:')
    encoder = ItemEncoder(cfg)
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the last real token is pooled, whatever the padding: alone or in a batch, same vector
    np.testing.assert_allclose(encoder.encode(TEXTS[:1]), vectors[:1], atol=1e-5)
    mean = ItemEncoder(EncoderConfig(model=tiny_decoder, pooling="mean"))
    assert embedding_version(encoder, ("title",)) != embedding_version(mean, ("title",))


def test_only_new_or_changed_items_are_encoded(tmp_path):
    encoder = ItemEncoder()
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["Heat", "Up", "Alien"]})
    first = embed_catalog(items, encoder, ("title",), tmp_path)
    assert first.encoded == 3
    again = embed_catalog(items, encoder, ("title",), tmp_path)
    assert again.encoded == 0 and again.version == first.version
    np.testing.assert_array_equal(again.vectors, first.vectors)
    changed = pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["Heat", "Up!", "Alien", "Jaws"]})
    delta = embed_catalog(changed, encoder, ("title",), tmp_path)
    assert delta.encoded == 2  # item 2 changed, item 4 is new
    np.testing.assert_array_equal(delta.vectors[[0, 2]], first.vectors[[0, 2]])
    assert not np.allclose(delta.vectors[1], first.vectors[1])


@pytest.fixture
def published(tmp_path):
    items = pd.DataFrame({"item_id": [10, 20, 30], "title": ["A", "B", "C"]})
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    log = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [30, 10, 20, 20],
                        "timestamp": [3, 1, 2, 5]})
    as_of = datetime.now(UTC)
    assert publish_item_embeddings(tmp_path, items, vectors, "v1", as_of) == 3
    assert refresh_user_features(tmp_path, log, as_of, recent_n=2) == 2
    return tmp_path, items, vectors, as_of


def test_offline_store_is_point_in_time_correct(published):
    state, items, vectors, as_of = published
    got = read_item_embeddings(state, np.array([30, 10]), as_of, "v1")
    np.testing.assert_allclose(got, vectors[[2, 0]], rtol=1e-6)
    later = as_of + timedelta(seconds=5)
    changed = vectors.copy()
    changed[1] = -changed[1]  # item 20 gets a new vector
    assert publish_item_embeddings(state, items, changed, "v1", later) == 1
    np.testing.assert_allclose(read_item_embeddings(state, np.array([20]), as_of, "v1"),
                               vectors[[1]], rtol=1e-6)
    np.testing.assert_allclose(read_item_embeddings(state, np.array([20]), later, "v1"),
                               changed[[1]], rtol=1e-6)
    with pytest.raises(LookupError, match="no embedding"):
        read_item_embeddings(state, np.array([10, 99]), as_of, "v1")


def test_embeddings_of_another_version_are_refused(published):
    state, items, vectors, as_of = published
    with pytest.raises(EmbeddingVersionError, match=r"\['v1'\] where v2 was expected"):
        read_item_embeddings(state, np.array([10]), as_of, "v2")


def test_online_store_serves_recent_items_and_embeddings(published):
    state, _, vectors, as_of = published
    assert read_recent_items(feature_store(state), [1, 2, 7]) == [[20, 30], [20], None]
    later = datetime.now(UTC)
    assert refresh_user_features(state, pd.DataFrame(
        {"user_id": [2, 2], "item_id": [20, 10], "timestamp": [5, 6]}), later, recent_n=2) == 1
    assert read_recent_items(feature_store(state), [1, 2]) == [[20, 30], [20, 10]]
    history = feature_store(state).get_historical_features(
        entity_df=pd.DataFrame({"user_id": [2, 2], "event_timestamp": [as_of, later]}),
        features=["user_recent_items:recent_items"]).to_df().sort_values("event_timestamp")
    assert [list(v) for v in history["recent_items"]] == [[20], [20, 10]]  # point in time
    online = feature_store(state).get_online_features(
        features=["item_embeddings:embedding", "item_embeddings:embedding_version"],
        entity_rows=[{"item_id": 20}]).to_dict()
    np.testing.assert_allclose(online["embedding"][0], vectors[1], rtol=1e-6)
    assert online["embedding_version"] == ["v1"]


def test_another_online_store_by_configuration_keeps_its_secrets_out_of_the_model(
        tmp_path, monkeypatch):
    template = tmp_path / "feature_store.yaml"
    template.write_text("registry: ${LLMSEQREC_HOME}/feast/registry.db\n"
                        "online_store:\n  type: redis\n  connection_string: ${REDIS_URL}\n")
    monkeypatch.setenv(FEATURE_STORE_TEMPLATE, str(template))
    with pytest.raises(KeyError, match="uses \\$\\{REDIS_URL\\}, which is not set"):
        store_config(tmp_path / "state")
    monkeypatch.setenv("REDIS_URL", "127.0.0.1:6379,password=s3cret")
    rendered = store_config(tmp_path / "state")
    assert f"{tmp_path}/state/feast/registry.db" in rendered and "password=s3cret" in rendered
    logged = store_config(tmp_path / "state", expand_env=False)  # what goes with a model
    assert "${REDIS_URL}" in logged and "s3cret" not in logged
    assert f"{tmp_path}/state/feast/registry.db" in logged
