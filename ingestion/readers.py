"""Readers from the formats users have into raw, all-text frames with canonical column names.

Interactions: user_id, item_id, timestamp (unix seconds), rating and event_type (optional).
Items: item_id, title, genres, tags.
Everything is read as text so that validation, not the reader, decides what is malformed.
Formats: CSV, Parquet or JSON Lines batches; MovieLens (CSV or `::`-separated .dat releases).
The published benchmark formats are read by `ingestion.published`.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
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


def json_records(path: Path) -> Iterator[dict]:
    """The object of each line of a JSON Lines file, plain or gzipped (an empty one for a blank
    line); a line that is not a JSON object fails, named by its number."""
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    record = json.loads(line) if line.strip() else {}
                except ValueError as e:
                    raise DatasetError(f"{path}: line {n} is not valid JSON ({e})") from e
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}: line {n} is not a JSON object")
                yield record
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 ({e})") from e
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt gzip file
        raise DatasetError(f"{path}: not a readable file ({e})") from e


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
        records = [record for record in json_records(path) if record]
        if not records:
            raise DatasetError(f"{path}: no rows")
        df = pd.DataFrame.from_records(records)
        # a key absent from some lines is NaN in the frame: missing, not the text 'nan'
        return df.map(lambda v: None if v is None or v is pd.NA or v != v else str(v)
                      ).astype(object)
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
    return arrow_text_frame(table)


def read_table(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None
               ) -> tuple[pd.DataFrame, list[str]]:
    """Read `path` as text and keep `columns` (source name -> canonical name), plus those of
    `optional` that are present; also name the columns that were ignored."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return select_columns(path, _read_frame(path), columns, optional)


def select_columns(path: Path, df: pd.DataFrame, columns: dict[str, str],
            optional: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Keep and rename `columns` and the present `optional` ones of `df`, read from `path`;
    also name the columns that were ignored."""
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


# the fields of each `::`-separated file of the .dat releases (ML-1M, ML-10M), named as in
# the header of the CSV release's file
MOVIELENS_DAT_FIELDS = {"ratings": ("userId", "movieId", "rating", "timestamp"),
                        "movies": ("movieId", "title", "genres"),
                        "tags": ("userId", "movieId", "tag", "timestamp")}


def _read_lines(path: Path, encoding: str) -> pa.ChunkedArray:
    """Every line of a text file, blank ones included, as Arrow strings."""
    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(
        column_names=["line"], encoding=encoding), parse_options=pacsv.ParseOptions(
        delimiter="\x1f", quote_char=False, escape_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()},
                                             strings_can_be_null=False))["line"]


def arrow_text_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow string columns as pandas Arrow-backed text, without a Python object per value."""
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def text_frame(columns: dict[str, list]) -> pd.DataFrame:
    """Columns of Python strings or None as Arrow-backed text."""
    return arrow_text_frame(pa.table({k: pa.array(v, type=pa.string())
                                      for k, v in columns.items()}))


def _read_dat(path: Path, names: tuple[str, ...]) -> pd.DataFrame:
    """A `::`-separated file without header as text columns `names`, UTF-8 or else Latin-1
    (ML-1M's movies.dat); the last field keeps any further `::`."""
    try:
        try:
            lines = _read_lines(path, "utf8")
        except pa.ArrowInvalid:  # not UTF-8: Latin-1 decodes any byte
            lines = _read_lines(path, "latin-1")
    except pa.ArrowInvalid as e:
        raise DatasetError(f"{path}: not a readable '::'-separated text file ({e})") from e
    fields = pc.split_pattern(lines, "::", max_splits=len(names) - 1)
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    bad = np.flatnonzero((counts != len(names)) & ~blank.to_numpy(zero_copy_only=False))
    if bad.size:
        raise DatasetError(f"{path}: line {bad[0] + 1} is not {len(names)} '::'-separated "
                           f"fields ({'::'.join(names)}): {str(lines[int(bad[0])])[:80]!r}"
                           + (f", nor are {bad.size - 1} more" if bad.size > 1 else ""))
    fields = fields.filter(pc.invert(blank))
    table = pa.table({name: pc.list_element(fields, i) for i, name in enumerate(names)})
    return arrow_text_frame(table)


def _read_movielens(data_dir: Path, stem: str, release: str, columns: dict[str, str],
                    optional: dict[str, str] | None = None) -> pd.DataFrame:
    """One file (`stem`: ratings, movies or tags) of a MovieLens `release` (csv or dat)."""
    path = data_dir / f"{stem}.{release}"
    if release == "csv":
        return read_table(path, columns, optional)[0]
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return select_columns(path, _read_dat(path, MOVIELENS_DAT_FIELDS[stem]), columns, optional)[0]


def load_movielens(data_dir: Path = BUNDLED_MOVIELENS) -> RawDataset:
    """A MovieLens release: the CSV one (ratings.csv, movies.csv, optional tags.csv) or the
    `::`-separated one of ML-1M/ML-10M (ratings.dat, movies.dat, optional tags.dat)."""
    release = next((r for r in ("csv", "dat") if (data_dir / f"ratings.{r}").is_file()), None)
    if release is None:
        raise DatasetError(f"{data_dir}: no MovieLens ratings.csv or ratings.dat")
    interactions = _read_movielens(
        data_dir, "ratings", release,
        {"userId": "user_id", "movieId": "item_id", "timestamp": "timestamp"},
        optional={"rating": "rating"},
    )
    items = _read_movielens(data_dir, "movies", release,
                            {"movieId": "item_id", "title": "title", "genres": "genres"})
    items["genres"] = items["genres"].str.replace("|", ", ", regex=False)
    items["genres"] = items["genres"].where(items["genres"] != "(no genres listed)")
    if (data_dir / f"tags.{release}").is_file():
        tags = _read_movielens(data_dir, "tags", release,
                               {"movieId": "item_id", "tag": "tag"}).dropna()
        tags["tag"] = tags["tag"].str.strip().str.lower()
        joined = tags.drop_duplicates().groupby("item_id")["tag"].agg(", ".join)
        items["tags"] = items["item_id"].map(joined)
    else:
        items["tags"] = None
    return RawDataset(interactions=interactions, items=items)


def write_movielens_slice(target: Path, users: int, source: Path = BUNDLED_MOVIELENS) -> Path:
    """The MovieLens data in `source` cut to the first `users` users and the movies they rated
    (small data sets for tests and trials)."""
    target.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(source / "ratings.csv", dtype=str)
    ratings = ratings[ratings["userId"].astype(int) <= users]
    movies = pd.read_csv(source / "movies.csv", dtype=str)
    movies = movies[movies["movieId"].isin(ratings["movieId"])]
    tags = pd.read_csv(source / "tags.csv", dtype=str)
    ratings.to_csv(target / "ratings.csv", index=False)
    movies.to_csv(target / "movies.csv", index=False)
    tags[tags["movieId"].isin(movies["movieId"])].to_csv(target / "tags.csv", index=False)
    return target
