import math
from dataclasses import fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from configs import model_config

from training.model import (
    EmbeddingVersionError,
    ModelConfig,
    RDropLoss,
    SeqRec,
    TextTable,
    pca_whitening,
)
from training.train import grown_model


def tiny(**overrides) -> ModelConfig:
    return model_config(**({"num_items": 30, "max_len": 8, "hidden": 16, "layers": 2, "heads": 2,
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


@pytest.mark.parametrize("block", ["sasrec", "prenorm"])
def test_last_position_alone_is_the_last_row_of_every_position(block):
    model = SeqRec(tiny(block=block), text_table(tiny())).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    every = model.encode(seq)
    last = model.encode(seq, last_only=True)
    assert last.shape == (2, 1, tiny().hidden)
    torch.testing.assert_close(last[:, 0], every[:, -1])
    assert not torch.allclose(last[:, 0], every[:, -2])  # not some other position's state


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


@pytest.mark.parametrize("block, output_dropout", [("sasrec", 0.0), ("prenorm", 0.3)])
def test_attention_output_dropout_only_in_the_prenorm_block(block, output_dropout):
    """SASRec's attention drops its weights only; GPT-2's also drops the projected output."""
    model = SeqRec(tiny(block=block, dropout=0.3), text_table(tiny()))
    assert all(b.attn.dropout == 0.3 and output_rate(b.attn) == output_dropout
               for b in model.blocks)


def output_rate(attention: torch.nn.Module) -> float:
    """The dropout rate of an attention's projected output."""
    resid = attention.resid_dropout
    return resid.p if isinstance(resid, torch.nn.Dropout) else 0.0


@pytest.mark.parametrize("block", ["sasrec", "prenorm"])
def test_set_dropout_moves_every_rate_and_keeps_the_blocks_wiring(block):
    model = SeqRec(tiny(block=block, dropout=0.3), text_table(tiny()))
    model.set_dropout(0.1)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and set(rates) == {0.1}
    assert all(b.attn.dropout == 0.1 for b in model.blocks)
    assert all(output_rate(b.attn) == (0.0 if block == "sasrec" else 0.1)
               for b in model.blocks)


def test_every_config_field_reaches_the_model(monkeypatch):
    cfg = tiny(num_items=40, max_len=6, hidden=24, layers=3, heads=4, dropout=0.3, text_dim=10,
               embedding_version="v7", loss="sampled", negatives=5, whiten_text=True,
               repeat_bias=True, id_dropout=0.5, block="sasrec", positions="relative",
               consistency=0.5, adapter_width=20, text_match_window=3)
    model = SeqRec(cfg, TextTable(torch.randn(40, 10), "v7"))
    sampled, passes = [], []
    monkeypatch.setattr(torch, "randint", record(torch.randint, sampled))
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: passes.append(1) or encode(*a, **k))
    model(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))
    seen = {
        "num_items": model.item_id.num_embeddings == 41 and model.item_text.shape[0] == 41,
        "max_len": model.distance_bias.shape[1] == 6,
        "hidden": model.ln_f.normalized_shape == (24,),
        "layers": len(model.blocks) == 3,
        "heads": all(b.attn.heads == 4 for b in model.blocks),
        "dropout": model.drop.p == 0.3 and all(b.attn.dropout == 0.3 for b in model.blocks),
        "item_repr": hasattr(model, "item_id") and hasattr(model, "text_adapter"),
        "text_dim": model.text_adapter[0].in_features == 10,
        "adapter_width": model.text_adapter[2].in_features == 20,
        "embedding_version": model.cfg.embedding_version == "v7",
        "loss": sampled == [(1, 41, (5,))] and hasattr(model, "target_share"),
        "negatives": sampled == [(1, 41, (5,))],  # uniform negatives: the sampled softmax
        "whiten_text": model.text_whitening.shape == (10, 10),
        "repeat_bias": isinstance(model.repeat_bias, torch.nn.Parameter),
        "id_dropout": 0 < dropped_id_rows(model) < 41,
        "block": all(b.mlp[0].out_features == 24 and b.sasrec for b in model.blocks),
        "positions": model.distance_bias.shape == (4, 6) and not hasattr(model, "pos"),
        "consistency": len(passes) == 2,  # a training step: two passes
        "text_match_window": torch.allclose(  # item 5's match reads items 2, 3, 4
            model.text_matches(torch.tensor([[1, 2, 3, 4]]))[0, 5],
            (model.match_table[[2, 3, 4]] @ model.match_table[5]).mean()),
    }
    assert set(seen) == {f.name for f in fields(ModelConfig)}
    assert all(seen.values()), seen
    assert not hasattr(SeqRec(tiny(item_repr="id", text_dim=0)), "text_adapter")
    assert not hasattr(SeqRec(tiny(item_repr="text"), text_table(tiny())), "item_id")
    plain = SeqRec(tiny(), text_table(tiny()))
    assert not hasattr(plain, "text_whitening") and not hasattr(plain, "repeat_bias")
    assert not hasattr(plain, "text_match")
    assert plain.pos.num_embeddings == 8 and not hasattr(plain, "distance_bias")


@pytest.mark.parametrize("positions", ["absolute", "relative"])
def test_relative_positions_read_a_prefix_as_the_whole_history_it_would_be(positions):
    torch.manual_seed(0)
    model = SeqRec(tiny(item_repr="id", text_dim=0, positions=positions)).eval()
    with torch.no_grad():
        for p in model.parameters():  # no bias at zero, so distances matter
            p.add_(torch.randn_like(p) * 0.1)
    window = torch.tensor([[0, 3, 7, 9, 11, 4, 5, 6]])
    prefix = torch.tensor([[0, 0, 0, 0, 3, 7, 9, 11]])  # the window up to item 11, padded
    inside = model.encode(window)[0, 4]  # after item 11 within the window
    alone = model.encode(prefix)[0, -1]
    assert torch.allclose(inside, alone, atol=1e-5) == (positions == "relative")


def dropped_id_rows(model: SeqRec) -> int:
    """How many items score from their text alone in one training step."""
    model.eval()
    text_only = model.item_embeddings() - model.item_id.weight
    model.train()
    return int(torch.isclose(model.item_embeddings(), text_only).all(1).sum())


def test_id_dropout_leaves_out_whole_id_rows_in_training_only():
    torch.manual_seed(0)
    cfg = tiny(num_items=2000, id_dropout=0.25)
    model = SeqRec(cfg, TextTable(torch.randn(2000, cfg.text_dim), "v1"))
    assert 400 < dropped_id_rows(model) < 600  # about a quarter of 2,001 rows
    model.eval()
    text_only = model.item_embeddings() - model.item_id.weight
    assert not torch.isclose(model.item_embeddings(), text_only).all(1).any()


def test_whitened_text_has_zero_mean_and_unit_covariance():
    torch.manual_seed(0)
    vectors = torch.randn(500, 6) @ torch.randn(6, 6) + 3.0  # correlated, off centre
    mean, matrix = pca_whitening(vectors, eps=0.0)
    white = (vectors - mean) @ matrix
    torch.testing.assert_close(white.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), torch.eye(6), atol=1e-3, rtol=0)


