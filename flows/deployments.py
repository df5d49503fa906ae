"""Deployments of the flows to a Prefect work pool: `nightly` on a schedule, the others to run
on demand (from the UI, `prefect deployment run`, or `run_deployment`)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import ObjectAlreadyExists

from flows.retrain import ensure_retrain_lock
from training.params import RetrainParams

POOL = "llmseqrec"
SOURCE = Path(__file__).resolve().parents[1]  # the checkout the worker runs flows from
FLOWS = {"nightly": "flows/nightly.py:nightly", "ingest": "flows/ingest.py:ingest_inbox",
         "embed-items": "flows/embed_items.py:embed_items", "retrain": "flows/retrain.py:retrain",
         "tune": "flows/tune.py:tune", "tune-encoder": "flows/tune_encoder.py:tune_encoder"}
EMBEDS = ("nightly", "ingest", "embed-items")  # the flows that embed item texts
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def ensure_pool(pool: str) -> None:
    """A process work pool (its workers run each flow run in a subprocess)."""
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


def deploy_flows(state_dir: Path, cron: str | None, interval_s: float | None = None,
                 pool: str = POOL, serving_url: str | None = None,
                 params: RetrainParams | None = None, encoder: str | None = None) -> list[str]:
    """Create (or update) one deployment per flow in `pool`; `nightly` runs on `cron` or every
    `interval_s` seconds; `nightly`, `retrain` and `tune` with `params` (default:
    RetrainParams()); the flows that embed item texts with `encoder` (default: minilm), and
    `tune-encoder` tunes it. Their names, as `flow/deployment`."""
    ensure_pool(pool)
    ensure_retrain_lock()
    names = []
    for flow_name, entrypoint in FLOWS.items():
        flow = Flow.from_source(source=str(SOURCE), entrypoint=entrypoint)
        parameters: dict = {"state_dir": str(state_dir)}
        if flow_name in ("nightly", "retrain"):
            parameters["serving_url"] = serving_url
        if flow_name in ("nightly", "retrain", "tune") and params is not None:
            parameters["params"] = params.model_dump()
        if flow_name in (*EMBEDS, "tune-encoder") and encoder:
            parameters["encoder"] = encoder
        scheduled = flow_name == "nightly"
        deployment = flow.to_deployment(
            name="llmseqrec", parameters=parameters,
            cron=cron if scheduled and interval_s is None else None,
            interval=timedelta(seconds=interval_s) if scheduled and interval_s else None,
            concurrency_limit=ONE_AT_A_TIME if flow_name in ("nightly", "retrain") else None)
        deployment.apply(work_pool_name=pool)
        names.append(f"{flow.name}/llmseqrec")
    return names
