"""The text encoder tuned on the recommendation signal: it learns from training sequences only,
brings an item's text nearer the next item's, is named by its weights' hash (so its embedding
version differs from the base's), and the tune-encoder flow logs it to MLflow, publishes the
catalog's vectors with it, and embeds a new catalog item with it at ingest time."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from cycle_data import cycle_log, stored, with_item_at
from mlflow import MlflowClient

from features.embeddings import embedding_version
from features.encoder import EncoderConfig, ItemEncoder
from features.encoder_tuning import (
    TUNING_FILE,
    TuningConfig,
    contrastive_loss,
    next_item_pairs,
    tune_encoder,
    tune_on_interactions,
)
from features.store import feature_store, published_embedding_version, read_online_items
from flows.ingest import ingest_inbox
from flows.tune_encoder import ENCODER_ARTIFACT
from flows.tune_encoder import tune_encoder as tune_encoder_flow
from ingestion.catalog_batches import catalog_inbox

BASE = ItemEncoder()  # the bundled MiniLM
TINY = TuningConfig(steps=3, batch_pairs=8, max_length=16, lr=1e-4)


def test_pairs_are_consecutive_different_items_of_the_sequences_given():
    pairs = next_item_pairs([np.array([1, 2, 2, 3]), np.array([5]), np.array([4, 1])])
    assert pairs.tolist() == [[1, 2], [2, 3], [4, 1]]


def test_a_pair_with_the_same_positive_is_not_a_negative():
    v = torch.eye(2)[[0, 0, 1]]  # pairs 0 and 1 are the same item pair
    positives = torch.tensor([0, 0, 1])
    masked = contrastive_loss(v, v, positives[:, None] == positives[None, :], 0.1)
    unmasked = contrastive_loss(v, v, torch.zeros(3, 3, dtype=torch.bool), 0.1)
    assert masked < unmasked - 0.1  # pair 1's positive no longer counts against pair 0


def test_the_tuned_copy_never_learns_from_a_validation_or_test_target(tmp_path):
    interactions, items = cycle_log()

    def tuned(data) -> str:
        return tune_on_interactions(BASE, data, items, ("title",), TINY, tmp_path,
                                    progress=False).name

    reference = tuned(interactions)
    assert tuned(with_item_at(interactions, 1)) == reference  # the test targets changed
    assert tuned(with_item_at(interactions, 2)) == reference  # the validation targets
    assert tuned(with_item_at(interactions, 3)) != reference  # a training item


def test_tuning_brings_the_next_item_nearer_and_names_the_copy_by_its_weights(tmp_path):
    texts = ["Red lipstick, matte.", "Garden hose, brass nozzle.", "Blue jeans, slim fit.",
             "Cast iron skillet.", "Running shoes, light.", "Desk lamp, warm light."]
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    tuned = tune_encoder(BASE, texts, pairs, TuningConfig(steps=30, batch_pairs=3, lr=2e-4),
                         tmp_path, progress=False)
    before, after = BASE.encode(texts), ItemEncoder(EncoderConfig(model=str(tuned))).encode(texts)

    def margin(v):  # a pair's similarity above that of the other items to the first one
        return np.mean([v[a] @ v[b] - np.mean([v[a] @ v[o] for o in range(6) if o not in (a, b)])
                        for a, b in pairs])

    assert margin(after) > margin(before) + 0.1
    copy = ItemEncoder(EncoderConfig(model=str(tuned)))
    assert copy.revision != BASE.revision and tuned.name.startswith("minilm-tuned-")
    assert embedding_version(copy, ("title",)) != embedding_version(BASE, ("title",))
    assert (tuned / TUNING_FILE).is_file() and (tuned / "tokenizer.json").is_file()


@pytest.mark.e2e  # real Prefect flow runs, a real MLflow store and Feast repo
def test_the_flow_logs_the_copy_publishes_its_vectors_and_new_items_get_them(
        tmp_path, prefect_harness):
    stores = stored(*cycle_log(), tmp_path / "state")
    result = tune_encoder_flow(state_dir=stores.state_dir, tuning=TINY)
    tuned = Path(result["encoder"])
    assert tuned.parent == stores.state_dir / "encoders"
    assert published_embedding_version(stores.state_dir) == result["embedding_version"]

    mlflow.set_tracking_uri(stores.tracking_uri)
    run = MlflowClient().get_run(result["run_id"])
    assert run.data.tags["embedding_version"] == result["embedding_version"]
    assert int(run.data.params["steps"]) == TINY.steps and run.data.metrics["pairs"] > 0
    logged = Path(mlflow.artifacts.download_artifacts(
        run_id=result["run_id"], artifact_path=ENCODER_ARTIFACT, dst_path=str(tmp_path / "dl")))
    assert (logged / "model.safetensors").read_bytes() == \
        (tuned / "model.safetensors").read_bytes()

    # a new catalog item, ingested with the tuned encoder, gets a vector of its version
    catalog_inbox(stores).mkdir(parents=True, exist_ok=True)
    (catalog_inbox(stores) / "new.csv").write_text("item_id,title\n31,Item 31\n")
    ingest_inbox(state_dir=stores.state_dir, data_docs=False, encoder=str(tuned))
    online = read_online_items(feature_store(stores.state_dir), np.array([31]))
    assert online["embedding_version"].tolist() == [result["embedding_version"]]
