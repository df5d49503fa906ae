"""Serving benchmark: real HTTP requests to the model server of `llmseqrec serve` (MLflow's
scoring app behind serving.hardened, run by uvicorn) of the recommender over the
amazon2018-scientific catalog (hybrid items, hidden 64, 2 layers, max_len 50), beside the same
server serving a constant-output pyfunc with the same input and output types (the floor of the
serving stack), measured in the same run with the same request bodies:

- latency p50/p95/p99 and throughput at each concurrency (histories of 50 items, k=10), the
  model and the floor taking turns in slices of a few seconds, and the ratio of their p50s;
- in-process `Recommender.predict` of one query, p50/p95;
- generated malformed requests: status codes by kind, no 5xx, the server still answers;
- a load at concurrency 8: no errors, resident memory of the server's process tree grows < 10%.

The weights are a seeded random init and the text table random vectors of width 384 under a
made-up embedding version: latency does not depend on training. Run from the project root as
a module (a script named serving.py would shadow the `serving` package):

    .venv/bin/python -m bench.serving [--seconds 20] [--load-seconds 60] [--malformed 1000]

`--stack stock` serves the same models with MLflow's app alone (the A/B of the hardening).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import scoring_server

from features.store import store_config
from ingestion.published import read_recbole_split
from ingestion.state import Stores
from llmseqrec.ops import serve_command
from serving.hardened import MODEL_URI
from serving.recommender import Recommender, save_bundle
from serving.registry import (
    EXPERIMENT,
    MODEL_NAME,
    PACKAGE_ROOT,
    alias_challenger,
    log_recommender,
    promote,
    register_version,
)
from serving.schema import Query
from training.model import ModelConfig, SeqRec, TextTable
from training.params import RetrainParams
from training.sequences import ItemIndex, popularity, user_sequences

RESULTS = Path(__file__).resolve().parent / "results"
DATA = PACKAGE_ROOT.parent / "shared" / "data" / "amazon2018-scientific"
EMBEDDING_VERSION = "bench-random-384"  # made up: random vectors, not the encoder's
HISTORY, K = 50, 10
HOST = "127.0.0.1"
STACKS = {"hardened": "MLflow's scoring app behind serving.hardened (`llmseqrec serve`)",
          "stock": "MLflow's scoring app alone, as `mlflow models serve` runs it"}

# The floor: the served model's types (so the same request validation), a fixed answer of the
# real model's shape, no model.
FLOOR_CODE = '''"""Constant-output pyfunc: the floor of the serving stack."""
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from serving.schema import Answer, Query

ANSWER = Answer.model_validate_json({answer!r})


class Constant(PythonModel):
    def predict(self, context, model_input: list[Query], params=None) -> list[Answer]:
        return [ANSWER for _ in model_input]


set_model(Constant())
'''


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str | None = "application/json"  # None: no Content-Type header


@dataclass(frozen=True)
class Served:
    port: int  # on HOST
    pid: int  # of the uvicorn server, the root of the server's process tree


def scientific_bundle(path: Path, seed: int) -> tuple[ItemIndex, ModelConfig, Callable]:
    """The recommender bundle over the Scientific catalog, untrained (seeded init), with the
    model settings of `make run`; and how to log it (feature store config, example history)."""
    interactions, items = read_recbole_split(DATA, "Scientific")
    index = ItemIndex.from_items(items["item_id"])
    titles = items.set_index("item_id").loc[index.item_ids, "text"].tolist()
    sequences = user_sequences(interactions, index)
    counts = popularity(sequences, len(index))
    torch.manual_seed(seed)
    text = TextTable(torch.randn(len(index), 384), EMBEDDING_VERSION)
    cfg = RetrainParams(max_len=HISTORY).model(len(index), text, sequences)
    model = SeqRec(cfg, text)
    save_bundle(path, model, index, titles, counts, EMBEDDING_VERSION)
    return index, cfg, lambda config, example: log_recommender(
        model, index, titles, counts, EMBEDDING_VERSION, config, example)


def register_champion(stores: Stores, log_model: Callable[[], str]) -> None:
    """Log a model in `stores`' own tracking store and make it `llmseqrec@champion`, the model
    `serve_command` serves."""
    mlflow.set_tracking_uri(stores.tracking_uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        EXPERIMENT, artifact_location=stores.artifact_location))
    with mlflow.start_run():
        version = register_version(log_model(), MODEL_NAME)
        alias_challenger(MODEL_NAME, version)
    promote(MODEL_NAME, version, True, "serving benchmark", {})


def log_floor(code: Path, example: list[int]) -> str:
    info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                   code_paths=[str(PACKAGE_ROOT / "serving")],
                                   input_example=[Query(history=example, k=K).model_dump()])
    return info.model_uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stack_command(stores: Stores, port: int, workers: int, stack: str
                  ) -> tuple[list[str], dict[str, str]]:
    """The server of `llmseqrec serve`; or ("stock") MLflow's scoring app alone, as
    `mlflow models serve` runs it (uvicorn, the same model and workers): the A/B of the
    hardening layer."""
    cmd, env = serve_command(stores, port, workers=workers)
    if stack == "hardened":
        return cmd, env
    uvicorn, options = cmd[0], cmd[cmd.index("--host"):]
    return ([uvicorn, "mlflow.pyfunc.scoring_server.app:app", *options],
            env | {scoring_server._SERVER_MODEL_PATH: env[MODEL_URI]})


@contextmanager
def served(stores: Stores, log: Path, workers: int, stack: str, timeout_s: float = 300
           ) -> Iterator[Served]:
    """The model server of `stores`' champion on a free loopback port, until /ping answers;
    its process group is stopped on exit."""
    port = free_port()
    cmd, env = stack_command(stores, port, workers, stack)
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not ping(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start:\n"
                                   f"{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Served(port, server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def ping(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def post(conn: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
    """POST to /invocations on a keep-alive connection (reopened after a failure)."""
    headers = {} if request.content_type is None else {"Content-Type": request.content_type}
    try:
        conn.request("POST", "/invocations", request.body, headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        raise


def good_requests(index: ItemIndex, n: int, rng: np.random.Generator) -> list[Request]:
    """`n` queries, each a random history of HISTORY distinct catalog ids, k=K."""
    return [Request(json.dumps({"inputs": [{"history": h, "k": K}]}).encode())
            for h in random_histories(index, n, rng)]


def random_histories(index: ItemIndex, n: int, rng: np.random.Generator) -> list[list[int]]:
    return [rng.choice(index.item_ids, HISTORY, replace=False).tolist() for _ in range(n)]


def hammer(server: Served, requests: list[Request], concurrency: int,
           seconds: float) -> tuple[list[float], int, float]:
    """`concurrency` threads, one keep-alive connection each, send `requests` in turn for
    `seconds`: latencies (s) of the 200 answers, errors (other statuses or exceptions), and
    the wall time."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
        mine, failed, i = [], 0, offset
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                status, _ = post(conn, requests[i % len(requests)])
            except (OSError, http.client.HTTPException):
                status = 0
            if status == 200:
                mine.append(time.perf_counter() - started)
            else:
                failed += 1
            i += concurrency
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - started


