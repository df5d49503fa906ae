"""Ingest one interaction batch: exactly once, validated, every row accepted or quarantined,
or the whole batch rejected with the store unchanged, whatever went wrong with it."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from pathlib import Path

import pandas as pd

from data_checks.validate import CheckedFrame, validate_interactions, validate_items
from ingestion.drift import DriftThresholds, drift_summary
from ingestion.interaction_store import BatchRecord, Ledger
from ingestion.readers import DatasetError, read_interaction_batch
from ingestion.state import Stores

KEY = ["user_id", "item_id", "timestamp"]
Read = Callable[[], tuple[pd.DataFrame, list[str]]]  # a batch's raw rows, ignored columns
REASON_SUFFIX = ".reason.txt"  # beside a rejected file: why it was rejected
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class IngestConfig:
    max_bad_share: float = 0.2  # a batch with more failing rows than this is rejected whole
    data_docs: bool = True  # a Data Docs page per validation (off: quicker bulk loads)
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


# checks a read batch and stores its rows, or raises BatchRejected: the report of the batch
CheckAndStore = Callable[[Read, BatchReport, Stores, datetime, IngestConfig], BatchReport]


class BatchRejected(Exception):
    def __init__(self, report: BatchReport) -> None:
        super().__init__(f"{report.file_name}: batch rejected: {report.message}")
        self.report = report


class BatchesRejected(Exception):
    """One or more batches of an inbox run were rejected (each kept in rejected/)."""


class StoreUnavailable(Exception):
    """The state directory could not be read or written (a locked ledger, a full or unreachable
    disk): nothing of the batch was stored, and it may go in on a retry."""


@contextmanager
def state_io() -> Iterator[None]:
    """Report an I/O failure of the state directory as StoreUnavailable."""
    try:
        yield
    except (OSError, sqlite3.Error) as e:
        raise StoreUnavailable(f"the state directory failed: {type(e).__name__}: {e}") from e


def _one_line(text: str) -> str:
    """`text` on one line, of bounded length (a reason may quote a whole row)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _reason(error: Exception) -> str:
    """Why a batch that raised `error` was rejected."""
    return _one_line(str(error) if isinstance(error, DatasetError)
                     else f"unexpected {type(error).__name__} while ingesting: {error}")


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(path, folder / path.name)


def _move_or_say(path: Path, folder: Path, report: BatchReport) -> None:
    """Move `path` into `folder`; if that fails, say so in the report: the file stays."""
    try:
        _move(path, folder)
    except OSError as e:
        report.message = _one_line(f"{report.message}; it could not be moved to {folder} "
                                   f"({e}) and stays in the inbox")


def reject_file(path: Path, report: BatchReport) -> None:
    """Move a rejected inbox file to rejected/ beside it, its reason in `<name>.reason.txt`
    (or, when it cannot be moved, leave it in the inbox and say so in the report)."""
    folder = path.parent / "rejected"
    _move_or_say(path, folder, report)
    if not path.exists():
        (folder / f"{path.name}{REASON_SUFFIX}").write_text(
            f"batch {report.batch_id or '-'} rejected: {report.message}\n")


def requeue_rejected(inbox: Path) -> list[Path]:
    """Move the files of inbox/rejected/ (fixed, or to try again) back to the inbox, and drop
    their reasons; a file whose name is in the inbox already stays where it is."""
    moved = []
    for path in sorted((inbox / "rejected").glob("*")):
        if path.is_file() and not path.name.endswith(REASON_SUFFIX) \
                and not (inbox / path.name).exists():
            _move(path, inbox)
            (path.parent / f"{path.name}{REASON_SUFFIX}").unlink(missing_ok=True)
            moved.append(inbox / path.name)
    return moved


def ingest_file(path: Path, stores: Stores, now: datetime, cfg: IngestConfig = IngestConfig(),
                kind: BatchKind | None = None) -> BatchReport:
    """Ingest an inbox file (a batch of `kind`, default INTERACTIONS) once, then move it to
    processed/ beside it. A rejected file goes to rejected/ with its reason (BatchRejected);
    on StoreUnavailable it stays in the inbox."""
    kind = kind or INTERACTIONS
    try:
        digest = content_hash(path)
        report = ingest_batch(lambda: kind.read(path), path.name, digest, stores, now, cfg,
                              kind)
    except OSError as e:  # the file itself cannot be read: no retry makes it readable
        report = BatchReport(path.name, "", "rejected",
                             _one_line(f"{path}: cannot be read ({e})"))
        reject_file(path, report)
        raise BatchRejected(report) from None
    except BatchRejected as e:
        reject_file(path, e.report)
        raise
    _move_or_say(path, path.parent / "processed", report)
    return report


def reject_unstored(path: Path, error: BaseException) -> BatchReport:
    """The report of an inbox file whose ingestion failed to the end (the state directory
    stayed unavailable through the retries), moved to rejected/ if it is still in the inbox."""
    report = BatchReport(path.name, "", "rejected", _one_line(
        f"not ingested, the retries failed too: {type(error).__name__}: {error}"))
    if path.is_file():
        report.batch_id = content_hash(path)[:16]
        reject_file(path, report)
    return report


