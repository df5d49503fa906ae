import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from configs import model_config, train_config
from ddp_worker import curve, synthetic_split

from training.evaluate import evaluate_targets, model_scorer
from training.model import ModelConfig, SeqRec, TextTable
from training.train import grown_state, train_model


@pytest.mark.e2e  # two processes started by a real torchrun
def test_ddp_on_two_cpu_processes_follows_the_single_process_curve(tmp_path, free_port):
    out = tmp_path / "ddp.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(free_port), str(Path(__file__).with_name("ddp_worker.py")),
                    str(out)], check=True, env=env, timeout=300)
    ddp = json.loads(out.read_text())
    alone = curve()
    assert len(ddp) == len(alone) == 3 and alone[-1] < alone[0]  # it learns
    np.testing.assert_allclose(ddp, alone, rtol=1e-4)


def text_cfg(**overrides) -> ModelConfig:
    return model_config(**({"num_items": 30, "max_len": 8, "hidden": 16, "layers": 1,
                            "heads": 2, "dropout": 0.0, "item_repr": "text", "text_dim": 12,
                            "embedding_version": "v1"} | overrides))


def test_text_model_scores_an_item_never_seen_in_training():
    split = synthetic_split()
    unseen = 31  # beyond every training sequence: it has only its text
    vectors = torch.randn(31, 12, generator=torch.Generator().manual_seed(0))
    vectors[unseen - 1] = vectors[4]  # the same text as item 5
    cfg = text_cfg(num_items=31)
    model = train_model(split, cfg, train_config(epochs=2, batch_size=16),
                        TextTable(vectors, "v1")).model
    assert not any(unseen in s for s in split.train)
    scores = model.score_next(torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(scores[0, unseen])
    torch.testing.assert_close(scores[0, unseen], scores[0, 5])


@pytest.mark.parametrize("item_repr", ["id", "hybrid"])
def test_warm_start_keeps_known_items_and_starts_new_ones_from_their_text(item_repr):
    text_dim = 0 if item_repr == "id" else 12
    old_cfg = text_cfg(item_repr=item_repr, text_dim=text_dim, num_items=3)
    text = TextTable(torch.randn(3, 12), "v1") if text_dim else None
    previous = SeqRec(old_cfg, text)
    old_items = np.array([10, 20, 30])  # catalog ids of model ids 1..3
    new_items = np.array([10, 15, 30, 40])  # 20 left the catalog; 15 and 40 are new
    cfg = text_cfg(item_repr=item_repr, text_dim=text_dim, num_items=4)
    state = grown_state(previous, old_items, cfg, new_items)
    old = previous.item_id.weight.detach()
    rows = state["item_id.weight"]
    assert rows.shape == (5, 16)
    torch.testing.assert_close(rows[[1, 3]], old[[1, 3]])  # items 10 and 30 keep their rows
    if item_repr == "hybrid":
        assert rows[[0, 2, 4]].abs().sum() == 0  # new items are their text alone
    else:
        assert rows[[2, 4]].abs().sum() > 0  # fresh random rows
    new = SeqRec(cfg, TextTable(torch.randn(4, 12), "v1") if text_dim else None)
    new.load_state_dict(state)  # strict
    torch.testing.assert_close(new.blocks[0].attn.qkv.weight, previous.blocks[0].attn.qkv.weight)


def test_the_text_match_takes_the_weight_best_on_validation():
    split = synthetic_split()  # the next item is one or two steps on: its text is alike
    angle = torch.arange(30) * 2 * torch.pi / 30  # items around a circle, as they are walked
    vectors = torch.stack([angle.cos(), angle.sin()], 1) @ torch.randn(2, 12)
    cfg = text_cfg(item_repr="hybrid", text_match_window=1, whiten_text=False)
    result = train_model(split, cfg, train_config(epochs=1), TextTable(vectors, "v1"))
    untouched = result.history[0]["valid_ndcg_at_10"]  # the trained model alone
    assert result.text_match_weight > 0 and result.model.text_match == result.text_match_weight
    assert result.valid_ndcg_at_10 > untouched
    assert result.valid_ndcg_at_10 == evaluate_targets(
        model_scorer(result.model, torch.device("cpu")), split.valid_history,
        split.valid_target)["ndcg_at_10"]
    plain = train_model(split, replace(cfg, text_match_window=0), train_config(epochs=1),
                        TextTable(vectors, "v1"))
    assert (plain.text_match_weight, plain.valid_ndcg_at_10) == (0.0, untouched)


def test_warm_start_refuses_another_architecture():
    previous = SeqRec(text_cfg(item_repr="id", text_dim=0))
    with pytest.raises(ValueError, match="same model settings"):
        grown_state(previous, np.arange(1, 31), text_cfg(item_repr="id", text_dim=0, hidden=32),
                    np.arange(1, 31))


def test_warm_started_training_begins_where_the_previous_model_was():
    split = synthetic_split()
    cfg = text_cfg(item_repr="id", text_dim=0)
    fit = train_config(epochs=1, batch_size=16, lr=1e-2)
    trained = train_model(split, cfg, replace(fit, epochs=30, patience=30))
    ids = np.arange(1, 31)
    warm = train_model(split, cfg, fit, init_state=grown_state(trained.model, ids, cfg, ids))
    cold = train_model(split, cfg, fit)
    assert warm.history[0]["loss"] < cold.history[0]["loss"] - 0.5


def test_a_probe_adds_its_figures_to_every_epoch_and_chooses_nothing():
    split = synthetic_split()
    cfg = text_cfg(item_repr="id", text_dim=0)
    fit = train_config(epochs=3, batch_size=16, patience=3)
    seen: list[bool] = []

    def probe(model: SeqRec) -> dict[str, float]:
        seen.append(model.training)
        return {"probe_item_norm": float(model.item_id.weight.norm())}

    probed = train_model(split, cfg, fit, probe=probe)
    plain = train_model(split, cfg, fit)
    assert seen == [False] * 3  # the model as evaluated, after each epoch
    assert len({r["probe_item_norm"] for r in probed.history}) == 3  # each epoch's weights
    assert probed.best_epoch == plain.best_epoch
    assert [r["valid_ndcg_at_10"] for r in probed.history] == \
        [r["valid_ndcg_at_10"] for r in plain.history]


def test_the_learning_rate_decays_when_validation_stops_improving():
    split = synthetic_split()
    cfg = text_cfg(item_repr="id", text_dim=0)
    fit = train_config(epochs=16, batch_size=16, lr=0.05, patience=16, lr_decay=0.5,
                       lr_patience=2)
    history = train_model(split, cfg, fit).history
    expected, lr, best, flat = [], 0.05, -1.0, 0
    for row in history:  # the rule: halve after 2 epochs in a row without a new best
        expected.append(lr)
        best, flat = (row["valid_ndcg_at_10"], 0) if row["valid_ndcg_at_10"] > best else (
            best, flat + 1)
        if flat == 2:
            lr, flat = lr / 2, 0
    assert [r["lr"] for r in history] == pytest.approx(expected)
    assert expected[-1] < 0.05  # it did decay


def test_dropout_rises_from_zero_to_its_rate_over_the_warm_up_steps(monkeypatch):
    split = synthetic_split()
    cfg = text_cfg(item_repr="id", text_dim=0, dropout=0.5)
    fit = train_config(epochs=3, batch_size=16, patience=3, dropout_warmup=4)
    rates: list[float] = []
    set_dropout = SeqRec.set_dropout

    def spy(model: SeqRec, rate: float) -> None:
        rates.append(rate)
        set_dropout(model, rate)

    monkeypatch.setattr(SeqRec, "set_dropout", spy)
    result = train_model(split, cfg, fit)
    # one rate before each of the first 5 optimizer steps (of about 9), then the returned model's
    assert rates == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    assert result.model.drop.p == 0.5  # the model as its config says, whatever epoch was best


FAULTS = """
import resource, torch
from training.train import keep_freed_memory

def faults_of_a_fresh_matrix():  # minor page faults to fill a 256 MiB tensor, the last one freed
    torch.empty(2**26).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(2**26).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(faults_of_a_fresh_matrix(), end=" ")
keep_freed_memory()
faults_of_a_fresh_matrix()  # the heap grows to hold the first one
print(faults_of_a_fresh_matrix())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_a_freed_matrix_is_reused_not_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1]).stdout
    unmapped, kept = map(int, out.split())
    assert unmapped > 2**26 * 4 // 4096 // 2  # each 4 KiB page of the new block faulted in
    assert kept < 1000