def test_whitening_is_saved_with_the_weights():
    cfg = tiny(whiten_text=True)
    model = SeqRec(cfg, text_table(cfg))
    assert {"text_mean", "text_whitening"} <= set(model.state_dict())
    grown = SeqRec(cfg, TextTable(torch.randn(cfg.num_items, cfg.text_dim), "v1"))
    grown.load_state_dict(model.state_dict())  # another table keeps the transform it learned on
    torch.testing.assert_close(grown.text_whitening, model.text_whitening)


def test_the_adapter_reads_the_whitened_text():
    cfg = tiny(item_repr="text", whiten_text=True)
    model = SeqRec(cfg, text_table(cfg))
    white = (model.item_text - model.text_mean) @ model.text_whitening  # (n + 1, text_dim)
    torch.testing.assert_close(model.item_embeddings(), model.text_adapter(white))


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_repeat_bias_shifts_the_items_seen_up_to_each_position(loss):
    cfg = tiny(repeat_bias=True, loss=loss, negatives=40)
    model = SeqRec(cfg, text_table(cfg)).eval()
    seq = torch.tensor([[4, 5, 6]])
    before = model.score_next(seq)
    with torch.no_grad():
        model.repeat_bias.fill_(2.5)
    shift = model.score_next(seq) - before  # (1, n)
    torch.testing.assert_close(shift[0, [4, 5, 6]], torch.full((3,), 2.5))
    assert shift[0, [1, 2, 3, 7]].abs().max() < 1e-5
    # training: each target competes only with the items seen up to its position
    with torch.no_grad():
        model.item_id.weight.zero_()
        model.text_adapter[-1].weight.zero_()
        model.text_adapter[-1].bias.zero_()  # every item scores 0 but for its shift
        model.repeat_bias.fill_(50.0)
    seen = model(seq, torch.tensor([[4, 5, 6]]))  # each target is the item just seen
    if loss == "ce":  # a softmax over the t + 1 items seen at position t
        expected = torch.tensor([0.0, math.log(2), math.log(3)])
        torch.testing.assert_close(seen, expected, atol=1e-4, rtol=0)
    assert seen[0] < 1e-4
    future = model(seq, torch.tensor([[5, 6, 7]]))  # 5 and 6 come later than they are asked
    assert (future > seen + 1).all()


