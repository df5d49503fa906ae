"""The model server answers a client's mistake with a clear 4xx and a JSON message, never a
5xx: the command `llmseqrec serve` runs (MLflow's scoring app behind serving.hardened, run by
uvicorn), a real process serving a tiny recommender from a real registry, over real HTTP."""

import json
import os
import signal
import subprocess
import time

import mlflow
import numpy as np
import pytest
import requests
import torch
from configs import model_config
from ports import free_ports

from features.store import store_config
from ingestion.state import Stores
from llmseqrec.ops import serve_command
from serving.hardened import MAX_BODY_BYTES, MAX_DEPTH, nests_deeper_than
from serving.registry import EXPERIMENT, MODEL_NAME, log_recommender, promote, register_version
from training.model import SeqRec
from training.sequences import ItemIndex

GOOD = {"inputs": [{"history": [101, 103], "k": 2}]}


def depth(value) -> int:
    """How deep arrays and objects nest in a parsed JSON value."""
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max(map(depth, children), default=0)
    return 0


@pytest.mark.parametrize("text", [
    '{"inputs": [{"history": [1, 2], "k": 3}]}', "[[[[]]]]", '[["]]]][[[["], {"a": [{}]}]',
    '{"\\\\": ["\\\\\\"[[[[[", [[["\\"]"]]]]}', '"[[[[[["', "7", '[{"[": "{"}, [], [[{}]]]'])
def test_nesting_depth_leaves_brackets_in_strings_out(text):
    for limit in range(6):
        assert nests_deeper_than(text.encode(), limit) == (depth(json.loads(text)) > limit)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """The URL of the served champion: a 5-item untrained recommender, one worker."""
    stores = Stores(tmp_path_factory.mktemp("hardening") / "state")
    mlflow.set_tracking_uri(stores.tracking_uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        EXPERIMENT, artifact_location=stores.artifact_location))
    torch.manual_seed(0)
    model = SeqRec(model_config(num_items=5, max_len=4, hidden=8, layers=1))
    index = ItemIndex.from_items([101, 102, 103, 104, 105])
    with mlflow.start_run():
        version = register_version(log_recommender(
            model, index, list("ABCDE"), np.array([0, 5, 4, 3, 2, 1]), "v",
            store_config(stores.state_dir), [101, 102]), MODEL_NAME)
    promote(MODEL_NAME, version, True, "serving test", {})
    port = free_ports(1)[0]
    cmd, env = serve_command(stores, port, workers=1)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping"
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def post(url: str, body: bytes, content_type: str | None = "application/json"
         ) -> requests.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return requests.post(f"{url}/invocations", data=body, headers=headers, timeout=60)


def chunks(body: bytes, size: int = 2**16):
    """`body` as a stream: sent chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def nested(levels: int) -> bytes:
    """A good query nesting `levels` deep, in a key the model does not read."""
    inner = b"[" * (levels - 1) + b"]" * (levels - 1)
    return json.dumps(GOOD)[:-1].encode() + b', "x": ' + inner + b"}"


good = json.dumps(GOOD).encode()
too_large = json.dumps({"inputs": [{"history": [101] * (MAX_BODY_BYTES // 5), "k": 2}]}).encode()


@pytest.mark.e2e
@pytest.mark.parametrize(("body", "content_type", "status", "says"), [
    (good, None, 415, "Content-Type is missing"),
    (good, "text/plain", 415, "not supported"),
    (good, "application/json; charset=latin-1", 415, "not supported"),
    (good, "application/json; foo=bar", 415, "not supported"),
    (too_large, "application/json", 413, "over"),
    (chunks(too_large), "application/json", 413, "over"),
    (b'{"inputs": [{"history": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", "application/json",
     400, "levels deep"),
    (nested(MAX_DEPTH + 1), "application/json", 400, f"more than {MAX_DEPTH} levels deep"),
    (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "application/json", 400, "levels deep"),
    (b"{not json", "application/json", 400, "valid JSON"),
    (b"", "application/json", 400, "valid JSON"),
    (good[:-3], "application/json", 400, "valid JSON"),
    (good + b"\xff\xfe", "application/json", 400, "valid JSON"),
    (b"[1, 2, 3]", "application/json", 400, "JSON dictionary"),
    (b"null", "application/json", 400, "JSON dictionary"),
    (json.dumps({"inputs": "junk"}).encode(), "application/json", 400, "Expected list"),
    (json.dumps({"inputs": [{"history": [101], "k": 0}]}).encode(), "application/json", 400,
     "greater than or equal to 1"),
], ids=["no content type", "text/plain", "latin-1", "unknown parameter", "over the limit",
        "over the limit, chunked", "100,000 deep", f"{MAX_DEPTH + 1} deep", "unclosed",
        "not json", "empty", "truncated", "not utf-8", "a list", "null", "inputs not a list",
        "k of 0"])
def test_a_clients_mistake_is_a_clear_4xx(server, body, content_type, status, says):
    reply = post(server, body, content_type)
    assert reply.status_code == status, reply.text[:1000]
    assert reply.headers["content-type"] == "application/json"
    assert says in reply.json()["message"], reply.text[:1000]


@pytest.mark.e2e
@pytest.mark.parametrize(("body", "content_type"), [
    (good, "application/json"), (good, "Application/JSON; charset=UTF-8"),
    (nested(MAX_DEPTH), "application/json")], ids=["json", "utf-8", f"{MAX_DEPTH} deep"])
def test_a_good_query_is_answered_by_the_model(server, body, content_type):
    reply = post(server, body, content_type)
    assert reply.status_code == 200, reply.text
    [answer] = reply.json()["predictions"]
    assert answer["source"] == "model" and answer["model_version"] == "1"
    assert len(answer["recommendations"]) == 2
    assert not {r["item_id"] for r in answer["recommendations"]} & {101, 103}
    assert requests.get(f"{server}/version", timeout=10).text == mlflow.__version__
