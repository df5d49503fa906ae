"""The scale-out configuration of docs/scale-out.md, tried on this machine. The whole job
(`llmseqrec run`) on a slice of the bundled data, first with the default stores (SQLite, local
files), then against a throwaway PostgreSQL and Redis on loopback: per Feast online store
(Redis, then PostgreSQL), an MLflow tracking server on PostgreSQL with a proxied artifact store;
the champion served and asked for a user's recommendations, whose recent items it reads from
that online store; once, a Prefect server on PostgreSQL with a process worker running the
retrain deployment; then DDP training under `torchrun --nproc_per_node 2` (gloo) beside one
process. Each step's outcome, time and error go to bench/results/scale_out.json; everything
started here is stopped at the end.

    .venv/bin/python bench/scale_out.py [--users 30] [--epochs 3] [--online-stores redis]

Needs `apt-get install -y postgresql redis-server` and, in the venv, psycopg2-binary (MLflow's
PostgreSQL driver), psycopg[binary] and psycopg_pool (Feast's PostgreSQL online store and
registry) and redis (Feast's Redis online store).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

from ingestion.readers import write_movielens_slice

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PACKAGES = ["mlflow", "feast", "torch", "prefect", "psycopg2-binary", "psycopg", "psycopg-binary",
            "psycopg-pool", "redis"]
USER = 1  # the user asked for recommendations: in every slice


class StepFailed(Exception):
    pass


@contextmanager
def step(steps: list[dict], name: str):
    """Record a step: its name, time, outcome, and what the body adds to its row."""
    row: dict = {"step": name, "load_1m_at_start": os.getloadavg()[0]}  # a shared machine?
    steps.append(row)
    print(f"-- {name}", flush=True)
    started = time.perf_counter()
    try:
        yield row
        row["ok"] = True
    except Exception as e:
        row |= {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"   FAILED: {row['error'][-2000:]}", flush=True)
        raise StepFailed(name) from e
    finally:
        row["seconds"] = round(time.perf_counter() - started, 2)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Processes started here, each in its own session (so its children stop with it), with
    their output in `logs`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.ports: list[int] = []  # the TCP ports of the servers started here

    def port(self) -> int:
        self.ports.append(free_port())
        return self.ports[-1]

    def start(self, name: str, cmd: list, env: dict | None = None) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            return subprocess.Popen([str(c) for c in cmd], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, cmd: list, env: dict | None = None, timeout: float = 3600) -> None:
        """Run to the end; raise with the tail of its output when it fails."""
        proc = self.start(name, cmd, env)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            code = "timeout"
        check(code == 0, f"{name} exited with {code}: ...{self.tail(name)}")

    def tail(self, name: str, chars: int = 1500) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        """SIGTERM to its process group (SIGKILL after 30 s): its children too."""
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def listeners(port: int) -> list[str]:
    """The addresses listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1]
                               for i in range(0, len(address), 8))  # little-endian words
                found.append(socket.inet_ntop(family, raw))
    return found


def loopback_only(port: int) -> list[str]:
    found = listeners(port)
    check(bool(found) and set(found) == {"127.0.0.1"}, f"port {port} listens on {found}")
    return found


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    """Seconds until `url` answers 200; fails if `proc` exits first or time runs out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        check(proc.poll() is None, f"exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return round(time.perf_counter() - started, 2)
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


def post(url: str, payload: dict) -> tuple[int, dict | str, float]:
    """HTTP status, answer and milliseconds of one JSON POST."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    ms = (time.perf_counter() - started) * 1000
    try:
        return status, json.loads(body), ms
    except ValueError:
        return status, body.decode(errors="replace"), ms


@dataclass
class Services:
    """The throwaway PostgreSQL cluster and Redis server, both on 127.0.0.1."""

    pg_port: int
    psql: list[str]  # the superuser's psql, over the cluster's Unix socket
    passwords: dict[str, str]  # role -> password
    redis_port: int
    redis_password: str

    def sql(self, database: str, query: str) -> str:
        out = subprocess.run([*self.psql, "-d", database, "-tA"], input=query, text=True,
                             capture_output=True)
        check(out.returncode == 0, f"psql: {out.stderr.strip()}")
        return out.stdout.strip()

    def pg_url(self, role: str, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{role}:{self.passwords[role]}@127.0.0.1:{self.pg_port}/{database}"

    def redis(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), *args],
                             env=os.environ | {"REDISCLI_AUTH": self.redis_password},
                             text=True, capture_output=True)
        check(out.returncode == 0, f"redis-cli {args}: {out.stderr.strip()}")
        return out.stdout.strip()

    def feast_env(self) -> dict[str, str]:
        """The variables features/feature_store.{redis,postgres}.yaml read."""
        return {"LLMSEQREC_REDIS": f"127.0.0.1:{self.redis_port},password={self.redis_password}",
                "LLMSEQREC_PG_HOST": "127.0.0.1", "LLMSEQREC_PG_PORT": str(self.pg_port),
                "LLMSEQREC_PG_DB": "feast", "LLMSEQREC_PG_USER": "feast",
                "LLMSEQREC_PG_PASSWORD": self.passwords["feast"],
                "LLMSEQREC_PG_SSLMODE": "disable"}


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    check(bool(found), "no /usr/lib/postgresql/*/bin/initdb: apt-get install -y postgresql")
    return found[-1].parent


