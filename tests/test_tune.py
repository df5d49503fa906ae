"""`llmseqrec tune`: trials score validation targets only, the search is a real Prefect flow
run whose trials are MLflow child runs of one parent, and its best settings start the next
retrain (`--params-from-run`), the options given on the command line over them."""

from pathlib import Path

import mlflow
import pytest
import typer
from cycle_data import cycle_log, stored, with_item_at
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.tune import TUNED_PARAMS, load_tuned_params, tune
from ingestion.state import Stores
from llmseqrec.cli import app, with_params
from training.params import RetrainParams
from training.search import run_trial

TINY = RetrainParams(item_repr="id", hidden=16, layers=1, max_len=20, epochs=3, seed=1)


@pytest.fixture(scope="module")
def cycle_data():
    return cycle_log()


def test_a_trial_scores_validation_targets_and_never_a_test_target(cycle_data):
    interactions, items = cycle_data

    def score(data):
        return run_trial(data, items["item_id"], None, TINY, lambda epoch, value: False)

    reference = score(interactions)
    assert not reference.pruned and reference.epochs == 3 and min(reference.curve) > 0
    assert score(with_item_at(interactions, 1)).curve == reference.curve  # the test targets
    assert score(with_item_at(interactions, 2)).curve != reference.curve  # validation ones


def test_a_trial_stops_when_the_pruner_says_so(cycle_data):
    interactions, items = cycle_data
    outcome = run_trial(interactions, items["item_id"], None, TINY,
                        lambda epoch, value: epoch == 2)
    assert outcome.pruned and outcome.epochs == 2 and outcome.value == max(outcome.curve)


@pytest.fixture(scope="module")
def store(cycle_data, tmp_path_factory) -> Stores:
    return stored(*cycle_data, tmp_path_factory.mktemp("tune") / "state")


@pytest.mark.e2e
def test_tune_flow_logs_every_trial_under_one_run_and_keeps_the_best(store, prefect_harness):
    result = tune(state_dir=store.state_dir, params=TINY, trials=4, seed=0)
    assert result["trials"] == 4 and result["best_value"] > 0
    mlflow.set_tracking_uri(store.tracking_uri)
    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    children = mlflow.search_runs(
        [parent.info.experiment_id], output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
    assert len(children) == 4
    assert {c.data.tags["state"] for c in children} <= {"complete", "pruned"}
    for child in children:
        curve = client.get_metric_history(child.info.run_id, "valid_ndcg_at_10")
        assert len(curve) == int(child.data.metrics["epochs"]) >= 1
    best = max(children, key=lambda c: c.data.metrics["best_valid_ndcg_at_10"])
    assert parent.data.metrics["best_valid_ndcg_at_10"] == pytest.approx(result["best_value"])
    assert best.data.metrics["best_valid_ndcg_at_10"] == pytest.approx(result["best_value"])
    tuned = load_tuned_params(store.tracking_uri, result["run_id"])
    assert tuned == RetrainParams(**result["best_params"])
    assert tuned.lr == pytest.approx(float(best.data.params["lr"]))
    assert tuned.hidden == int(best.data.params["hidden"]) and tuned.epochs == TINY.epochs

    # the next retrain starts from them; an option given on the command line wins
    shown = typer.Typer()

    @shown.command()
    @with_params
    def show(state_dir: Path | None = None, params: RetrainParams | None = None) -> None:
        typer.echo(params.model_dump_json())

    def shown_params(*extra: str) -> RetrainParams:
        out = CliRunner().invoke(shown, ["--state-dir", str(store.state_dir),
                                         "--params-from-run", result["run_id"], *extra])
        return RetrainParams.model_validate_json(out.stdout[out.stdout.index("{"):])

    assert shown_params() == tuned
    assert shown_params("--lr", "0.0005") == tuned.model_copy(update={"lr": 0.0005})


def test_a_run_without_tuned_settings_is_a_clear_error(store):
    mlflow.set_tracking_uri(store.tracking_uri)
    with mlflow.start_run() as other:
        pass
    out = CliRunner().invoke(app, ["run", "--state-dir", str(store.state_dir),
                                   "--params-from-run", other.info.run_id])
    assert out.exit_code == 2 and f"has no {TUNED_PARAMS}" in out.output
    assert "Traceback" not in out.output