def ingest_batch(read: Read, name: str, digest: str, stores: Stores, now: datetime,
                 cfg: IngestConfig = IngestConfig(), kind: BatchKind | None = None
                 ) -> BatchReport:
    """Ingest the batch (of `kind`, default INTERACTIONS) that `read` returns (raw rows,
    ignored columns) unless content `digest` was accepted before. Raises BatchRejected, after
    recording the rejection, when it is rejected: whatever failed while reading, validating or
    storing it, the store is left unchanged. Raises StoreUnavailable, nothing recorded, when
    the state directory failed."""
    kind = kind or INTERACTIONS
    ledger, store = kind.ledger(stores), stores.store
    batch_id = digest[:16]  # the same content always gets the same id and file names
    with state_io():
        seen = ledger.find(digest)
    if seen and seen.status == "accepted":  # a rejected content is checked again: fixed since?
        return BatchReport(name, seen.batch_id, "duplicate",
                           f"already ingested as batch {seen.batch_id} "
                           f"from {seen.file_name} at {seen.received_at}")
    report = BatchReport(name, batch_id, "rejected", "")
    try:
        report = kind.check_and_store(read, report, stores, now, cfg)
        with state_io():
            ledger.record(BatchRecord(digest, batch_id, name, "accepted", report.rows_in,
                                      report.rows_accepted, report.rows_quarantined,
                                      report.message, now.isoformat()))
    except StoreUnavailable:
        store.remove_batch(batch_id)
        raise
    except Exception as e:  # whatever the batch made fail rejects it, not the run
        if not isinstance(e, BatchRejected):
            report.message = _reason(e)
        report.status, report.rows_accepted, report.rows_quarantined = "rejected", 0, 0
        with state_io():
            store.remove_batch(batch_id)
            ledger.record(BatchRecord(digest, batch_id, name, "rejected", report.rows_in, 0, 0,
                                      report.message, now.isoformat()))
        raise BatchRejected(report) from None
    return report


def ingest_catalog(items: pd.DataFrame, stores: Stores, batch_id: str) -> CheckedFrame:
    """Validate the item catalog; the accepted items become the store's catalog."""
    checked = validate_items(items, docs_root=stores.data_docs, run_name=batch_id)
    if checked.accepted.empty:
        raise DatasetError(f"no valid item in the catalog: {checked.failures}")
    stores.store.put_catalog(checked.accepted)
    stores.store.put_quarantine(checked.quarantined, batch_id, "items")
    return checked


def read_rows(read: Read, report: BatchReport) -> pd.DataFrame:
    """The batch's raw rows (at least one), its ignored columns and row count in `report`."""
    raw, report.ignored_columns = read()
    report.rows_in = len(raw)
    if raw.empty:
        raise DatasetError(f"{report.file_name}: no rows")
    return raw


def refuse_if_too_bad(checked: CheckedFrame, report: BatchReport, cfg: IngestConfig) -> None:
    """Record the checks' outcome in `report`; raise BatchRejected when more than
    `cfg.max_bad_share` of the rows failed."""
    report.failures, report.data_docs = checked.failures, checked.docs
    bad_share = len(checked.quarantined) / checked.rows_in
    if bad_share > cfg.max_bad_share:
        report.message = (f"{bad_share:.0%} of {checked.rows_in} rows failed checks, over the "
                          f"limit of {cfg.max_bad_share:.0%}: {checked.failures}")
        raise BatchRejected(report)


def accept(checked: CheckedFrame, report: BatchReport, notes: list[str]) -> BatchReport:
    """`report` of a stored batch, its message the counts, ignored columns and `notes`."""
    report.status = "accepted"
    report.rows_accepted, report.rows_quarantined = len(checked.accepted), len(checked.quarantined)
    counts = f"{report.rows_accepted} rows accepted, {report.rows_quarantined} quarantined"
    ignored = ([f"ignored extra column(s) {', '.join(report.ignored_columns)}"]
               if report.ignored_columns else [])
    report.message = "; ".join([counts, *ignored, *notes])
    return report


def _check_and_store(read: Read, report: BatchReport, stores: Stores, now: datetime,
                     cfg: IngestConfig) -> BatchReport:
    store = stores.store
    with state_io():
        catalog = store.read_catalog()
        history = store.read(KEY, skip_batch=report.batch_id)
        accepted_before = stores.ledger.all().query("status == 'accepted'")["rows_accepted"]
    if catalog is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    raw = read_rows(read, report)
    checked = validate_interactions(raw, catalog["item_id"], int(now.timestamp()), history,
                                    docs_root=stores.data_docs if cfg.data_docs else None,
                                    run_name=report.batch_id)
    refuse_if_too_bad(checked, report, cfg)
    # the usual volume: earlier accepted batches, but for the first (the initial history)
    earlier = accepted_before.iloc[1:]
    report.drift = drift_summary(checked.accepted, history,
                                 float(earlier.median()) if len(earlier) else None, cfg.drift)
    with state_io():
        store.append(checked.accepted, report.batch_id)
        store.put_quarantine(checked.quarantined, report.batch_id, "interactions")
    flags = report.drift.get("flags")
    return accept(checked, report, [f"drift flagged: {', '.join(flags)}"] if flags else [])


@dataclass(frozen=True)
class BatchKind:
    """A kind of inbox batch: what reads its file, what checks and stores its rows, and the
    ledger that counts its contents once."""

    name: str
    read: Callable[[Path], tuple[pd.DataFrame, list[str]]]
    check_and_store: CheckAndStore
    ledger: Callable[[Stores], Ledger]


INTERACTIONS = BatchKind("interactions", read_interaction_batch, _check_and_store,
                         attrgetter("ledger"))


def batch_user_histories(stores: Stores, batch_id: str) -> pd.DataFrame:
    """The whole stored history of every user who appears in batch `batch_id`."""
    users = stores.store.read(["user_id"], batch=batch_id)["user_id"].unique()
    history = stores.store.read(KEY)
    return history[history["user_id"].isin(users)]