def interleaved(servers: dict[str, Served], requests: list[Request], concurrency: int,
                seconds: float, slice_s: float) -> dict[str, dict[str, float]]:
    """Each server's latency at `concurrency` over `seconds`, the servers taking turns in
    slices of `slice_s`: all see the same machine, whose speed drifts within minutes."""
    runs = {name: ([], 0, 0.0) for name in servers}
    for _ in range(max(1, round(seconds / slice_s))):
        for name, server in servers.items():
            latencies, errors, wall = hammer(server, requests, concurrency, slice_s)
            mine, failed, total = runs[name]
            runs[name] = (mine + latencies, failed + errors, total + wall)
    return {name: latency_summary(*run) for name, run in runs.items()}


def latency_summary(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "requests": len(latencies), "errors": errors,
            "requests_per_second": round(len(latencies) / seconds, 1)}


def predict_latency(recommender: Recommender, histories: list[list[int]], warmup: int = 20
                    ) -> dict[str, float]:
    """p50/p95 of in-process `Recommender.predict` of one query (after `warmup` calls)."""
    times = []
    for i, history in enumerate([*histories[:warmup], *histories]):
        started = time.perf_counter()
        recommender.predict(None, [Query(history=history, k=K)])
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3), "calls": len(times)}


def malformed_requests(index: ItemIndex, n: int, rng: np.random.Generator
                       ) -> list[tuple[str, Request]]:
    """`n` malformed requests, the kinds in turn, each drawn from `rng`: (kind, request)."""
    def pick(values: list):
        return values[int(rng.integers(len(values)))]

    def history() -> list[int]:
        return rng.choice(index.item_ids, int(rng.integers(1, HISTORY + 1))).tolist()

    def query(**fields) -> Request:
        return Request(json.dumps({"inputs": [fields]}).encode())

    def junk_ids(values: list) -> Request:
        ids = history()
        ids[int(rng.integers(len(ids)))] = pick(values)
        return query(history=ids, k=K)

    def good() -> bytes:
        return json.dumps({"inputs": [{"history": history(), "k": K}]}).encode()

    def nested(depth: int) -> Request:
        return Request(b'{"inputs": [{"history": ' + b"[" * depth + b"]" * depth + b', "k": 10}]}')

    kinds: dict[str, Callable[[], Request]] = {
        "not json": lambda: Request(pick([b"history=1,2,3", b"<xml/>", b"{not json",
                                          rng.bytes(64)])),
        "truncated json": lambda: Request((b := good())[:int(rng.integers(1, len(b)))]),
        "empty body": lambda: Request(b""),
        "wrong content type": lambda: Request(good(), pick(
            ["text/plain", "application/xml", "text/csv", "application/x-parquet",
             "application/json; charset=latin-1", "application/json; foo=bar"])),
        "no content type": lambda: Request(good(), None),
        "no inputs": lambda: Request(json.dumps({pick(
            ["rows", "data", "instances", "dataframe_records", "dataframe_split", "messages",
             "prompt"]): [{"history": history(), "k": K}]}).encode()),
        "top level not an object": lambda: Request(pick([b"[1, 2, 3]", b"42", b'"inputs"',
                                                         b"null"])),
        "inputs not a list": lambda: Request(json.dumps({"inputs": pick(
            ["junk", 5, None, {"history": history(), "k": K}, True])}).encode()),
        "string ids": lambda: junk_ids(["abc", "12", "", "1e3", " 7 "]),
        "float ids": lambda: junk_ids([1.5, 2.0, -0.5, 1e300, float("nan"), float("inf")]),
        "null ids": lambda: pick([junk_ids([None]), query(history=None, k=K)]),
        "nested ids": lambda: junk_ids([[1, 2], {"a": 1}, [[[]]], {}]),
        "bad k": lambda: query(history=history(), k=pick(
            [0, -1, 101, 10**30, "ten", "10", 2.5, None, [10]])),
        "history of 100,000": lambda: query(history=rng.choice(index.item_ids, 100_000).tolist(),
                                            k=K),
        "history and user_id": lambda: query(history=history(), user_id=1, k=K),
        "neither history nor user_id": lambda: query(k=K),
        "unknown user_id": lambda: query(user_id=int(rng.integers(1, 10**9)), k=K),
        "unknown fields": lambda: query(history=history(), k=K, foo=pick([1, "x", [None]])),
        "deep nesting": lambda: nested(int(10 ** rng.uniform(2, 5))),  # depth 100 to 100,000
        "ints beyond int64": lambda: junk_ids([2**63, -(2**63) - 1, 10**40, -(10**100)]),
        "unicode junk": lambda: pick([
            junk_ids(["\u202e\u0000\U0001f4a9", "ｈｉｓｔｏｒｙ"]),
            Request('{"inputs": [{"hist\u00f6ry": [1], "k": 10}]}'.encode()),
            Request(b'{"inputs": [{"history": [1], "k": 10}]}\xff\xfe'),
            Request("{\"inputs\": \"\ud800\"}".encode("utf-8", "surrogatepass"))]),
        "booleans": lambda: pick([junk_ids([True, False]), query(history=history(), k=True),
                                  query(history=True, k=K),
                                  query(history=history(), k=K, exclude_seen="maybe")]),
    }
    names = list(kinds)
    return [(names[i % len(names)], kinds[names[i % len(names)]]()) for i in range(n)]


