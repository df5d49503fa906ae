"""One source of settings: every RetrainParams field reaches what it configures, and every
field is a command-line option with its help and its default."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from llmseqrec.cli import app
from serving.gate import Gate
from training.model import TextTable
from training.params import ID_ONLY, ID_ONLY_LONG, WITH_TEXT, RetrainParams
from training.sequences import cut_share, training_windows

TEXT = TextTable(torch.zeros(10, 4), "v1")
CHANGED = {"item_repr": "text", "max_len": 7, "hidden": 32, "layers": 3, "heads": 2,
           "block": "sasrec", "positions": "relative", "dropout": 0.4, "dropout_warmup": 3,
           "consistency": 0.5, "adapter_width": 48, "text_match_window": 2,
           "loss": "sampled", "negatives": 9, "whiten_text": False,
           "repeat_bias": False, "id_dropout": 0.25, "epochs": 3, "patience": 2,
           "batch_size": 8, "lr": 0.01, "lr_decay": 0.3, "lr_patience": 2,
           "weight_decay": 0.1, "seed": 7, "margin": 0.2, "slice_tolerance": 0.3, "p95_ms": 5.0}


def built(params: RetrainParams) -> tuple:
    return params.model(10, TEXT, []), params.training(), Gate.of(params)


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_every_setting_reaches_the_model_its_training_or_the_gate(name):
    assert built(RetrainParams(**{name: CHANGED[name]})) != built(RetrainParams())


def test_the_settings_above_are_all_of_them():
    assert set(RetrainParams.model_fields) == set(CHANGED) | {"warm_start"}  # fit reads it


def test_the_adapter_is_as_wide_as_the_transformer_unless_given():
    assert RetrainParams(hidden=32).model(10, TEXT, []).adapter_width == 32
    assert RetrainParams(hidden=32).resolved().adapter_width == 32  # what a run records
    assert RetrainParams(hidden=32, adapter_width=256).model(10, TEXT, []).adapter_width == 256


def test_whitening_id_dropout_and_the_text_match_are_recorded_only_where_they_act():
    cfg = RetrainParams(item_repr="id").model(10, None, [])
    assert (cfg.whiten_text, cfg.id_dropout, cfg.text_dim, cfg.text_match_window) == (
        False, 0.0, 0, 0)
    cfg = RetrainParams(item_repr="text").model(10, TEXT, [])
    assert (cfg.whiten_text, cfg.id_dropout, cfg.text_dim, cfg.text_match_window) == (
        True, 0.0, 4, 5)


@pytest.mark.parametrize("item_repr, own", [("id", ID_ONLY), ("text", WITH_TEXT),
                                             ("hybrid", WITH_TEXT)])
def test_a_setting_left_unset_takes_its_representations_default_and_a_given_one_wins(
        item_repr, own):
    text = None if item_repr == "id" else TEXT
    params = RetrainParams(item_repr=item_repr)
    cfg = params.model(10, text, [])
    assert (cfg.block, cfg.dropout) == (own["block"], own["dropout"])
    assert params.resolved().model_dump() == params.model_dump() | own | {
        "adapter_width": params.hidden}
    cfg = RetrainParams(item_repr=item_repr, block="sasrec", dropout=0.0).model(10, text, [])
    assert (cfg.block, cfg.dropout) == ("sasrec", 0.0)


def test_cut_share_counts_the_targets_of_every_window_but_each_users_last():
    rng = np.random.default_rng(0)
    train = [np.arange(1, n + 1) for n in rng.integers(0, 40, size=50)]
    windows = training_windows(train, 7)
    last = sum(len(training_windows([s], 7)[0]) - 1 for s in train if len(s) > 1)
    assert cut_share(train, 7) == pytest.approx(1 - last / sum(len(w) - 1 for w in windows))
    assert cut_share([np.arange(1, 9)], 7) == 0.0 and cut_share([], 7) == 0.0


@pytest.mark.parametrize("lengths, long", [((30,), True), ((4, 6, 30), True), ((9,), False),
                                           ((4, 6, 8), False)])
def test_long_histories_are_read_by_distance_and_take_less_id_only_dropout(lengths, long):
    train = [np.arange(1, n + 1) for n in lengths]  # windows of 6 items: 5 targets each
    def chosen(item_repr: str = "id", **given) -> tuple[str, float]:
        params = RetrainParams(item_repr=item_repr, max_len=5, **given)
        cfg = params.model(40, None if item_repr == "id" else TEXT, train)
        recorded = params.resolved(train)
        assert (recorded.positions, recorded.dropout) == (cfg.positions, cfg.dropout)
        return cfg.positions, cfg.dropout

    expected = ("relative", ID_ONLY_LONG["dropout"]) if long else ("absolute", ID_ONLY["dropout"])
    assert chosen() == expected
    assert chosen("hybrid")[1] == WITH_TEXT["dropout"]  # the fused model's, either way
    other = "absolute" if long else "relative"
    assert chosen(positions=other, dropout=0.1) == (other, 0.1)  # given ones win


def test_every_setting_is_an_option_of_run_with_its_help():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, field in RetrainParams.model_fields.items():
        assert f"--{name.replace('_', '-')}" in result.output
        assert field.description.split()[0] in result.output


def test_a_setting_out_of_range_is_a_clear_error():
    result = CliRunner().invoke(app, ["run", "--dropout", "1.5"])
    assert result.exit_code == 2
    assert "dropout" in result.output and "less than 1" in result.output
