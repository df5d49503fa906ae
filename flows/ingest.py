"""Ingest every new file of the inbox, one Prefect task and one artifact per batch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.store import refresh_user_features
from ingestion.batches import (
    BatchesRejected,
    BatchRejected,
    BatchReport,
    IngestConfig,
    batch_user_histories,
    ingest_file,
)
from ingestion.drift import DriftThresholds
from ingestion.state import Stores, default_state_dir

BATCH_SUFFIXES = {".csv", ".parquet", ".jsonl", ".ndjson"}


def inbox_files(inbox: Path) -> list[Path]:
    """Batch files waiting in the inbox, oldest first."""
    files = [p for p in inbox.glob("*") if p.is_file() and p.suffix.lower() in BATCH_SUFFIXES]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def batch_markdown(report: BatchReport) -> str:
    rows = [("status", report.status), ("rows in", report.rows_in),
            ("rows accepted", report.rows_accepted),
            ("rows quarantined", report.rows_quarantined),
            ("failing checks", ", ".join(f"{k}: {v}" for k, v in report.failures.items()) or "-"),
            ("drift flags", ", ".join(report.drift.get("flags", [])) or "-"),
            ("message", report.message)]
    lines = [f"# Batch {report.batch_id} ({report.file_name})", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    drift = {k: v for k, v in report.drift.items() if k != "flags" and v is not None}
    if drift:
        lines += ["", "Drift: " + ", ".join(f"{k} {v:.3g}" for k, v in drift.items())]
    if report.data_docs:
        lines += ["", f"[Data Docs of this validation]({report.data_docs})"]
    return "\n".join(lines)


def refresh_batch_users(stores: Stores, report: BatchReport, now: datetime) -> int:
    """Refresh, in the feature store, the recent items of every user of an accepted batch."""
    return refresh_user_features(stores.state_dir,
                                 batch_user_histories(stores, report.batch_id), now)


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def ingest_one(path: Path, stores: Stores, cfg: IngestConfig) -> BatchReport:
    """One batch file: its report, "rejected" ones too (a rejection is an answer, not an I/O
    failure to retry; a retried batch is found in the ledger by its content)."""
    now = datetime.now(UTC)
    try:
        report = ingest_file(path, stores, now, cfg)
    except BatchRejected as e:
        report = e.report
    if report.status == "accepted":
        get_run_logger().info("user features refreshed for %d users",
                              refresh_batch_users(stores, report, now))
    create_markdown_artifact(key=f"batch-{report.batch_id}", markdown=batch_markdown(report),
                             description=f"{report.status}: {report.message}")
    return report


@flow(name="ingest")
def ingest_inbox(state_dir: Path | None = None, max_bad_share: float = 0.2,
                 popularity_divergence: float = 0.6) -> list[BatchReport]:
    """Ingest the inbox's files in arrival order, one task per batch. Rejected batches stay on
    disk (rejected/) and fail the run, after every other file was ingested."""
    log = get_run_logger()
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    cfg = IngestConfig(max_bad_share=max_bad_share,
                       drift=DriftThresholds(popularity_divergence=popularity_divergence))
    reports = [ingest_one(path, stores, cfg) for path in inbox_files(stores.inbox)]
    for report in reports:
        log.info("%s: %s (%s)", report.file_name, report.status, report.message)
    rejected = [f"{r.file_name}: batch rejected: {r.message}" for r in reports
                if r.status == "rejected"]
    if rejected:
        raise BatchesRejected(f"{len(rejected)} batch(es) rejected: " + " | ".join(rejected))
    return reports
