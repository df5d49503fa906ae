"""`make up` / `make down`: the Prefect server and a worker of the deployments, the MLflow
tracking server with its UI, and the model server, on loopback; logs and pids in the state
directory, so that `down` stops exactly the processes `up` started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from ingestion.state import Stores

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    prefect: int = 4200
    mlflow: int = 5000
    model: int = 5001


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health: str | None  # a URL that answers 200 once the service is up


def urls(ports: Ports) -> dict[str, str]:
    return {"prefect": f"http://{HOST}:{ports.prefect}", "mlflow": f"http://{HOST}:{ports.mlflow}",
            "model": f"http://{HOST}:{ports.model}"}


def environment(stores: Stores, ports: Ports) -> dict[str, str]:
    """What every process started here sees: where the servers and the state are."""
    u = urls(ports)
    # feast points this at a temporary directory of the importing process, gone when it exits
    inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return inherited | {
        "LLMSEQREC_HOME": str(stores.state_dir), "PREFECT_HOME": str(stores.state_dir / "prefect"),
        "PREFECT_API_URL": f"{u['prefect']}/api", "MLFLOW_TRACKING_URI": u["mlflow"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1",  # logs as they go
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def services(stores: Stores, ports: Ports, pool: str) -> list[Service]:
    bin_dir, state = Path(sys.executable).parent, stores.state_dir
    u = urls(ports)
    return [
        Service("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", HOST,
                                   "--port", str(ports.prefect)], f"{u['prefect']}/api/health"),
        Service("mlflow-server", [str(bin_dir / "mlflow"), "server", "--host", HOST,
                                  "--port", str(ports.mlflow), "--workers", "1",
                                  "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
                                  "--artifacts-destination", str(state / "mlartifacts")],
                f"{u['mlflow']}/health"),
        Service("prefect-worker", [str(bin_dir / "prefect"), "worker", "start", "--pool", pool,
                                   "--type", "process"], None),
        Service("model-server", [str(bin_dir / "llmseqrec"), "serve", "--wait", "--port",
                                 str(ports.model), "--state-dir", str(state)], None),
    ]


def serve_command(stores: Stores, port: int, host: str = HOST,
                  workers: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The model server of the champion and the environment it needs: MLflow's scoring app
    behind `serving.hardened`, run by uvicorn (the server program of `mlflow models serve`)
    with `workers` processes (default one per core), each following the alias (a new champion
    is served within seconds, without a restart)."""
    from serving.follower import FOLLOW
    from serving.hardened import MODEL_URI
    from serving.registry import CHAMPION, MODEL_NAME

    env = os.environ | {"MLFLOW_TRACKING_URI": stores.tracking_uri,
                        MODEL_URI: f"models:/{MODEL_NAME}@{CHAMPION}",
                        FOLLOW: f"{MODEL_NAME}@{CHAMPION}"}
    cmd = [str(Path(sys.executable).parent / "uvicorn"), "--factory",
           "serving.hardened:create_app", "--host", host, "--port", str(port),
           "--workers", str(workers or os.cpu_count() or 1)]
    return cmd, env


def run_dir(stores: Stores) -> Path:
    return stores.state_dir / "run"


def running(stores: Stores, name: str) -> int | None:
    """The pid of service `name` when the process `up` started is still there."""
    pid_file = run_dir(stores) / f"{name}.json"
    if not pid_file.is_file():
        return None
    record = json.loads(pid_file.read_text())
    try:
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    same = [a.decode() for a in cmdline if a][-len(record["command"]):] == record["command"]
    return record["pid"] if same else None  # a reused pid is somebody else's process


def ended(pid: int) -> bool:
    """The process is gone, or a zombie: ended, not yet reaped. (An exiting process loses its
    command line before it ends, so `running` says no too early.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # the state, after the command's name


def wait_healthy(url: str, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s: see {log}")


def start(stores: Stores, service: Service, env: dict[str, str]) -> int:
    logs, pids = stores.state_dir / "logs", run_dir(stores)
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    log = logs / f"{service.name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(service.command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    (pids / f"{service.name}.json").write_text(json.dumps(
        {"pid": process.pid, "command": service.command}))
    if service.health:
        wait_healthy(service.health, log)
    else:  # no health URL: at least not dead on arrival
        time.sleep(3)
    if process.poll() is not None:
        raise RuntimeError(f"{service.name} exited with code {process.returncode}: see {log}")
    return process.pid


def up(stores: Stores, ports: Ports, cron: str, pool: str, params_from_run: str | None = None,
       encoder: str | None = None) -> list[str]:
    """Start what is not running yet (deploying the flows once Prefect answers, their retrains
    with the settings of the tune run `params_from_run` if given, their item texts embedded
    with `encoder`); one line per service."""
    env = environment(stores, ports)
    lines = []
    for service in services(stores, ports, pool):
        pid = running(stores, service.name)
        state = "already running" if pid else "started"
        pid = pid or start(stores, service, env)
        lines.append(f"{service.name}: {state} (pid {pid})")
        if service.name == "prefect-server":
            subprocess.run([str(Path(sys.executable).parent / "llmseqrec"), "deploy", "--cron",
                            cron, "--pool", pool, "--state-dir", str(stores.state_dir),
                            "--serving-url", urls(ports)["model"],
                            *(["--params-from-run", params_from_run] if params_from_run else []),
                            *(["--encoder", encoder] if encoder else [])],
                           env=env, check=True)
    return lines


def down(stores: Stores, timeout_s: float = 30) -> list[str]:
    """Stop the process group of every service `up` started, SIGTERM first, then SIGKILL."""
    lines = []
    for pid_file in sorted(run_dir(stores).glob("*.json")):
        name = pid_file.stem
        pid = running(stores, name)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while not ended(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not ended(pid):
                os.killpg(pid, signal.SIGKILL)
                while not ended(pid) and time.monotonic() < deadline + 5:
                    time.sleep(0.1)  # until the kernel has ended it
        pid_file.unlink()
        lines.append(f"{name}: {'stopped' if pid else 'was not running'}")
    return lines
