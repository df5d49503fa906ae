"""Ingest every new file of the inbox, one Prefect task and one artifact per batch: first the
catalog batches of inbox/items/ (then the new or changed item texts are embedded and published
to the feature store), then the interaction batches of inbox/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.store import refresh_user_features
from flows.embed_items import embed_items
from flows.retries import retry_if
from ingestion.batches import (
    INTERACTIONS,
    BatchesRejected,
    BatchKind,
    BatchRejected,
    BatchReport,
    IngestConfig,
    StoreUnavailable,
    batch_user_histories,
    ingest_file,
    reject_unstored,
    requeue_rejected,
)
from ingestion.catalog_batches import CATALOG, catalog_inbox
from ingestion.drift import DriftThresholds
from ingestion.state import Stores, default_state_dir


def inbox_files(inbox: Path) -> list[Path]:
    """Files waiting in the inbox, oldest first: every one is a batch, whatever its name says
    (one that is not a batch format is rejected, not left behind); hidden files (uploads in
    progress) wait."""
    files = [p for p in inbox.glob("*") if p.is_file() and not p.name.startswith(".")]
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


@task(retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_if(
          lambda e: isinstance(e, StoreUnavailable)),  # a read batch is answered already
      cache_policy=NO_CACHE)
def ingest_one(path: Path, stores: Stores, cfg: IngestConfig, kind: BatchKind) -> BatchReport:
    """One batch file: its report, "rejected" ones too. Raises StoreUnavailable, retried, when
    the state directory failed (a retried batch is found in the ledger by its content)."""
    try:
        return ingest_file(path, stores, datetime.now(UTC), cfg, kind)
    except BatchRejected as e:
        return e.report


@task(retries=2, retry_delay_seconds=[2, 5], cache_policy=NO_CACHE)
def publish(stores: Stores, report: BatchReport, kind: BatchKind) -> None:
    """Refresh the user features of an accepted interaction batch; one artifact per batch."""
    if report.status == "accepted" and kind == INTERACTIONS:
        get_run_logger().info("user features refreshed for %d users",
                              refresh_batch_users(stores, report, datetime.now(UTC)))
    create_markdown_artifact(key=f"batch-{report.batch_id or 'unread'}",
                             markdown=batch_markdown(report),
                             description=f"{report.status}: {report.message}")


@flow(name="ingest")
def ingest_inbox(state_dir: Path | None = None, max_bad_share: float = 0.2,
                 popularity_divergence: float = 0.6, retry_rejected: bool = False,
                 data_docs: bool = True, encoder: str | None = None) -> list[BatchReport]:
    """Ingest the inbox's files in arrival order, one task per batch (first those of
    rejected/ again, with `retry_rejected`): the catalog batches of inbox/items/, then the
    interaction batches of inbox/. After an accepted catalog batch, embed the new or changed
    item texts with `encoder` (as embed-items does) and publish them to the feature store.
    Rejected batches stay on disk (rejected/, with their reasons) and fail the run, after
    every other file was ingested. Without `data_docs`, validations publish no Data Docs page
    (quicker for a backfill of many files)."""
    log = get_run_logger()
    stores = Stores(Path(state_dir) if state_dir else default_state_dir())
    cfg = IngestConfig(max_bad_share=max_bad_share, data_docs=data_docs,
                       drift=DriftThresholds(popularity_divergence=popularity_divergence))
    inboxes = {CATALOG: catalog_inbox(stores), INTERACTIONS: stores.inbox}
    if retry_rejected:
        for inbox in inboxes.values():
            log.info("sent again from %s: %s", inbox / "rejected",
                     [p.name for p in requeue_rejected(inbox)])
    reports, catalog_accepted = [], False
    for kind, inbox in inboxes.items():
        for path in inbox_files(inbox):
            outcome = ingest_one(path, stores, cfg, kind,
                                 return_state=True).result(raise_on_failure=False)
            report = (outcome if isinstance(outcome, BatchReport)
                      else reject_unstored(path, outcome))
            publish(stores, report, kind)
            log.info("%s: %s (%s)", report.file_name, report.status, report.message)
            reports.append(report)
            catalog_accepted |= kind == CATALOG and report.status == "accepted"
    if catalog_accepted:
        embed_items(state_dir=stores.state_dir, encoder=encoder)
    rejected = [f"{r.file_name}: batch rejected: {r.message}" for r in reports
                if r.status == "rejected"]
    if rejected:
        raise BatchesRejected(f"{len(rejected)} batch(es) rejected:\n" + "\n".join(rejected))
    return reports
