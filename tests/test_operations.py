"""Operations for real: `llmseqrec up` starts a Prefect server with the deployments and a worker,
an MLflow tracking server and the model server; a replayed week goes through the deployed
schedule; retrains are killed, raced, and cut off from the tracking server; `down` stops
exactly what `up` started."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from ports import free_ports
from prefect.settings import PREFECT_API_URL, temporary_settings
from urllib3.util.retry import Retry

from features.encoder import default_encoder
from flows.deployments import deploy_flows
from flows.retrain import RETRAIN_LOCK
from ingestion.catalog_batches import catalog_inbox
from ingestion.state import Stores
from llmseqrec.ops import Ports, down, environment, running, up, urls
from llmseqrec.replay import drop_next
from serving.registry import MODEL_NAME
from training.params import RetrainParams

pytestmark = pytest.mark.e2e
TINY = RetrainParams(hidden=16, layers=1, max_len=20, epochs=3, p95_ms=2000.0)
DAYS = 7
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
REFRESH_S = 2  # the model server's refresh interval here: alias and new items
# Prefect's API, as its own client calls it: a 503 (SQLite busy on a loaded machine) is retried
PREFECT_API = requests.Session()
PREFECT_API.mount("http://", requests.adapters.HTTPAdapter(max_retries=Retry(
    total=5, backoff_factor=1, status_forcelist=[503], allowed_methods=None)))


@dataclass
class Stack:
    stores: Stores
    ports: Ports
    slice_dir: Path

    @property
    def prefect(self) -> str:
        return urls(self.ports)["prefect"] + "/api"

    @property
    def registry(self) -> MlflowClient:
        return MlflowClient(tracking_uri=urls(self.ports)["mlflow"])

    def post(self, path: str, body: dict) -> list | dict:
        response = PREFECT_API.post(f"{self.prefect}/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> dict:
        response = PREFECT_API.get(f"{self.prefect}/{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, flow: str) -> list[dict]:
        return self.post("flow_runs/filter", {"flows": {"name": {"any_": [flow]}},
                                              "sort": "EXPECTED_START_TIME_ASC",
                                              "limit": 200, "offset": 0})

    def logs(self, flow_run_id: str) -> list[str]:
        return [r["message"] for r in self.post("logs/filter", {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC",
            "limit": 200, "offset": 0})]

    def run_deployment(self, flow: str, parameters: dict) -> str:
        deployment = self.get(f"deployments/name/{flow}/llmseqrec")
        return self.post(f"deployments/{deployment['id']}/create_flow_run",
                         {"parameters": parameters})["id"]

    def wait_state(self, flow_run_id: str, states: set[str], timeout_s: float = 300) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.get(f"flow_runs/{flow_run_id}")
            if run["state_type"] in states:
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} still {run['state_type']}")

    def aliases(self) -> dict[str, int]:
        out = {}
        for alias in ("champion", "challenger"):
            with contextlib.suppress(MlflowException):
                out[alias] = int(self.registry.get_model_version_by_alias(MODEL_NAME, alias)
                                 .version)
        return out

    def versions(self) -> list:
        return sorted(self.registry.search_model_versions(f"name='{MODEL_NAME}'"),
                      key=lambda v: int(v.version))


@pytest.fixture(scope="module")
def stack(movielens_slice, tmp_path_factory):
    stores = Stores(tmp_path_factory.mktemp("ops") / "state")
    quick = {"PREFECT_WORKER_QUERY_SECONDS": "2",  # time compressed: poll and schedule often
             "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
             "LLMSEQREC_REFRESH_S": str(REFRESH_S),
             "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in quick.items():
            patch.setenv(key, value)
        ports = Ports(*free_ports(3))
        try:
            # the bundled encoder by its directory: the same vectors, through --encoder
            up(stores, ports, cron="0 3 1 1 *", pool="llmseqrec", encoder=default_encoder())
            yield Stack(stores, ports, movielens_slice)
        finally:
            down(stores)


def test_up_starts_the_servers_the_worker_and_the_deployments(stack):
    logs = stack.stores.state_dir / "logs"
    for name in ("prefect-server", "mlflow-server", "prefect-worker", "model-server"):
        assert running(stack.stores, name), (logs / f"{name}.log").read_text()[-3000:]
    assert requests.get(urls(stack.ports)["mlflow"] + "/health", timeout=10).ok
    deployments = stack.post("deployments/filter", {"limit": 20, "offset": 0})
    by_flow = {stack.get(f"flows/{d['flow_id']}")["name"]: d for d in deployments}
    assert set(by_flow) == {"nightly", "ingest", "embed-items", "retrain", "tune",
                            "tune-encoder"}
    for flow in ("nightly", "ingest", "embed-items", "tune-encoder"):  # up's --encoder
        assert by_flow[flow]["parameters"]["encoder"] == default_encoder()
    assert by_flow["nightly"]["schedules"][0]["schedule"]["cron"] == "0 3 1 1 *"
    assert not by_flow["retrain"]["schedules"]
    assert by_flow["retrain"]["parameters"]["state_dir"] == str(stack.stores.state_dir)
    # the model server waits for a champion instead of failing
    log, deadline = logs / "model-server.log", time.monotonic() + 120
    while "waiting for a champion" not in log.read_text():
        assert time.monotonic() < deadline and running(stack.stores, "model-server")
        time.sleep(1)


def test_a_replayed_week_goes_through_the_deployed_schedule(stack):
    stores = stack.stores
    with temporary_settings({PREFECT_API_URL: stack.prefect}):
        deploy_flows(stores.state_dir, cron=None, interval_s=20, params=TINY,
                     serving_url=urls(stack.ports)["model"])
    queries = Queries(urls(stack.ports)["model"])
    queries.start()  # a client asking all along: the server changes models under it
    dropped = []
    try:
        for _ in range(DAYS + 1):  # the history, then a day every 15 s against a 20 s schedule
            dropped.append(drop_next(stores, stack.slice_dir, days=DAYS).name)
            time.sleep(15)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # until every batch is in and no nightly is running
            busy = [r for r in stack.flow_runs("nightly")
                    if r["state_type"] in {"PENDING", "RUNNING"}]
            if len(stores.ledger.all()) == len(dropped) and not busy:
                break
            time.sleep(3)
    finally:  # even when this test fails, no schedule goes on running under the next ones
        stop_schedule(stack, "nightly")

    ledger = stores.ledger.all()
    assert sorted(ledger["file_name"]) == sorted(dropped)  # every batch ingested, once
    assert (ledger["status"] == "accepted").all()
    assert len(stores.store.read()) == ledger["rows_accepted"].sum()
    runs = [r for r in stack.flow_runs("nightly") if r["state_type"] != "SCHEDULED"]
    assert runs and all(r["state_type"] == "COMPLETED" for r in runs)
    retrains = [r for r in stack.flow_runs("retrain") if r["state_type"] == "COMPLETED"]
    versions = stack.versions()
    assert len(versions) == len(retrains) >= 2  # a new version per retrain
    champion = None
    for v in versions:  # the champion only ever moved to a better model on the same set
        if v.tags["promotion"] == "promoted":
            if champion is not None:
                assert float(v.tags["gate_test_ndcg_at_10"]) > \
                    float(v.tags["gate_champion_test_ndcg_at_10"]) * (1 + TINY.margin)
                assert v.tags["previous_champion"] == champion
            champion = str(v.version)
        else:
            assert v.tags["promotion"] == "refused"
    assert stack.aliases() == {"champion": int(champion), "challenger": int(versions[-1].version)}
    time.sleep(5)  # the refresh interval, twice
    queries.stop()
    assert queries.failed == [] and queries.answered > 100
    promoted = [str(v.version) for v in versions if v.tags["promotion"] == "promoted"]
    assert queries.served[0] == promoted[0] and queries.served[-1] == champion
    assert set(queries.served) <= set(promoted)  # only champions, in order, no restart


def test_a_new_catalog_item_is_served_within_the_refresh_interval_without_a_retrain(stack):
    stores, url = stack.stores, urls(stack.ports)["model"] + "/invocations"
    versions = len(stack.versions())
    catalog = stores.store.read_catalog()
    twin = catalog.iloc[0]  # the new item has its text, so its text embedding
    new = int(catalog["item_id"].max()) + 1
    catalog_inbox(stores).mkdir(parents=True, exist_ok=True)
    catalog.iloc[[0]].assign(item_id=new).to_csv(catalog_inbox(stores) / "new-item.csv",
                                                 index=False)

    def ask(query: dict) -> dict:
        response = requests.post(url, json={"inputs": [query]}, timeout=10)
        assert response.status_code == 200, response.text[:300]
        return response.json()["predictions"][0]

    assert ask({"similar": new, "k": 5})["unknown_items"] == [new]
    ingest = stack.wait_state(stack.run_deployment("ingest", {}), TERMINAL, timeout_s=300)
    assert ingest["state_type"] == "COMPLETED", ingest["state"]["message"]
    ingested = time.monotonic()

    def served_by_every_process() -> bool:  # each refreshes on its own clock: ten in a row
        return not any(ask({"similar": new, "k": 5})["unknown_items"] for _ in range(10))

    while not served_by_every_process():
        assert time.monotonic() - ingested < 3 * REFRESH_S, "not served within the interval"
        time.sleep(0.1)
    assert len(ask({"similar": new, "k": 5})["recommendations"]) == 5
    after = ask({"history": [new], "k": 5})
    assert after["source"] == "model" and after["unknown_items"] == []
    near_twin = ask({"similar": int(twin["item_id"]), "k": 100})["recommendations"]
    assert {"item_id": new, "title": twin["title"]} in [
        {k: r[k] for k in ("item_id", "title")} for r in near_twin]  # recommended, by title
    assert len(stack.versions()) == versions  # no retrain


def stop_schedule(stack: Stack, flow: str) -> None:
    """Pause the deployment, delete its queued runs, wait for the running ones to end."""
    deployment = stack.get(f"deployments/name/{flow}/llmseqrec")
    PREFECT_API.patch(f"{stack.prefect}/deployments/{deployment['id']}", json={"paused": True},
                      timeout=30).raise_for_status()
    for run in stack.flow_runs(flow):
        if run["state_type"] == "SCHEDULED":
            PREFECT_API.delete(f"{stack.prefect}/flow_runs/{run['id']}", timeout=30)
    for run in stack.flow_runs(flow):
        stack.wait_state(run["id"], TERMINAL)


class Queries(threading.Thread):
    """Queries the model server every 50 ms: the versions that answered, in order, and every
    request that did not get a 200 (before the first champion the server is not up yet)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stopped = url + "/invocations", threading.Event()
        self.served: list[str] = []
        self.failed: list[str] = []
        self.answered = 0

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            try:
                response = requests.post(self.url, timeout=10,
                                         json={"inputs": [{"history": [1], "k": 3}]})
            except requests.ConnectionError:
                if self.served:  # the server was up: a dropped request
                    self.failed.append("connection error")
                continue
            if response.status_code != 200:
                self.failed.append(f"{response.status_code}: {response.text[:200]}")
                continue
            self.answered += 1
            version = response.json()["predictions"][0]["model_version"]
            if not self.served or self.served[-1] != version:
                self.served.append(version)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def retrain_process(stack: Stack, log: Path, params: RetrainParams = TINY,
                    **kwargs) -> subprocess.Popen:
    code = ("import sys; from training.params import RetrainParams; "
            "from flows.retrain import retrain; "
            f"state = retrain(state_dir={str(stack.stores.state_dir)!r}, "
            f"params=RetrainParams(**{params.model_dump()!r}), return_state=True, **{kwargs!r}); "
            "print('STATE', state.type.value, state.message); "
            "sys.exit(0 if state.is_completed() else 1)")
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT,
                                env=environment(stack.stores, stack.ports), cwd=Path.cwd())


