"""The whole job on a slice of the bundled data: a real Prefect flow run, GX, Feast and MLflow,
then a real `mlflow models serve` process answering real HTTP requests."""

import json
import os
import signal
import subprocess
import time

import mlflow
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.train_pipeline import train_pipeline
from ingestion.state import Stores
from llmseqrec.cli import app
from llmseqrec.ops import serve_command
from serving.registry import MODEL_NAME
from training.params import WITH_TEXT, RetrainParams

pytestmark = pytest.mark.e2e
TINY = RetrainParams(hidden=16, layers=1, max_len=20, epochs=2,
                     p95_ms=2000.0)  # a loaded test machine

BAD_ROWS = [  # each caught by a different check
    {"userId": "1", "movieId": "999999", "rating": "4.0", "timestamp": "1260759144"},
    {"userId": "2", "movieId": "1", "rating": "4.0", "timestamp": "4102444800"},
    {"userId": "3", "movieId": "1", "rating": "9", "timestamp": "1260759144"},
]


@pytest.fixture(scope="module")
def pipeline_run(movielens_slice, tmp_path_factory, prefect_harness):
    data_dir = tmp_path_factory.mktemp("data")
    for f in movielens_slice.iterdir():
        (data_dir / f.name).write_bytes(f.read_bytes())
    ratings = pd.read_csv(data_dir / "ratings.csv", dtype=str)
    pd.concat([ratings, pd.DataFrame(BAD_ROWS)]).to_csv(data_dir / "ratings.csv", index=False)
    stores = Stores(tmp_path_factory.mktemp("state"))
    state = train_pipeline(data_dir=data_dir, state_dir=stores.state_dir, params=TINY,
                           return_state=True)
    return stores, state, len(ratings) + len(BAD_ROWS)