def robustness(server: Served, requests: list[tuple[str, Request]], good: Request
               ) -> dict[str, object]:
    """Send each malformed request on a connection of its own (the server closes one after a
    500): status codes by kind (0: no answer), the first 5xx or failure of each kind in detail,
    and whether a good request still gets 200 afterwards."""
    by_kind: dict[str, Counter] = {}
    server_errors = []
    for kind, request in requests:
        status, text = send_once(server, request)
        by_kind.setdefault(kind, Counter())[str(status)] += 1
        if status >= 500 or status == 0:
            server_errors.append({"kind": kind, "status": status,
                                  "content_type": request.content_type,
                                  "body_bytes": len(request.body),
                                  "body": request.body[:200].decode("utf-8", "replace"),
                                  "response": text[:500].decode("utf-8", "replace")})
    after = send_once(server, good)[0]
    return {"requests": len(requests), "status_by_kind": {k: dict(v) for k, v in by_kind.items()},
            "server_errors_5xx": sum(e["status"] >= 500 for e in server_errors),
            "connection_failures": sum(e["status"] == 0 for e in server_errors),
            "examples": first_per_kind(server_errors), "good_request_after": after}


def send_once(server: Served, request: Request) -> tuple[int, bytes]:
    """Status and body of `request` on a new connection; (0, the error) when none came."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        return post(conn, request)
    except (OSError, http.client.HTTPException) as e:
        return 0, repr(e).encode()
    finally:
        conn.close()


def first_per_kind(errors: list[dict]) -> list[dict]:
    seen: dict[tuple, dict] = {}
    for e in errors:
        seen.setdefault((e["kind"], e["status"]), e | {"count": 0})["count"] += 1
    return list(seen.values())


def tree_rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of `pid` and all its descendants, MiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total_kib, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines()
                           if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def load_test(server: Served, requests: list[Request], concurrency: int, warmup_s: float,
              seconds: float) -> dict[str, float]:
    """Errors and resident-memory growth over `seconds` of load after a warm-up."""
    hammer(server, requests, concurrency, warmup_s)
    before = tree_rss_mib(server.pid)
    latencies, errors, wall = hammer(server, requests, concurrency, seconds)
    after = tree_rss_mib(server.pid)
    growth = 100 * (after / before - 1)
    return latency_summary(latencies, errors, wall) | {
        "concurrency": concurrency, "seconds": seconds, "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1), "rss_growth_percent": round(growth, 2)}


def target(name: str, passed: bool, value: object) -> dict[str, object]:
    return {"target": name, "value": value, "pass": bool(passed)}


def targets(latency: dict, predict: dict, robust: dict, load: dict) -> list[dict[str, object]]:
    """Each target of the issue, its figure and whether it is met."""
    near_floor = []
    for c, model in latency["model"].items():
        limit = 1.5 * latency["floor"][c]["p50_ms"] + 5
        near_floor.append(target(f"HTTP p50 at concurrency {c} <= 1.5 x floor p50 + 5 ms",
                                 model["p50_ms"] <= limit,
                                 {"model_p50_ms": model["p50_ms"], "limit_ms": round(limit, 2)}))
    return [
        *near_floor,
        target("in-process predict p50 < 5 ms", predict["p50_ms"] < 5, predict["p50_ms"]),
        target(f"{robust['requests']} malformed requests: no 5xx, server still up",
               robust["server_errors_5xx"] == 0 and robust["connection_failures"] == 0
               and robust["good_request_after"] == 200 and robust["server_up_after"],
               robust["server_errors_5xx"]),
        target(f"{load['seconds']:g} s load at concurrency {load['concurrency']}: no errors",
               load["errors"] == 0, load["errors"]),
        target("resident memory grows < 10% over the load", load["rss_growth_percent"] < 10,
               load["rss_growth_percent"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20, help="timed seconds per level")
    parser.add_argument("--slice-seconds", type=float, default=2,
                        help="model and floor take turns in slices this long")
    parser.add_argument("--stack", choices=list(STACKS), default="hardened",
                        help="stock: MLflow's scoring app without serving.hardened (A/B)")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--load-concurrency", type=int, default=8)
    parser.add_argument("--malformed", type=int, default=1000)
    parser.add_argument("--predict-calls", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the in-process predict (the served model "
                             "takes one per query)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="server processes of each server (default, as `llmseqrec serve`: "
                             "one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model_stores, floor_stores = Stores(tmp / "model"), Stores(tmp / "floor")
        bundle = tmp / "recommender.pt"
        index, cfg, log_model = scientific_bundle(bundle, args.seed)
        config = store_config(model_stores.state_dir)
        example = random_histories(index, 1, rng)[0]
        register_champion(model_stores, lambda: log_model(config, example))
        print("in-process predict ...", flush=True)
        recommender = Recommender()
        recommender.load(bundle)
        predict = predict_latency(recommender, random_histories(index, args.predict_calls, rng))
        [answer] = recommender.predict(None, [Query(history=example, k=K)])
        floor_code = tmp / "constant_model.py"
        floor_code.write_text(FLOOR_CODE.format(answer=answer.model_dump_json()))
        register_champion(floor_stores, lambda: log_floor(floor_code, example))

        requests = good_requests(index, 2000, rng)
        print("starting both servers ...", flush=True)
        with (served(model_stores, tmp / "model.log", args.workers, args.stack) as model,
              served(floor_stores, tmp / "floor.log", args.workers, args.stack) as floor):
            latency: dict[str, dict[str, dict]] = {"model": {}, "floor": {}, "ratio": {}}
            for c in args.concurrency:
                for server in (model, floor):
                    hammer(server, requests, c, args.warmup)
                level = interleaved({"model": model, "floor": floor}, requests, c,
                                    args.seconds, args.slice_seconds)
                for name, summary in level.items():
                    latency[name][str(c)] = summary
                    print(f"{name:5s} concurrency {c}: {summary}", flush=True)
                latency["ratio"][str(c)] = round(
                    level["model"]["p50_ms"] / level["floor"]["p50_ms"], 2)
            print("load ...", flush=True)
            load = load_test(model, requests, args.load_concurrency, args.warmup,
                             args.load_seconds)
            print(f"load: {load}", flush=True)
            print("malformed requests ...", flush=True)
            malformed = malformed_requests(index, args.malformed, rng)
            robust = robustness(model, malformed, requests[0])
            robust["server_up_after"] = ping(model.port)
            # the same requests to the floor: which answers come from the serving stack itself
            floor_robust = robustness(floor, malformed, requests[0])

    result = {
        "benchmark": "serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"torch {torch.__version__}, MLflow {mlflow.__version__}",
        "settings": {
            "catalog": f"amazon2018-scientific, {len(index)} items",
            "model": asdict(cfg),
            "weights": f"seeded random init (seed {args.seed}), untrained",
            "text_table": f"random vectors of width {cfg.text_dim}, made-up version "
                          f"{EMBEDDING_VERSION!r}, not the encoder's",
            "server": f"{STACKS[args.stack]}, 127.0.0.1, {args.workers} uvicorn worker(s)",
            "torch_threads": {"in_process": torch.get_num_threads(), "served": 1},
            "floor": "the same server, a constant-output pyfunc with the same input and output "
                     "types (same request validation), returning the model's answer to one query",
            "client": "one thread per concurrent client, one keep-alive http.client connection "
                      "each, same machine",
            "requests": f'{len(requests)} random histories of {HISTORY} distinct catalog ids, '
                        f'k={K}, {{"inputs": [{{"history": [...], "k": {K}}}]}}',
            "seconds_per_level": args.seconds, "warmup_seconds": args.warmup,
            "levels": f"model and floor in turns of {args.slice_seconds:g} s",
        },
        "http_latency": latency,
        "in_process_predict": predict,
        "load": load,
        "malformed": robust,
        "malformed_floor": {k: floor_robust[k] for k in ("status_by_kind", "server_errors_5xx")},
        "targets": targets(latency, predict, robust, load),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
