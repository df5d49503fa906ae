"""The interaction store (date-partitioned Parquet), the quarantine store, the item catalog, and
the ledger that makes every inbox file count exactly once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

INTERACTION_COLUMNS = {"user_id": "int64", "item_id": "int64", "timestamp": "int64",
                       "rating": "float64", "event_type": "object"}
KEY = ["user_id", "item_id", "timestamp"]


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
    """Every file ever taken from the inbox, keyed by the SHA-256 of its content."""

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
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       tuple(batch.__dict__.values()))

    def all(self) -> pd.DataFrame:
        with closing(sqlite3.connect(self.path)) as db:
            return pd.read_sql("SELECT * FROM batches ORDER BY received_at", db)


class InteractionStore:
    """Accepted interactions, one Parquet file per batch and day, under `root`/interactions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.interactions = root / "interactions"
        self.quarantine = root / "quarantine"
        self.catalog = root / "items.parquet"

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        if not any(self.interactions.glob("*/*.parquet")):
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INTERACTION_COLUMNS.items()
                                 if columns is None or c in columns})
        table = pads.dataset(self.interactions, format="parquet", partitioning="hive")
        names = [c for c in (columns or INTERACTION_COLUMNS) if c in table.schema.names]
        return table.to_table(columns=names).to_pandas()

    def append(self, accepted: pd.DataFrame, batch_id: str) -> None:
        """Write a batch's rows partitioned by UTC day. File names derive from the batch id,
        so writing the same batch again replaces its files instead of duplicating them."""
        df = accepted.reindex(columns=list(INTERACTION_COLUMNS)).astype(INTERACTION_COLUMNS)
        df["date"] = pd.to_datetime(df["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
        pads.write_dataset(
            pa.Table.from_pandas(df, preserve_index=False), self.interactions, format="parquet",
            partitioning=pads.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
            basename_template=f"{batch_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )

    def put_quarantine(self, quarantined: pd.DataFrame, batch_id: str, name: str) -> Path | None:
        if quarantined.empty:
            return None
        self.quarantine.mkdir(parents=True, exist_ok=True)
        path = self.quarantine / f"{batch_id}-{name}.parquet"
        quarantined.astype({c: "string" for c in quarantined.columns if c != "row"}).assign(
            batch_id=batch_id).to_parquet(path, index=False)
        return path

    def read_quarantine(self) -> pd.DataFrame:
        files = sorted(self.quarantine.glob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