@pytest.mark.parametrize("whiten_text", [False, True])
def test_the_text_match_adds_its_weight_times_the_mean_cosine_of_the_latest_items(whiten_text):
    cfg = tiny(text_match_window=2, whiten_text=whiten_text)
    table = text_table(cfg)
    model = SeqRec(cfg, table).eval()
    text = table.vectors
    if whiten_text:
        text = (text - model.text_mean) @ model.text_whitening
    unit = F.normalize(text, dim=1)  # row i: item i + 1
    seq = torch.tensor([[0, 1, 7, 3]])  # the window: items 7 and 3
    expected = (unit[[6, 2]].mean(0) @ unit.T)  # (n,) of items 1..n
    expected[[0, 6, 2]] = 0.0  # the history's own items: left to the repeat shift
    before = model.score_next(seq)  # weight 0: the match is not computed
    model.set_text_match(1.5)
    torch.testing.assert_close((model.score_next(seq) - before)[0, 1:], 1.5 * expected)
    assert "text_match" in model.state_dict() and "match_table" not in model.state_dict()


def test_an_item_new_to_the_catalog_is_matched_by_its_text_and_keeps_the_weight():
    cfg = tiny(text_match_window=1, whiten_text=True)
    table = text_table(cfg)
    model = SeqRec(cfg, table).eval()
    model.set_text_match(3.0)
    grown_text = torch.cat([table.vectors, table.vectors[4:5]])  # item 31 reads as item 5
    grown = grown_model(model, np.arange(1, 31), np.arange(1, 32), TextTable(grown_text, "v1"))
    assert grown.text_match == 3.0 and grown.matching  # under the whitening it was fitted with
    torch.testing.assert_close(grown.text_whitening, model.text_whitening)
    matches = grown.text_matches(torch.tensor([[2, 5]]))[0]
    assert matches[31] == pytest.approx(1.0) and matches[31] == matches[1:].max()


def test_text_mode_scores_come_from_text():
    cfg = tiny(item_repr="text")
    table = text_table(cfg)
    table.vectors[4] = table.vectors[5]  # items 5 and 6 have the same text: they score the same
    model = SeqRec(cfg, table).eval()
    scores = model.score_next(torch.tensor([[1, 2, 3]]))
    torch.testing.assert_close(scores[0, 5], scores[0, 6])


@pytest.mark.parametrize("bad", [{"item_repr": "image"}, {"item_repr": "text", "text_dim": 0},
                                 {"hidden": 10, "heads": 3}, {"loss": "bce"},
                                 {"negatives": 0}, {"id_dropout": 1.0}, {"consistency": -0.1},
                                 {"adapter_width": 0}, {"text_match_window": -1},
                                 {"item_repr": "id", "text_dim": 0, "text_match_window": 2}])
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


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_loss_is_cross_entropy_over_items_from_one_and_r_drop_by_hand(weight):
    cfg = tiny(item_repr="id", text_dim=0, dropout=0.3, consistency=weight)
    model = SeqRec(cfg)
    seq, targets = torch.tensor([[0, 4, 5, 9], [3, 8, 2, 7]]), torch.tensor([[4, 5, 9, 1],
                                                                             [8, 2, 7, 30]])
    torch.manual_seed(1)
    loss = model(seq, targets)  # (7,): the targets with a history
    torch.manual_seed(1)  # the same dropout masks, pass by pass
    items = model.item_embeddings()
    keep = (targets > 0) & (seq > 0)
    log_probs = [(model.encode(seq, items)[keep] @ items[1:].T).log_softmax(1)
                 for _ in range(2 if weight else 1)]
    ce = torch.stack([F.cross_entropy(p, targets[keep] - 1, reduction="none")
                      for p in log_probs]).mean(0)
    kl = (F.kl_div(log_probs[-1], log_probs[0], log_target=True, reduction="none").sum(1)
          + F.kl_div(log_probs[0], log_probs[-1], log_target=True, reduction="none").sum(1))
    torch.testing.assert_close(loss, ce + weight / 2 * kl)
    assert weight == 0 or kl.min() > 0  # two passes, two masks
    torch.testing.assert_close(model.eval()(seq, targets),  # evaluation: one pass, no dropout
                               F.cross_entropy(model.encode(seq)[keep] @ items[1:].T,
                                               targets[keep] - 1, reduction="none"))


