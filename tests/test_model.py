import math
from dataclasses import fields

import pytest
import torch

from training.model import (
    EmbeddingVersionError,
    ModelConfig,
    SeqRec,
    TextTable,
    next_item_loss,
    sampled_softmax_loss,
)


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**({"num_items": 30, "max_len": 8, "hidden": 16, "layers": 2, "heads": 2,
                           "dropout": 0.0, "item_repr": "hybrid", "text_dim": 12,
                           "embedding_version": "v1"} | overrides))


def text_table(cfg: ModelConfig, version: str = "v1") -> TextTable:
    torch.manual_seed(0)
    return TextTable(torch.randn(cfg.num_items, cfg.text_dim), version)


@pytest.mark.parametrize("item_repr", ["id", "text", "hybrid"])
def test_shapes(item_repr):
    cfg = tiny(item_repr=item_repr, text_dim=0 if item_repr == "id" else 12)
    model = SeqRec(cfg, None if item_repr == "id" else text_table(cfg))
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert model.encode(seq).shape == (2, 5, cfg.hidden)
    scores = model.score_next(seq)
    assert scores.shape == (2, cfg.num_items + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert model(seq[:, :-1], seq[:, 1:]).shape == (6,)  # one loss per target with a history


def test_left_padding_does_not_change_the_answer():
    model = SeqRec(tiny(), text_table(tiny())).eval()
    short = torch.tensor([[7, 8, 9]])
    padded = torch.tensor([[0, 0, 0, 0, 7, 8, 9]])
    torch.testing.assert_close(model.score_next(short), model.score_next(padded))


def test_history_longer_than_max_len_reads_only_the_latest_items():
    model = SeqRec(tiny(max_len=4), text_table(tiny())).eval()
    long = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    torch.testing.assert_close(model.score_next(long), model.score_next(long[:, -4:]))


def test_prediction_depends_only_on_the_past():
    model = SeqRec(tiny(), text_table(tiny())).eval()
    a = model.encode(torch.tensor([[1, 2, 3, 4]]))
    b = model.encode(torch.tensor([[1, 2, 3, 9]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_tiny_model_overfits_one_batch(loss):
    torch.manual_seed(0)
    cfg = tiny(loss=loss, negatives=20)
    model = SeqRec(cfg, text_table(cfg))
    batch = torch.randint(1, cfg.num_items + 1, (8, cfg.max_len + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss = model(batch[:, :-1], batch[:, 1:]).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 2.5 and loss.item() < 0.1


def record(randint, calls: list):
    def wrapper(low, high, size, **kwargs):
        calls.append((low, high, tuple(size)))
        return randint(low, high, size, **kwargs)
    return wrapper


def test_every_config_field_reaches_the_model(monkeypatch):
    cfg = tiny(num_items=40, max_len=6, hidden=24, layers=3, heads=4, dropout=0.3, text_dim=10,
               embedding_version="v7", loss="sampled", negatives=5)
    model = SeqRec(cfg, TextTable(torch.randn(40, 10), "v7"))
    sampled = []
    monkeypatch.setattr(torch, "randint", record(torch.randint, sampled))
    model(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))
    seen = {
        "num_items": model.item_id.num_embeddings == 41 and model.item_text.shape[0] == 41,
        "max_len": model.pos.num_embeddings == 6,
        "hidden": model.ln_f.normalized_shape == (24,),
        "layers": len(model.blocks) == 3,
        "heads": all(b.attn.heads == 4 for b in model.blocks),
        "dropout": model.drop.p == 0.3 and all(b.attn.dropout == 0.3 for b in model.blocks),
        "item_repr": hasattr(model, "item_id") and hasattr(model, "text_adapter"),
        "text_dim": model.text_adapter[0].in_features == 10,
        "embedding_version": model.cfg.embedding_version == "v7",
        "loss": sampled == [(1, 41, (5,))],  # uniform negatives: the sampled softmax
        "negatives": sampled == [(1, 41, (5,))],
    }
    assert set(seen) == {f.name for f in fields(ModelConfig)}
    assert all(seen.values()), seen
    assert not hasattr(SeqRec(tiny(item_repr="id", text_dim=0)), "text_adapter")
    assert not hasattr(SeqRec(tiny(item_repr="text"), text_table(tiny())), "item_id")


def test_text_mode_scores_come_from_text():
    cfg = tiny(item_repr="text")
    table = text_table(cfg)
    table.vectors[4] = table.vectors[5]  # items 5 and 6 have the same text: they score the same
    model = SeqRec(cfg, table).eval()
    scores = model.score_next(torch.tensor([[1, 2, 3]]))
    torch.testing.assert_close(scores[0, 5], scores[0, 6])


@pytest.mark.parametrize("bad", [{"item_repr": "image"}, {"item_repr": "text", "text_dim": 0},
                                 {"hidden": 10, "heads": 3}, {"loss": "bce"},
                                 {"negatives": 0}])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        tiny(**bad)


def test_wrong_text_table_is_refused():
    with pytest.raises(ValueError, match="shape"):
        SeqRec(tiny(), TextTable(torch.randn(5, 12), "v1"))
    with pytest.raises(EmbeddingVersionError, match="takes embeddings of version 'v1', not 'v2'"):
        SeqRec(tiny(), text_table(tiny(), version="v2"))
    with pytest.raises(ValueError, match="needs the LLM text table"):
        SeqRec(tiny())


def test_text_table_is_an_input_not_a_weight():
    model = SeqRec(tiny(), text_table(tiny()))
    assert "item_text" not in model.state_dict()
    again = SeqRec(tiny(), text_table(tiny()))
    again.load_state_dict(model.state_dict())  # strict: nothing missing, nothing extra


def test_loss_is_cross_entropy_over_items_from_one():
    logits = torch.tensor([[0.0, 0.0, 10.0], [10.0, 0.0, 0.0]])  # items 1..3
    assert next_item_loss(logits, torch.tensor([3, 1])).max().item() < 1e-3
    assert next_item_loss(logits, torch.tensor([1, 3])).min().item() > 9


def test_sampled_softmax_by_hand():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # padding, items 1..3
    h = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    targets = torch.tensor([1, 2])
    negatives = torch.tensor([1, 3])  # item 1 is the first row's target: masked there
    loss = sampled_softmax_loss(h, items, targets, negatives)
    # row 1: positive 2, negatives [masked, 2]; row 2: positive 3, negatives [0, 3]
    expected = torch.tensor([math.log(1 + math.exp(0)), math.log(1 + math.exp(-3) + 1)])
    torch.testing.assert_close(loss, expected)