def lock_slots(stack: Stack) -> int:
    return stack.get(f"v2/concurrency_limits/{RETRAIN_LOCK}")["active_slots"]


def test_two_retrains_started_together_run_one_after_the_other(stack, tmp_path):
    before = len(stack.versions())
    # the first holds the lock long enough for the others to find it taken
    first = retrain_process(stack, tmp_path / "first.log",
                            TINY.model_copy(update={"epochs": 300, "patience": 300}))
    deadline = time.monotonic() + 120
    while lock_slots(stack) == 0 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
    second = retrain_process(stack, tmp_path / "second.log")
    impatient = retrain_process(stack, tmp_path / "impatient.log", lock_timeout_s=3)
    assert impatient.wait(300) == 1
    assert "this one was refused" in (tmp_path / "impatient.log").read_text()
    # bounds against a hang, not timings: 300 tiny epochs took 6 minutes on a crowded machine
    assert first.wait(900) == 0 and second.wait(900) == 0
    # the two held the lock one after the other: their training never overlapped
    runs = sorted(stack.flow_runs("retrain")[-3:], key=lambda r: r["start_time"])
    trains = stack.post("task_runs/filter", {
        "flow_runs": {"id": {"any_": [r["id"] for r in runs]}},
        "task_runs": {"name": {"like_": "fit-"}}, "sort": "EXPECTED_START_TIME_ASC",
        "limit": 10, "offset": 0})
    assert len(trains) == 2
    assert trains[0]["end_time"] <= trains[1]["start_time"]
    versions = stack.versions()
    assert len(versions) == before + 2  # the refused one registered nothing
    assert stack.aliases()["challenger"] == int(versions[-1].version)
    assert lock_slots(stack) == 0