def start_services(work: Path, stores: list[str], procs: Processes, stack: ExitStack,
                   row: dict) -> Services:
    """initdb + pg_ctl start (as the postgres user when run as root: PostgreSQL refuses root),
    a role and database for MLflow (one database per online store tried) and for Feast;
    redis-server with a password, no persistence."""
    pg_bin = postgres_bin()
    data = work / "postgres"
    data.mkdir()
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        work.chmod(0o755)  # the postgres user must reach its data directory
        shutil.chown(data, "postgres", "postgres")
    superuser = "postgres" if as_owner else getpass.getuser()
    subprocess.run([*as_owner, pg_bin / "initdb", "-D", data, "-U", superuser,
                    "--auth-local=peer", "--auth-host=scram-sha-256"],
                   check=True, capture_output=True)
    pg_port = procs.port()
    pg_ctl = [*as_owner, pg_bin / "pg_ctl", "-D", data, "-w"]
    subprocess.run([*pg_ctl, "-l", data / "server.log", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {data}", "start"],
                   check=True, capture_output=True)
    stack.callback(subprocess.run, [*pg_ctl, "-m", "fast", "stop"], capture_output=True)
    passwords = {role: secrets.token_hex(16) for role in ("mlflow", "feast", "prefect")}
    services = Services(pg_port, [*as_owner, str(pg_bin / "psql"), "-h", str(data),
                                  "-p", str(pg_port), "-U", superuser, "-v", "ON_ERROR_STOP=1"],
                        passwords, procs.port(), secrets.token_hex(16))
    services.sql("postgres", "".join(
        [f"CREATE ROLE {r} LOGIN PASSWORD '{p}';\n" for r, p in passwords.items()]
        + [f"CREATE DATABASE mlflow_{s} OWNER mlflow;\n" for s in stores]))
    for role in ("feast", "prefect"):
        services.sql("postgres", f"CREATE DATABASE {role} OWNER {role};")
    conf = work / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {services.redis_port}\ndir {work}\nsave \"\"\n"
                    f"appendonly no\nrequirepass {services.redis_password}\n")
    conf.chmod(0o600)
    redis = procs.start("redis", ["redis-server", conf])
    stack.callback(procs.stop, redis)
    for _ in range(50):  # up within 10 s
        with suppress(AssertionError):
            if services.redis("ping") == "PONG":
                break
        time.sleep(0.2)
    check(redis.poll() is None and services.redis("ping") == "PONG",
          f"redis did not start: {procs.tail('redis')}")
    row |= {"postgres": "peer auth on its socket, scram-sha-256 on TCP",
            "redis": "requirepass, no persistence",
            "listening": {"postgres": loopback_only(pg_port),
                          "redis": loopback_only(services.redis_port)}}
    return services