def test_r_drop_gradient_written_out_is_the_expressions_own():
    torch.manual_seed(0)
    a, b = (torch.randn(5, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    labels = torch.tensor([0, 3, 6, 2, 2])
    assert torch.autograd.gradcheck(lambda x, y: RDropLoss.apply(x, y, labels, 0.7), (a, b))


def test_sampled_softmax_over_the_whole_catalog_is_the_full_cross_entropy():
    torch.manual_seed(0)
    full = SeqRec(tiny(repeat_bias=True), text_table(tiny())).eval()
    sampled = SeqRec(tiny(repeat_bias=True, loss="sampled", negatives=30), text_table(tiny()))
    sampled.load_state_dict(full.state_dict())  # the share it samples by is not a weight
    with torch.no_grad():
        full.repeat_bias.fill_(1.5)
        sampled.repeat_bias.fill_(1.5)
    batch = torch.randint(1, 31, (4, 9))
    torch.testing.assert_close(sampled.eval()(batch[:, :-1], batch[:, 1:]),
                               full(batch[:, :-1], batch[:, 1:]))


def test_sampled_candidates_and_their_correction_by_hand(monkeypatch):
    model = SeqRec(tiny(loss="sampled", negatives=5, repeat_bias=True), text_table(tiny()))
    model.target_share.zero_()
    model.target_share[[3, 7]] = torch.tensor([0.5, 0.1], dtype=torch.float64)
    monkeypatch.setattr(torch, "randint", lambda *a, **k: torch.tensor([1, 3, 9, 9, 20]))
    candidates, log_q = model.sampled_candidates(torch.tensor([3, 3, 7]))
    assert candidates.tolist() == [1, 3, 7, 9, 20]  # the batch's targets and the draws, once
    uniform_miss = (29 / 30) ** 5  # not among 5 uniform draws
    expected = [math.log(1 - uniform_miss), math.log(1 - 0.5**3 * uniform_miss),
                math.log(1 - 0.9**3 * uniform_miss)]
    torch.testing.assert_close(log_q[:3], torch.tensor(expected))
    histories = torch.tensor([[0, 3, 9, 9], [0, 0, 2, 20]])  # item 2 is no candidate
    with torch.no_grad():
        model.repeat_bias.fill_(0.7)
        only = model.shift_repeats_(torch.zeros(2, len(candidates)), histories, candidates)
        every = model.shift_repeats_(torch.zeros(2, 31), histories)
    torch.testing.assert_close(only, every[:, candidates])
    # 9 held twice, shifted once
    torch.testing.assert_close(only, torch.tensor([[0, 0.7, 0, 0.7, 0], [0, 0, 0, 0, 0.7]]))


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_repeat_bias_learns_from_the_seen_items_of_each_target(loss):
    cfg = tiny(repeat_bias=True, loss=loss, negatives=100)  # sampled: every item a candidate
    model = SeqRec(cfg, text_table(cfg)).eval()
    with torch.no_grad():
        model.repeat_bias.fill_(0.8)
    seq, targets = torch.tensor([[0, 4, 5, 4, 6]]), torch.tensor([[4, 5, 4, 6, 5]])
    model(seq, targets).sum().backward()
    # by hand: d loss / d bias = probability mass on the seen items - [target seen], per target
    with torch.no_grad():
        h = model.encode(seq)[0, 1:]  # the four targets with a history
        seen = torch.zeros(4, cfg.num_items + 1)
        for t in range(4):
            seen[t, seq[0, 1 : t + 2]] = 1.0
        probs = (h @ model.item_embeddings().T + 0.8 * seen)[:, 1:].softmax(1)  # (4, n)
        expected = (probs * seen[:, 1:]).sum() - seen[torch.arange(4), targets[0, 1:]].sum()
    torch.testing.assert_close(model.repeat_bias.grad, expected)


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_the_loss_under_bf16_autocast_as_on_a_gpu(loss):
    cfg = tiny(repeat_bias=True, loss=loss, negatives=100)  # sampled: every item a candidate
    model = SeqRec(cfg, text_table(cfg))
    with torch.no_grad():
        model.repeat_bias.fill_(0.8)
    batch = torch.randint(1, 31, (4, 9))
    exact = model(batch[:, :-1], batch[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what training does on CUDA
        low = model(batch[:, :-1], batch[:, 1:])
    low.sum().backward()
    assert low.dtype == torch.float32 and model.repeat_bias.grad is not None
    torch.testing.assert_close(low, exact, atol=0.1, rtol=0.05)
