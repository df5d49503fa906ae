"""Ingest one interaction batch: exactly once, validated, every row accepted or quarantined,
or the whole batch rejected with the store unchanged."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from data_checks.validate import CheckedFrame, validate_interactions, validate_items
from ingestion.drift import DriftThresholds, drift_summary
from ingestion.interaction_store import BatchRecord
from ingestion.readers import DatasetError, read_interaction_batch
from ingestion.state import Stores

KEY = ["user_id", "item_id", "timestamp"]


@dataclass(frozen=True)
class IngestConfig:
    max_bad_share: float = 0.2  # a batch with more failing rows than this is rejected whole
    drift: DriftThresholds = field(default_factory=DriftThresholds)


@dataclass
class BatchReport:
    file_name: str
    batch_id: str
    status: str  # "accepted", "rejected" or "duplicate" (content already ingested)
    message: str
    rows_in: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    data_docs: str | None = None


class BatchRejected(Exception):
    def __init__(self, report: BatchReport) -> None:
        super().__init__(f"{report.file_name}: batch rejected: {report.message}")
        self.report = report


class BatchesRejected(Exception):
    """One or more batches of an inbox run were rejected (each kept in rejected/)."""


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(path, folder / path.name)


def ingest_file(path: Path, stores: Stores, now: datetime,
                cfg: IngestConfig = IngestConfig()) -> BatchReport:
    """Ingest an inbox file once, then move it to processed/ (or rejected/, kept) beside it."""
    try:
        report = ingest_batch(lambda: read_interaction_batch(path), path.name,
                              content_hash(path), stores, now, cfg)
    except BatchRejected:
        _move(path, path.parent / "rejected")
        raise
    _move(path, path.parent / "processed")
    return report


def ingest_batch(read: Callable[[], tuple[pd.DataFrame, list[str]]], name: str, digest: str,
                 stores: Stores, now: datetime, cfg: IngestConfig = IngestConfig()) -> BatchReport:
    """Ingest the batch `read` returns (raw rows, ignored columns) unless content `digest` was
    seen before. Raises BatchRejected, after recording the rejection, when it is rejected."""
    ledger = stores.ledger
    batch_id = digest[:16]  # the same content always gets the same id and file names
    if seen := ledger.find(digest):
        return BatchReport(name, seen.batch_id, "duplicate",
                           f"already ingested ({seen.status}) as batch {seen.batch_id} "
                           f"from {seen.file_name} at {seen.received_at}")
    report = BatchReport(name, batch_id, "rejected", "")
    try:
        report = _check_and_store(read, report, stores, now, cfg)
    except (BatchRejected, DatasetError) as e:
        report.message = report.message or str(e)
        ledger.record(BatchRecord(digest, batch_id, name, "rejected", report.rows_in, 0, 0,
                                  report.message, now.isoformat()))
        raise BatchRejected(report) from None
    ledger.record(BatchRecord(digest, batch_id, name, "accepted", report.rows_in,
                              report.rows_accepted, report.rows_quarantined, report.message,
                              now.isoformat()))
    return report


def ingest_catalog(items: pd.DataFrame, stores: Stores, batch_id: str) -> CheckedFrame:
    """Validate the item catalog; the accepted items become the store's catalog."""
    checked = validate_items(items, docs_root=stores.data_docs, run_name=batch_id)
    if checked.accepted.empty:
        raise DatasetError(f"no valid item in the catalog: {checked.failures}")
    stores.store.put_catalog(checked.accepted)
    stores.store.put_quarantine(checked.quarantined, batch_id, "items")
    return checked


def _check_and_store(read: Callable[[], tuple[pd.DataFrame, list[str]]], report: BatchReport,
                     stores: Stores, now: datetime, cfg: IngestConfig) -> BatchReport:
    store = stores.store
    catalog = store.read_catalog()
    if catalog is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    raw, report.ignored_columns = read()
    report.rows_in = len(raw)
    if raw.empty:
        raise DatasetError(f"{report.file_name}: no rows")
    history = store.read(KEY, skip_batch=report.batch_id)
    checked = validate_interactions(raw, catalog["item_id"], int(now.timestamp()), history,
                                    docs_root=stores.data_docs, run_name=report.batch_id)
    report.failures, report.data_docs = checked.failures, checked.docs
    bad_share = len(checked.quarantined) / len(raw)
    if bad_share > cfg.max_bad_share:
        report.message = (f"{bad_share:.0%} of {len(raw)} rows failed checks, over the limit of "
                          f"{cfg.max_bad_share:.0%}: {checked.failures}")
        raise BatchRejected(report)
    # the usual volume: earlier accepted batches, but for the first (the initial history)
    earlier = stores.ledger.all().query("status == 'accepted'")["rows_accepted"].iloc[1:]
    report.drift = drift_summary(checked.accepted, history,
                                 float(earlier.median()) if len(earlier) else None, cfg.drift)
    store.append(checked.accepted, report.batch_id)
    store.put_quarantine(checked.quarantined, report.batch_id, "interactions")
    report.status = "accepted"
    report.rows_accepted, report.rows_quarantined = len(checked.accepted), len(checked.quarantined)
    notes = [f"{report.rows_accepted} rows accepted, {report.rows_quarantined} quarantined"]
    if report.ignored_columns:
        notes.append(f"ignored extra column(s) {', '.join(report.ignored_columns)}")
    if report.drift.get("flags"):
        notes.append(f"drift flagged: {', '.join(report.drift['flags'])}")
    report.message = "; ".join(notes)
    return report


def batch_user_histories(stores: Stores, batch_id: str) -> pd.DataFrame:
    """The whole stored history of every user who appears in batch `batch_id`."""
    users = stores.store.read(["user_id"], batch=batch_id)["user_id"].unique()
    history = stores.store.read(KEY)
    return history[history["user_id"].isin(users)]