def training_retrain(stack: Stack, epochs: int, until_epoch: int) -> str:
    """A run of the retrain deployment, once it has logged epoch `until_epoch`; its id."""
    slow = TINY.model_dump() | {"epochs": epochs, "patience": epochs}
    run_id = stack.run_deployment("retrain", {"params": slow})
    deadline = time.monotonic() + 240
    while not any(f"epoch {until_epoch} " in m for m in stack.logs(run_id)):
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(1)
    return run_id


def test_a_retrain_killed_mid_training_crashes_visibly_and_a_rerun_succeeds(stack):
    before = (stack.aliases(), len(stack.versions()))
    run_id = training_retrain(stack, epochs=500, until_epoch=2)
    pid = int(stack.get(f"flow_runs/{run_id}")["infrastructure_pid"].rsplit(":", 1)[-1])
    process = psutil.Process(pid)
    for p in [process, *process.children(recursive=True)]:
        p.send_signal(signal.SIGKILL)
    crashed = stack.wait_state(run_id, TERMINAL, timeout_s=120)
    assert crashed["state_type"] == "CRASHED" and "-9" in crashed["state"]["message"]
    assert (stack.aliases(), len(stack.versions())) == before  # nothing registered or moved
    rerun = stack.wait_state(stack.run_deployment("retrain", {"params": TINY.model_dump()}),
                             TERMINAL, timeout_s=300)  # once the killed run's lease expired
    assert rerun["state_type"] == "COMPLETED"
    assert len(stack.versions()) == before[1] + 1


