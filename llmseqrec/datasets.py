"""Readers from the formats users have into raw, all-text frames with canonical column names.

Interactions: user_id, item_id, timestamp (unix seconds), rating and event_type (optional).
Items: item_id, title, genres, tags.
Everything is read as text so that validation, not the reader, decides what is malformed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

BUNDLED_MOVIELENS = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"


class DatasetError(ValueError):
    """A data set that cannot be used: missing file or column, not CSV, too little valid data."""


@dataclass(frozen=True)
class RawDataset:
    interactions: pd.DataFrame
    items: pd.DataFrame


def _read_frame(path: Path) -> pd.DataFrame:
    """CSV, Parquet or JSON Lines by file suffix, every value as text (None when missing)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{path}: not a readable Parquet file ({e})") from e
        columns = {}
        for name, col in zip(table.column_names, table.columns, strict=True):
            if pa.types.is_timestamp(col.type):  # typed times become unix seconds
                col = pc.cast(col, pa.timestamp("s"), safe=False).cast(pa.int64())
            columns[name] = col.cast(pa.string())
        return pa.table(columns).to_pandas().astype(object).where(lambda d: d.notna(), None)
    if suffix in (".jsonl", ".ndjson"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not valid UTF-8 ({e})") from e
        records = []
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line) if line.strip() else {}
            except ValueError as e:
                raise DatasetError(f"{path}: line {n} is not valid JSON ({e})") from e
            if not isinstance(record, dict):
                raise DatasetError(f"{path}: line {n} is not a JSON object")
            if record:
                records.append(record)
        if not records:
            raise DatasetError(f"{path}: no rows")
        df = pd.DataFrame.from_records(records)
        return df.map(lambda v: None if v is None or v is pd.NA else str(v)).astype(object)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), None)
        if header is None:
            raise DatasetError(f"{path}: empty file, no header and no rows")
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True,
            null_values=[""]))
    except (UnicodeDecodeError, csv.Error, pa.ArrowInvalid) as e:
        raise DatasetError(f"{path}: not a readable UTF-8 CSV file ({e})") from e
    # Arrow-backed text: no conversion of every value to a Python object
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def read_table(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None
               ) -> tuple[pd.DataFrame, list[str]]:
    """Read `path` as text and keep `columns` (source name -> canonical name), plus those of
    `optional` that are present; also name the columns that were ignored."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    df = _read_frame(path)
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    keep = columns | {k: v for k, v in (optional or {}).items() if k in df.columns}
    ignored = [c for c in df.columns if c not in keep]
    return df[list(keep)].rename(columns=keep), ignored


def read_interaction_batch(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """An inbox batch: user_id, item_id, timestamp, optional rating and event_type."""
    return read_table(path, {c: c for c in ("user_id", "item_id", "timestamp")},
                      optional={"rating": "rating", "event_type": "event_type"})


def load_movielens(data_dir: Path = BUNDLED_MOVIELENS) -> RawDataset:
    """MovieLens CSV release: ratings.csv, movies.csv and (optional) tags.csv."""
    interactions, _ = read_table(
        data_dir / "ratings.csv",
        {"userId": "user_id", "movieId": "item_id", "timestamp": "timestamp"},
        optional={"rating": "rating"},
    )
    items, _ = read_table(
        data_dir / "movies.csv", {"movieId": "item_id", "title": "title", "genres": "genres"}
    )
    items["genres"] = items["genres"].str.replace("|", ", ", regex=False)
    items["genres"] = items["genres"].where(items["genres"] != "(no genres listed)")
    tags_file = data_dir / "tags.csv"
    if tags_file.is_file():
        tags = read_table(tags_file, {"movieId": "item_id", "tag": "tag"})[0].dropna()
        tags["tag"] = tags["tag"].str.strip().str.lower()
        joined = tags.drop_duplicates().groupby("item_id")["tag"].agg(", ".join)
        items["tags"] = items["item_id"].map(joined)
    else:
        items["tags"] = None
    return RawDataset(interactions=interactions, items=items)


def read_sequences(path: Path) -> pd.DataFrame:
    """One line per user, `user item item ...` in time order (S3-Rec's Beauty.txt): typed
    interactions whose timestamp is the position in the sequence."""
    users, items, steps = [], [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            ids = line.split()
            if len(ids) > 1:
                users += [int(ids[0])] * (len(ids) - 1)
                items += [int(i) for i in ids[1:]]
                steps += range(len(ids) - 1)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": steps})


def read_recbole_split(data_dir: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RecBole atomic files of a leave-one-out split (UniSRec preprocessing): each user's
    sequence is its test history plus the test target; items carry their `.text`."""
    test = pd.read_csv(data_dir / f"{name}.test.inter", sep="\t", dtype=str)
    test.columns = ["user_id", "history", "target"]
    seqs = (test["history"] + " " + test["target"]).str.split()
    interactions = pd.DataFrame({"user_id": test["user_id"].astype("int64").repeat(seqs.str.len()),
                                 "item_id": np.concatenate(seqs.to_numpy()).astype("int64")})
    interactions["timestamp"] = interactions.groupby("user_id").cumcount()
    text = pd.read_csv(data_dir / f"{name}.text", sep="\t", dtype=str, quoting=3)
    text.columns = ["asin", "text"]
    index = pd.read_csv(data_dir / f"{name}.item2index", sep="\t", header=None, dtype=str,
                        names=["asin", "item_id"], quoting=3)
    items = text.merge(index, on="asin").astype({"item_id": "int64"})[["item_id", "text"]]
    return interactions.reset_index(drop=True), items