def test_flow_run_registers_a_champion(pipeline_run):
    stores, state, rows_in = pipeline_run
    assert state.is_completed()
    summary = state.result()
    assert summary["promoted"] and summary["reason"].startswith("no champion yet; p95 ")
    mlflow.set_tracking_uri(stores.tracking_uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == str(summary["version"])
    metrics = client.get_run(champion.run_id).data.metrics
    assert 0 <= metrics["test_ndcg_at_10"] <= 1 and "popularity_test_ndcg_at_10" in metrics
    assert metrics["data_rows_in"] == rows_in
    assert metrics["data_rows_quarantined"] == len(BAD_ROWS)
    assert metrics["data_rows_accepted"] == rows_in - len(BAD_ROWS)
    assert metrics["train_interactions"] < metrics["data_rows_accepted"]  # 2 held out per user
    params = client.get_run(champion.run_id).data.params
    assert params["item_repr"] == "hybrid" and params["hidden"] == "16"
    # the defaults by representation as they were trained, not "None"
    assert (params["block"], params["dropout"]) == (WITH_TEXT["block"], str(WITH_TEXT["dropout"]))
    assert params["positions"] in ("absolute", "relative")  # what auto chose for this data


def test_bad_rows_are_quarantined_and_never_reach_training(pipeline_run):
    stores, _, _ = pipeline_run
    quarantined = stores.store.read_quarantine()
    assert sorted(quarantined["failed_checks"]) == [
        "item_not_in_catalog", "rating_out_of_range", "timestamp_out_of_range"]
    stored = stores.store.read()
    assert 999999 not in set(stored["item_id"]) and stored["rating"].max() <= 5


def test_served_champion_answers_and_refuses_malformed_requests(pipeline_run, free_port):
    stores, _, _ = pipeline_run
    cmd, env = serve_command(stores, free_port)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{free_port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        history = [1, 32, 260, 1196, 2571]
        reply = requests.post(f"{url}/invocations",
                              json={"inputs": [{"history": history, "k": 5}]}, timeout=30)
        assert reply.status_code == 200, reply.text
        [answer] = reply.json()["predictions"]
        ids = [r["item_id"] for r in answer["recommendations"]]
        catalog = set(pd.read_parquet(
            stores.state_dir / "feast" / "data" / "item_embeddings.parquet")["item_id"])
        assert len(ids) == 5 and len(set(ids)) == 5
        assert not set(ids) & set(history) and set(ids) <= catalog
        assert all(r["title"] for r in answer["recommendations"])

        reply = requests.post(f"{url}/invocations", timeout=30, json={"inputs": [
            {"history": history, "k": 3, "explain": True}, {"similar": history[0], "k": 4}]})
        assert reply.status_code == 200, reply.text
        explained, similar = reply.json()["predictions"]
        for r in explained["recommendations"]:
            assert {x["item_id"] for x in r["because"]} <= set(history)
            assert sum(x["weight"] for x in r["because"]) == pytest.approx(1.0)
        assert similar["source"] == "similar" and len(similar["recommendations"]) == 4
        assert history[0] not in {r["item_id"] for r in similar["recommendations"]}

        user = int(stores.store.read()["user_id"].iloc[0])
        reply = requests.post(f"{url}/invocations",
                              json={"inputs": [{"user_id": user, "k": 3}]}, timeout=30)
        assert reply.status_code == 200, reply.text
        [answer] = reply.json()["predictions"]
        log = stores.store.read().sort_values("timestamp", kind="stable")
        seen = set(log[log["user_id"] == user]["item_id"].tail(50))
        assert len(answer["recommendations"]) == 3
        assert not {r["item_id"] for r in answer["recommendations"]} & seen

        for bad, says in [({"inputs": [{"history": [1], "k": 0}]}, "greater than or equal to 1"),
                          ({"inputs": [{"user_id": 987654321}]}, "unknown user_id(s) [987654321]"),
                          ({"inputs": [{"k": 3}]}, "one of a history, a user_id or a similar"),
                          ({"inputs": [{"history": ["x"]}]}, "valid integer"),
                          ({"inputs": "junk"}, "Expected list"),
                          ({"inputs": [{"history": list(range(100_000))}]}, "at most 10000"),
                          ({"inputs": [{"history": [[1, [2]]]}]}, "valid integer"),
                          ({"inputs": [{"similar": 1, "explain": "maybe"}]}, "valid boolean"),
                          ({"rows": []}, "inputs")]:
            reply = requests.post(f"{url}/invocations", json=bad, timeout=30)
            assert reply.status_code == 400, (bad, reply.status_code, reply.text)
            assert says in reply.json()["message"], reply.text
        reply = requests.post(f"{url}/invocations", data=b"{not json",
                              headers={"Content-Type": "application/json"}, timeout=30)
        assert reply.status_code == 400 and "valid JSON" in reply.json()["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)



def test_evaluate_entry_reproduces_the_logged_test_numbers(pipeline_run):
    stores, state, _ = pipeline_run
    result = CliRunner().invoke(app, ["evaluate", "1", "--state-dir", str(stores.state_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    logged = state.result()["metrics"]
    for name in ("test_ndcg_at_10", "test_unfiltered_recall_at_50", "test_tail_users"):
        assert report["model"][name] == pytest.approx(logged[name])
    assert report["popularity"]["test_ndcg_at_10"] == pytest.approx(
        state.result()["popularity_metrics"]["test_ndcg_at_10"])
    missing = CliRunner().invoke(app, ["evaluate", "99", "--state-dir", str(stores.state_dir)])
    assert missing.exit_code == 1 and "no version '99'" in missing.output


def test_retraining_warm_starts_from_the_champion_with_new_items(pipeline_run, movielens_slice,
                                                                 tmp_path):
    stores, _, _ = pipeline_run
    data_dir = tmp_path / "day-2"  # the catalog with one new film, and a day of new ratings
    data_dir.mkdir()
    movies = pd.read_csv(movielens_slice / "movies.csv", dtype=str)
    new = pd.DataFrame([{"movieId": "999001", "title": "A New Film (2026)", "genres": "Drama"}])
    pd.concat([movies, new]).to_csv(data_dir / "movies.csv", index=False)
    (data_dir / "tags.csv").write_bytes((movielens_slice / "tags.csv").read_bytes())
    last = int(stores.store.read()["timestamp"].max())
    ratings = [{"userId": str(u), "movieId": m, "rating": "4.0", "timestamp": str(last + n)}
               for n, (u, m) in enumerate([(1, "999001"), (2, "999001"), (3, "999001"),
                                           (2, movies["movieId"].iloc[0])], 1)]
    pd.DataFrame(ratings).to_csv(data_dir / "ratings.csv", index=False)
    summary = train_pipeline(data_dir=data_dir, state_dir=stores.state_dir, params=TINY)
    mlflow.set_tracking_uri(stores.tracking_uri)
    client = MlflowClient()
    run_id = client.get_model_version(MODEL_NAME, summary["version"]).run_id
    assert client.get_run(run_id).data.params["start"] == \
        "warm start from the champion (1 new items)"
    assert "training_curves.png" in {a.path for a in client.list_artifacts(run_id)}
    assert {"test_unfiltered_ndcg_at_10", "test_tail_users", "test_cold_users"} <= set(
        summary["metrics"])
    # the gate scored the champion on the same split, and recorded its decision on the version
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert summary["champion_metrics"]["test_ndcg_at_10"] >= 0
    assert "vs champion" in tags["promotion_reason"] and "gate_p95_ms" in tags
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == \
        int(summary["version"])
    rolled = CliRunner().invoke(app, ["rollback", "--state-dir", str(stores.state_dir)])
    if summary["promoted"]:
        assert rolled.exit_code == 0 and "version 2 -> version 1" in rolled.output
    else:
        assert rolled.exit_code == 1 and "nothing to roll back to" in rolled.output
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == 1