def test_the_tracking_server_down_fails_the_run_clearly_and_aliases_stay(stack):
    before = (stack.aliases(), len(stack.versions()))
    run_id = training_retrain(stack, epochs=40, until_epoch=1)
    os.killpg(running(stack.stores, "mlflow-server"), signal.SIGTERM)
    failed = stack.wait_state(run_id, TERMINAL, timeout_s=300)
    assert failed["state_type"] == "FAILED"
    logs = "\n".join(stack.logs(run_id))
    assert "does not answer" in failed["state"]["message"] + logs
    registers = stack.post("task_runs/filter", {
        "flow_runs": {"id": {"any_": [run_id]}}, "task_runs": {"name": {"like_": "register-"}},
        "limit": 5, "offset": 0})
    assert registers[0]["run_count"] == 3  # tried, then retried twice
    up(stack.stores, stack.ports, cron="0 3 1 1 *", pool="llmseqrec")  # restarts what is down
    assert (stack.aliases(), len(stack.versions())) == before
    rerun = stack.wait_state(stack.run_deployment("retrain", {"params": TINY.model_dump()}),
                             TERMINAL, timeout_s=300)
    assert rerun["state_type"] == "COMPLETED"


def test_down_stops_exactly_what_up_started(stack):
    bystander = subprocess.Popen(["sleep", "300"])
    pids = {name: running(stack.stores, name) for name in
            ("prefect-server", "mlflow-server", "prefect-worker", "model-server")}
    try:
        lines = down(stack.stores)
        assert len(lines) == 4 and all(line.endswith("stopped") for line in lines)
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                       for pid in pids.values())
        assert bystander.poll() is None
    finally:
        bystander.kill()
