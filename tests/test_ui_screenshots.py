"""The MLflow model page and the Prefect runs page, rendered by headless Chromium against real
servers after two real runs of the pipeline flow; the rendered DOM is checked, the PNGs kept.

With LLMSEQREC_SCREENSHOTS=1 the PNGs are also written to docs/screenshots/ for the README."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from ports import free_ports

from ingestion.state import Stores
from llmseqrec.ops import Service, down, start
from serving.registry import MODEL_NAME

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# MLflow's UI opens its Assistant panel over the page when served from a loopback name, so the
# browser reaches the server under this name (.test is reserved, never resolved outside).
MLFLOW_HOST = "mlflow.test"
RUN_FLOWS = """
import json, sys
from training.params import RetrainParams
from flows.train_pipeline import train_pipeline
data_dir, state_dir, params = json.loads(sys.argv[1])
for _ in range(2):
    train_pipeline(data_dir=data_dir, state_dir=state_dir, params=RetrainParams(**params))
"""
TINY = {"hidden": 16, "layers": 1, "max_len": 20, "epochs": 2, "p95_ms": 2000.0}


def chromium() -> str | None:
    names = [os.environ.get("LLMSEQREC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    return next((found for name in names if name and (found := shutil.which(name))), None)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of `proc`, SIGKILL to whatever is left of it 30 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


def run_group(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that leaves no process of the run behind, also on timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def capture(browser: str, url: str, png: Path, ready: Callable[[str], bool],
            size: str = "1400,900", extra: tuple[str, ...] = ()) -> str:
    """Screenshot `url` and return the DOM of the same load; a load whose DOM is not `ready`
    (a slow single-page app) is tried again, with more virtual time."""
    for budget in (15_000, 30_000, 60_000):
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={size}", f"--virtual-time-budget={budget}",
               f"--user-data-dir={png.parent / 'chromium-profile'}",  # a fresh profile each time
               "--dump-dom", f"--screenshot={png}", *extra, url]
        shutil.rmtree(png.parent / "chromium-profile", ignore_errors=True)
        dom = run_group(cmd, timeout=180).stdout
        if ready(dom):
            break
    return dom


def runs_listed(dom: str) -> list[tuple[str, str]]:
    """(flow name, flow run name) of each row of the Prefect runs page."""
    return re.findall(r'title="([^"]+)" href="/v2/flows/flow/[^"]*".*?'
                      r'title="([^"]+)" href="/v2/runs/flow-run/', dom, re.S)


def aliases_by_version(dom: str) -> dict[str, set[str]]:
    """{version: aliases} as the versions table of the MLflow model page shows them."""
    table = {}
    for row in dom.split('role="row"'):
        if found := re.search(r">Version (\d+)</a>", row):
            table[found[1]] = set(re.findall(r'title="(\w+)" data-component-id="[^"]*alias', row))
    return table


@dataclass(frozen=True)
class UIs:
    prefect: str  # base URL of the Prefect server, UI and API (/api)
    mlflow: str  # base URL of the MLflow server
    mlflow_port: int
    tmp: Path


def keep(png: Path) -> None:
    """With LLMSEQREC_SCREENSHOTS=1, the screenshot goes to docs/screenshots/ too."""
    if os.environ.get("LLMSEQREC_SCREENSHOTS") == "1":
        (REPO / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, REPO / "docs" / "screenshots" / png.name)


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        pytest.skip("no Chromium: `apt-get install chromium`, or set LLMSEQREC_CHROMIUM")
    return found


@pytest.fixture(scope="module")
def uis(browser, movielens_slice, tmp_path_factory) -> Iterator[UIs]:
    """A Prefect server that ran the pipeline flow twice (two model versions), then an MLflow
    server on the state directory those runs wrote. Needs the browser: without one, skipped
    before anything runs."""
    tmp = tmp_path_factory.mktemp("uis")
    state = tmp / "state"
    prefect_port, mlflow_port = free_ports(2)
    prefect = f"http://127.0.0.1:{prefect_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": f"{prefect}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}
    stores = Stores(state)  # the servers' logs and pids go where `make up` puts them
    try:
        start(stores, Service("prefect-server", [
            str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
            "--port", str(prefect_port)], f"{prefect}/api/health"), env)
        args = json.dumps([str(movielens_slice), str(state), TINY])
        ran = run_group([sys.executable, "-c", RUN_FLOWS, args], timeout=600, env=env, cwd=REPO)
        assert ran.returncode == 0, ran.stderr[-5000:]
        mlflow = f"http://127.0.0.1:{mlflow_port}"
        start(stores, Service("mlflow-server", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{state}/mlflow.db",
            "--artifacts-destination", (state / "mlartifacts").as_uri(),
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            "--allowed-hosts", f"{MLFLOW_HOST}:{mlflow_port},127.0.0.1:{mlflow_port}"],
            f"{mlflow}/health"), env)
        yield UIs(prefect, mlflow, mlflow_port, tmp)
    finally:
        down(stores)


def test_mlflow_model_page_shows_the_versions_and_their_aliases(uis, browser):
    client = MlflowClient(tracking_uri=uis.mlflow)
    expected = {str(v.version): set(client.get_model_version(MODEL_NAME, v.version).aliases)
                for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    assert set(expected) == {"1", "2"}
    assert {"champion", "challenger"} <= set().union(*expected.values())
    png = uis.tmp / "mlflow-model.png"
    dom = capture(browser, f"http://{MLFLOW_HOST}:{uis.mlflow_port}/#/models/{MODEL_NAME}", png,
                  ready=lambda d: aliases_by_version(d) == expected,
                  extra=(f"--host-resolver-rules=MAP {MLFLOW_HOST} 127.0.0.1",))
    assert aliases_by_version(dom) == expected, dom[-3000:]
    keep(png)


def test_prefect_runs_page_lists_the_flow_runs(uis, browser):
    api = f"{uis.prefect}/api"
    runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
    flows = {f["id"]: f["name"]
             for f in requests.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    expected = sorted((flows[r["flow_id"]], r["name"]) for r in runs)
    assert [flow for flow, _ in expected].count("train-pipeline") == 2, expected
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    png = uis.tmp / "prefect-flow-runs.png"
    # /runs is the V1 UI; V2, the default UI of Prefect 3.8, lives under /v2
    dom = capture(browser, f"{uis.prefect}/v2/runs", png, size="1400,1300",  # room for each row
                  ready=lambda d: sorted(runs_listed(d)) == expected)
    assert sorted(runs_listed(dom)) == expected, dom[-3000:]
    assert f"{len(runs)} Flow runs" in dom
    keep(png)