def online_rows(services: Services, store: str) -> dict[str, int]:
    """What the online store holds: Redis keys, or rows per Feast table in PostgreSQL."""
    if store == "redis":
        return {"redis_keys": int(services.redis("dbsize"))}
    tables = services.sql("feast", "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                   "AND tablename LIKE 'llmseqrec%' ORDER BY 1;").split()
    return {t: int(services.sql("feast", f'SELECT count(*) FROM "{t}";')) for t in tables}


def empty_user_features(services: Services, store: str) -> None:
    if store == "redis":
        services.redis("flushdb")
        return
    for table in online_rows(services, store):
        if "user_recent_items" in table:
            services.sql("feast", f'TRUNCATE "{table}";')


def try_online_store(store: str, services: Services, data: Path, work: Path, args,
                     procs: Processes, steps: list[dict]) -> None:
    """MLflow server on PostgreSQL, the job against it with Feast's online store in `store`,
    the champion served and asked for user USER's recommendations."""
    from mlflow import MlflowClient

    artifacts, state = work / f"artifacts-{store}", work / f"state-{store}"
    with ExitStack() as stack:  # stops the servers, whatever step fails
        with step(steps, f"{store}: mlflow server on postgres") as row:
            port = procs.port()
            server = procs.start(f"mlflow-server-{store}", [
                BIN / "mlflow", "server", "--artifacts-destination", artifacts.as_uri(),
                "--host", "127.0.0.1", "--port", port, "--workers", "1"],
                env=os.environ | {"MLFLOW_BACKEND_STORE_URI":
                                  services.pg_url("mlflow", f"mlflow_{store}")})
            stack.callback(procs.stop, server)
            url = f"http://127.0.0.1:{port}"
            row |= {"url": url, "artifacts_destination": artifacts.as_uri(),
                    "ready_seconds": wait_http(f"{url}/health", server),
                    "listening": loopback_only(port)}
        env = os.environ | services.feast_env() | {
            "MLFLOW_TRACKING_URI": url, "PREFECT_HOME": str(work / f"prefect-{store}"),
            "LLMSEQREC_FEATURE_STORE_YAML": str(ROOT / f"features/feature_store.{store}.yaml"),
            "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        with step(steps, f"{store}: llmseqrec run"):
            procs.run(f"run-{store}", [BIN / "llmseqrec", "run", "--data-dir", data,
                                       "--state-dir", state, "--epochs", args.epochs], env=env)
        with step(steps, f"{store}: champion in the server's registry, artifacts in its store"
                  ) as row:
            client = MlflowClient(url)
            version = client.get_model_version_by_alias("llmseqrec", "champion")
            location = client.get_experiment_by_name("llmseqrec").artifact_location
            files = sorted(p.relative_to(artifacts) for p in artifacts.rglob("*") if p.is_file())
            logged = [artifacts / p for p in files  # the model's artifact, not its code copy
                      if p.name == "feature_store.yaml" and "code" not in p.parts]
            row |= {"champion_version": version.version, "source": version.source,
                    "experiment_artifact_location": location,
                    "postgres_aliases": services.sql(
                        f"mlflow_{store}", "SELECT name, alias, version "
                                           "FROM registered_model_aliases;").splitlines(),
                    "artifact_store_files": len(files),
                    "logged_feature_store_has_secret": any(
                        secret in p.read_text() for p in logged
                        for secret in (services.redis_password, services.passwords["feast"]))}
            check(not row["logged_feature_store_has_secret"],
                  "a password of the online store is in the logged feature_store.yaml")
            check(location.startswith("mlflow-artifacts:"),
                  f"experiment artifact location {location}: not the server's artifact store")
            check(len(logged) == 1, f"{len(logged)} logged feature_store.yaml in {artifacts}")
            online = yaml.safe_load(logged[0].read_text())["online_store"]["type"]
            row["logged_online_store"] = online
            check(online == store, f"the model logged the online store {online}")
        with step(steps, f"{store}: online store holds the features") as row:
            row["online_store"] = online_rows(services, store)
            check(sum(row["online_store"].values()) > 0, "the online store is empty")
        if store == args.online_stores[0]:
            try_prefect_worker(services, env, state, url, work, procs, steps, stack)
        try_serving(store, services, state, env, procs, steps, stack)


def try_serving(store: str, services: Services, state: Path, env: dict, procs: Processes,
                steps: list[dict], stack: ExitStack) -> None:
    """`llmseqrec serve` answers user USER from the online store, and cannot once the user's
    features are deleted from it."""
    with step(steps, f"{store}: llmseqrec serve answers a user_id query") as row:
        if store == "postgres":  # registry and online store in PostgreSQL: the model
            moved = state.rename(state.with_name(f"{state.name}-moved"))  # needs no file
            stack.callback(moved.rename, state)  # of the state directory to serve
            row["state_dir_moved_away_while_serving"] = True
        port = procs.port()
        server = procs.start(f"serve-{store}", [
            BIN / "llmseqrec", "serve", "--port", port, "--state-dir", state], env=env)
        stack.callback(procs.stop, server)
        serve_url = f"http://127.0.0.1:{port}"
        row |= {"ready_seconds": wait_http(f"{serve_url}/ping", server),
                "listening": loopback_only(port)}
        query = {"inputs": [{"user_id": USER, "k": 5}]}
        status, answer, ms = post(f"{serve_url}/invocations", query)
        row |= {"query": query, "status": status, "ms": round(ms, 1), "answer": answer}
        check(status == 200 and bool(answer["predictions"][0]["recommendations"]),
              f"HTTP {status}: {answer}")
        row["median_ms_of_next_20"] = round(statistics.median(
            post(f"{serve_url}/invocations", query)[2] for _ in range(20)), 1)
        empty_user_features(services, store)  # the answer came from the online store:
        status, answer, _ = post(f"{serve_url}/invocations", query)  # now it cannot
        row |= {"after_emptying_user_features": {"status": status, "answer": answer}}
        check(status == 400, f"with the user features deleted: HTTP {status}: {answer}")


def try_default_stores(data: Path, work: Path, args, procs: Processes, steps: list[dict]
                       ) -> None:
    """The same job with the default stores (SQLite, local files), to compare times."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "LLMSEQREC_FEATURE_STORE_YAML")}
    with step(steps, "default stores: llmseqrec run (SQLite MLflow and Feast, local files)"):
        procs.run("run-default", [BIN / "llmseqrec", "run", "--data-dir", data, "--state-dir",
                                  work / "state-default", "--epochs", args.epochs],
                  env=env | {"PREFECT_HOME": str(work / "prefect-default"),
                             "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})


def try_services(data: Path, work: Path, args, procs: Processes, steps: list[dict]) -> None:
    """PostgreSQL and Redis, then each online store in turn; stops what it started."""
    with ExitStack() as stack:
        with step(steps, "start postgres and redis on 127.0.0.1") as row:
            services = start_services(work, args.online_stores, procs, stack, row)
        for store in args.online_stores:
            with suppress(StepFailed):
                try_online_store(store, services, data, work, args, procs, steps)


def try_prefect_worker(services: Services, env: dict, state: Path, mlflow_url: str, work: Path,
                       procs: Processes, steps: list[dict], stack: ExitStack) -> None:
    """A Prefect server on PostgreSQL, a process worker of the pool llmseqrec, the flows
    deployed to it by `llmseqrec deploy`, and one run of the retrain deployment, which must
    register a new version in the MLflow server."""
    from mlflow import MlflowClient

    with step(steps, "prefect server on postgres") as row:
        port = procs.port()
        server = procs.start("prefect-server", [
            BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env | {"PREFECT_HOME": str(work / "prefect-server"),
                       "PREFECT_SERVER_DATABASE_CONNECTION_URL": services.pg_url(
                           "prefect", "prefect", "postgresql+asyncpg")})
        stack.callback(procs.stop, server)
        api = f"http://127.0.0.1:{port}/api"
        row |= {"ready_seconds": wait_http(f"{api}/health", server),
                "listening": loopback_only(port)}
    env = env | {"PREFECT_API_URL": api, "PREFECT_HOME": str(work / "prefect-client")}
    with step(steps, "work pool, llmseqrec deploy, process worker, retrain deployment run"
              ) as row:
        procs.run("work-pool", [BIN / "prefect", "work-pool", "create", "llmseqrec",
                                "--type", "process"], env=env)
        procs.run("deploy", [BIN / "llmseqrec", "deploy", "--state-dir", state], env=env)
        row["deployed"] = [line for line in procs.tail("deploy").splitlines()
                           if line.startswith("deployed ")]
        stack.callback(procs.stop, procs.start("worker", [
            BIN / "prefect", "worker", "start", "--pool", "llmseqrec"], env=env))
        before = len(MlflowClient(mlflow_url).search_model_versions("name = 'llmseqrec'"))
        started = time.perf_counter()
        procs.run("deployment-run", [
            BIN / "prefect", "deployment", "run", "retrain/llmseqrec",
            "--param", 'params={"epochs": 3}', "--watch", "--watch-timeout", "1800"], env=env)
        after = len(MlflowClient(mlflow_url).search_model_versions("name = 'llmseqrec'"))
        row |= {"run_seconds": round(time.perf_counter() - started, 1),
                "model_versions_before_after": [before, after],
                "final_state": [line for line in procs.tail("deployment-run").splitlines()
                                if "flow-run." in line][-1:]}
        check(after == before + 1, "the retrain run registered no new version")


def ddp_worker(data: Path, out: Path, epochs: int) -> None:
    """Train an ID-only model on `data` (alone, or as one rank under torchrun); rank 0 writes
    its curve and time to `out`."""
    import torch
    import torch.distributed as dist

    from ingestion.readers import load_movielens
    from training.params import RetrainParams
    from training.sequences import ItemIndex, leave_one_out, user_sequences
    from training.train import train_model

    raw = load_movielens(data)
    index = ItemIndex.from_items(raw.items["item_id"])
    split = leave_one_out(user_sequences(raw.interactions, index))
    # no dropout (nor the random parts it takes): the same curve in one process and in two
    params = RetrainParams(item_repr="id", dropout=0.0, repeat_bias=False, epochs=epochs,
                           patience=epochs, lr=3e-3)
    started = time.perf_counter()
    result = train_model(split, params.model(len(index), None, split.train),
                         params.training(progress=False))
    seconds = time.perf_counter() - started
    world = dist.get_world_size() if dist.is_initialized() else 1
    if not dist.is_initialized() or dist.get_rank() == 0:
        out.write_text(json.dumps({"processes": world, "threads": torch.get_num_threads(),
                                   "users": len(split.train), "items": len(index),
                                   "seconds": seconds, "history": result.history}))
    if dist.is_initialized():
        dist.destroy_process_group()


def try_torchrun(data: Path, work: Path, args, procs: Processes, steps: list[dict]) -> None:
    """The same training alone and under `torchrun --nproc_per_node 2`: same curve, times."""
    runs = {}
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    worker = [Path(__file__).resolve(), "--ddp-worker", data, "--epochs", args.epochs]
    for name, launcher in (("one process", [sys.executable]),
                           ("torchrun 2 processes", [
                               BIN / "torchrun", "--nproc_per_node", "2", "--master_addr",
                               "127.0.0.1", "--master_port", free_port()])):
        with step(steps, f"train, {name}") as row:
            out = work / f"ddp-{len(runs)}.json"
            procs.run(f"train-{len(runs)}", [*launcher, *worker, "--ddp-out", out], env=env)
            runs[name] = json.loads(out.read_text())
            row |= {k: runs[name][k] for k in ("processes", "threads", "users", "items")}
            row |= {"train_seconds": round(runs[name]["seconds"], 2),
                    "median_epoch_seconds": round(statistics.median(
                        r["epoch_seconds"] for r in runs[name]["history"]), 2),
                    "loss": [round(r["loss"], 5) for r in runs[name]["history"]]}
    with step(steps, "torchrun follows the one-process curve") as row:
        alone, ddp = (runs[n]["history"] for n in runs)
        row["max_relative_loss_difference"] = max(
            abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(alone, ddp, strict=True))
        check(row["max_relative_loss_difference"] < 1e-3, "the curves differ")


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    for server, cmd in (("postgres", [postgres_bin() / "postgres", "--version"]),
                        ("redis-server", ["redis-server", "--version"])):
        try:
            found[server] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except (OSError, AssertionError) as e:
            found[server] = f"not found: {e}"
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30, help="users of the job's slice")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--online-stores", nargs="+", choices=["redis", "postgres"],
                        default=["redis", "postgres"])
    parser.add_argument("--ddp-users", type=int, default=300,
                        help="users of the torchrun slice (0: skip torchrun)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--ddp-worker", type=Path, metavar="DATA_DIR",
                        help="only train on this MovieLens-format data (as one process, or as "
                             "one rank under torchrun) and write the curve to --ddp-out")
    parser.add_argument("--ddp-out", type=Path, default=Path("ddp.json"))
    args = parser.parse_args()
    if args.ddp_worker:
        return ddp_worker(args.ddp_worker, args.ddp_out, args.epochs)

    work = Path(tempfile.mkdtemp(prefix="llmseqrec-scale-out-"))
    (work / "logs").mkdir()
    procs, steps = Processes(work / "logs"), []
    result = {"benchmark": "scale_out", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.platform()}, {platform.machine()}, "
                         f"{len(os.sched_getaffinity(0))} cores",
              "settings": {k: v for k, v in vars(args).items()
                           if k not in ("ddp_worker", "ddp_out")},
              "versions": versions(), "steps": steps}
    started = time.perf_counter()
    try:
        data = write_movielens_slice(work / "slice", args.users)
        with suppress(StepFailed):
            try_default_stores(data, work, args, procs, steps)
        with suppress(StepFailed):
            try_services(data, work, args, procs, steps)
        with suppress(StepFailed), step(steps, "everything started here is stopped") as row:
            row["still_listening"] = {p: listeners(p) for p in procs.ports if listeners(p)}
            check(not row["still_listening"], "servers still up")
        if args.ddp_users:
            with suppress(StepFailed):
                try_torchrun(write_movielens_slice(work / "ddp-slice", args.ddp_users), work,
                             args, procs, steps)
    finally:
        result |= {"seconds": round(time.perf_counter() - started, 1),
                   "passed": all(s.get("ok") for s in steps)}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scale_out.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps([{k: s.get(k) for k in ("step", "ok", "seconds", "error")} for s in steps],
                     indent=2))


if __name__ == "__main__":
    main()
