"""The interaction store (Parquet partitioned by month), the quarantine store, the item catalog, and
the ledger that makes every inbox file count exactly once."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from features.files import write_parquet

INTERACTION_COLUMNS = {"user_id": "int64", "item_id": "int64", "timestamp": "int64",
                       "rating": "float64", "event_type": "object"}
SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64()),
                    ("rating", pa.float64()), ("event_type", pa.string()), ("month", pa.string())])


@dataclass(frozen=True)
class BatchRecord:
    content_hash: str
    batch_id: str
    file_name: str
    status: str  # "accepted" or "rejected"
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    message: str
    received_at: str


class Ledger:
    """Every content ever taken from the inbox, keyed by its SHA-256, with the outcome of its
    latest attempt: an accepted content is never ingested again, a rejected one may be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("""CREATE TABLE IF NOT EXISTS batches (
                content_hash TEXT PRIMARY KEY, batch_id TEXT, file_name TEXT, status TEXT,
                rows_in INTEGER, rows_accepted INTEGER, rows_quarantined INTEGER,
                message TEXT, received_at TEXT)""")

    def find(self, content_hash: str) -> BatchRecord | None:
        with closing(sqlite3.connect(self.path)) as db:
            row = db.execute("SELECT * FROM batches WHERE content_hash = ?",
                             (content_hash,)).fetchone()
        return BatchRecord(*row) if row else None

    def record(self, batch: BatchRecord) -> None:
        """Record an attempt, in place of an earlier one of the same content."""
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       tuple(batch.__dict__.values()))

    def all(self) -> pd.DataFrame:
        with closing(sqlite3.connect(self.path)) as db:
            return pd.read_sql("SELECT * FROM batches ORDER BY received_at", db)


class InteractionStore:
    """Under `root`: accepted interactions (one Parquet file per batch and month), quarantined
    rows with their reasons, and the accepted item catalog."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.interactions = root / "interactions"
        self.quarantine = root / "quarantine"
        self.catalog = root / "items.parquet"

    def read(self, columns: list[str] | None = None, batch: str | None = None,
             skip_batch: str | None = None) -> pd.DataFrame:
        """Stored interactions (all columns, or `columns`): of one batch, or all but one."""
        files = [str(f) for f in sorted(self.interactions.glob("*/*.parquet"))
                 if (batch is None or f.name.startswith(f"{batch}-"))
                 and not (skip_batch and f.name.startswith(f"{skip_batch}-"))]
        names = columns or list(INTERACTION_COLUMNS)
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=INTERACTION_COLUMNS[c]) for c in names})
        table = pads.dataset(files, format="parquet", partitioning="hive",
                             partition_base_dir=str(self.interactions))
        return table.to_table(columns=names).to_pandas()

    def put_catalog(self, items: pd.DataFrame) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_parquet(items, self.catalog)

    def read_catalog(self) -> pd.DataFrame | None:
        return pd.read_parquet(self.catalog) if self.catalog.is_file() else None

    def append(self, accepted: pd.DataFrame, batch_id: str) -> None:
        """Write a batch's rows partitioned by UTC month. File names derive from the batch id,
        so writing the same batch again replaces its files instead of duplicating them."""
        months = accepted["timestamp"].to_numpy("int64").astype("datetime64[s]").astype(
            "datetime64[M]")
        uniques, codes = np.unique(months, return_inverse=True)
        month = pa.DictionaryArray.from_arrays(
            codes.astype(np.int32), pa.array(np.datetime_as_string(uniques, unit="M")))
        columns = {
            c: pa.array(accepted[c], type=SCHEMA.field(c).type, from_pandas=True)
            if c in accepted else pa.nulls(len(accepted), SCHEMA.field(c).type)
            for c in INTERACTION_COLUMNS
        }
        table = pa.table(columns | {"month": month.cast(pa.string())}, schema=SCHEMA)
        staging = self.root / ".staging" / f"{batch_id}-{os.getpid()}"
        pads.write_dataset(
            table, staging, format="parquet",
            partitioning=pads.partitioning(pa.schema([("month", pa.string())]), flavor="hive"),
            max_partitions=100_000,
            basename_template=f"{batch_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
        for written in sorted(staging.glob("*/*.parquet")):  # readers see whole files only
            final = self.interactions / written.relative_to(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written, final)
        shutil.rmtree(staging)

    def put_quarantine(self, quarantined: pd.DataFrame, batch_id: str, name: str) -> Path | None:
        if quarantined.empty:
            return None
        self.quarantine.mkdir(parents=True, exist_ok=True)
        path = self.quarantine / f"{batch_id}-{name}.parquet"
        write_parquet(quarantined.astype({c: "string" for c in quarantined.columns
                                          if c != "row"}).assign(batch_id=batch_id), path)
        return path

    def remove_batch(self, batch_id: str) -> None:
        """Remove whatever a failed attempt of batch `batch_id` wrote: its interaction files,
        quarantine files and staging folder."""
        for path in [*self.interactions.glob(f"*/{batch_id}-*.parquet"),
                     *self.quarantine.glob(f"{batch_id}-*.parquet")]:
            path.unlink(missing_ok=True)
        for staging in (self.root / ".staging").glob(f"{batch_id}-*"):
            shutil.rmtree(staging, ignore_errors=True)

    def read_quarantine(self) -> pd.DataFrame:
        files = sorted(self.quarantine.glob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
