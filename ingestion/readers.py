"""Readers from the formats users have into raw, all-text frames with canonical column names.

Interactions: user_id, item_id, timestamp (unix seconds), rating and event_type (optional).
Items: item_id, title, genres, tags.
Everything is read as text so that validation, not the reader, decides what is malformed.
Formats: CSV (`,` `;` tab or `|` separated), Parquet or JSON Lines batches, plain, gzip or zstd
compressed, UTF-8 with or without a byte-order mark; column names match whatever their case and
surrounding spaces (`column_key`). MovieLens (CSV, `::`-separated .dat releases, ML-100K's
u.data + u.item).
The published benchmark formats are read by `ingestion.published`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

BUNDLED_MOVIELENS = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"
BATCH_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".jsonl": "jsonl",
                 ".ndjson": "jsonl"}
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
# the column of a CSV row with more or fewer fields than its header: its whole text, its fields
# missing (validation quarantines it)
MALFORMED_ROW = "malformed_row"
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
DELIMITERS = ",;\t|"
# a missing value as spreadsheet and database exports spell it ("NaN" is not one: it is text)
NULL_SPELLINGS = ["", "NULL", "null", "Null", "\\N", "NA", "N/A", "n/a", "#N/A", "None", "nil"]
CSV_BLOCK_BYTES = 1 << 24  # the longest CSV row that can be read
# what reading a truncated, corrupt or mistyped file raises
UNREADABLE = (pa.ArrowException, OSError, EOFError, zlib.error)


class DatasetError(ValueError):
    """A data set that cannot be used: missing file or column, not CSV, too little valid data."""


@dataclass(frozen=True)
class RawDataset:
    interactions: pd.DataFrame
    items: pd.DataFrame


def open_binary(path: Path) -> BinaryIO:
    """The bytes of a file, decompressed when it is gzip or zstd (known by its first bytes);
    a truncated or corrupt compressed file fails when read."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic.startswith(GZIP_MAGIC):
        return gzip.open(path, "rb")
    if magic == ZSTD_MAGIC:
        return pa.input_stream(str(path), compression="zstd")
    return path.open("rb")


def open_text(path: Path) -> io.TextIOWrapper:
    """A text file as `open_binary` reads it, UTF-8 with or without a byte-order mark, its line
    endings (LF, CRLF or CR) kept."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")


def json_records(path: Path) -> Iterator[dict]:
    """The object of each line of a JSON Lines file, plain or compressed (an empty one for a
    blank line); a line that is not a JSON object fails, named by its number."""
    try:
        with open_text(path) as f:
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
    except UNREADABLE as e:  # a truncated or corrupt compressed file
        raise DatasetError(f"{path}: not a readable file ({e})") from e


def batch_format(path: Path) -> str:
    """csv, parquet or jsonl, by the file's suffix before any compression suffix."""
    name = path.name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    if (fmt := BATCH_FORMATS.get(Path(name).suffix)) is None:
        raise DatasetError(f"{path}: not a batch file: CSV, Parquet or JSON Lines named "
                           f"{', '.join(BATCH_FORMATS)}, optionally compressed "
                           f"({', '.join(COMPRESSED_SUFFIXES)})")
    return fmt


def _read_parquet(path: Path) -> pd.DataFrame:
    """Every column as text (None when missing); typed times become unix seconds."""
    try:
        with open_binary(path) as f:
            table = pq.read_table(pa.BufferReader(f.read()))
    except UNREADABLE as e:
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from e
    columns = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        try:
            if pa.types.is_timestamp(col.type):
                col = pc.cast(col, pa.timestamp("s"), safe=False).cast(pa.int64())
            columns[name] = col.cast(pa.string())
        except pa.ArrowException as e:
            raise DatasetError(f"{path}: column {name!r} of type {col.type} cannot be read as "
                               f"text ({e})") from e
    return pa.table(columns).to_pandas().astype(object).where(lambda d: d.notna(), None)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """Every value as text (None when null or absent from a line)."""
    records = [record for record in json_records(path) if record]
    if not records:
        raise DatasetError(f"{path}: no rows")
    keys = list(dict.fromkeys(k for record in records for k in record))
    # each value's own text (a column of ints with a null is not made floats); absent: missing
    return pd.DataFrame({k: [None if (v := r.get(k)) is None else str(v) for r in records]
                         for k in keys}, dtype=object)


def _read_csv(path: Path) -> pd.DataFrame:
    """Every field as text, the spellings of NULL_SPELLINGS missing; the delimiter is the one of
    DELIMITERS that splits the header line most; the header's names as written, repeats kept.
    A row with more or fewer fields than the header is kept whole, as text, in the column
    MALFORMED_ROW (its fields missing), after the others: validation quarantines it."""
    malformed: list[str] = []

    def keep_malformed(row: pacsv.InvalidRow) -> str:
        malformed.append(row.text)
        return "skip"

    try:
        with open_text(path) as f:
            first = f.readline()
        if not first:
            raise DatasetError(f"{path}: empty file, no header and no rows")
        delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([first], delimiter=d))))
        header = next(csv.reader([first], delimiter=delimiter))
        names = [f"f{i}" for i in range(len(header))]  # positional: a header may repeat a name
        with open_binary(path) as f:
            table = pacsv.read_csv(
                f, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1,
                                                  block_size=CSV_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                                  invalid_row_handler=keep_malformed),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
                    null_values=NULL_SPELLINGS))
    except (UnicodeDecodeError, csv.Error, *UNREADABLE) as e:
        raise DatasetError(f"{path}: not a readable UTF-8 CSV file ({e})") from e
    if malformed:
        table = pa.concat_tables([
            table.append_column(MALFORMED_ROW, pa.nulls(len(table), pa.string())),
            pa.table([pa.nulls(len(malformed), pa.string())] * len(names)
                     + [pa.array(malformed, pa.string())], names=[*names, MALFORMED_ROW])])
        header = [*header, MALFORMED_ROW]
    return arrow_text_frame(table.rename_columns(header))


READERS = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}


def read_table(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None
               ) -> tuple[pd.DataFrame, list[str]]:
    """Read `path` as text and keep `columns` (source name -> canonical name), plus those of
    `optional` that are present; also name the columns that were ignored."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return select_columns(path, READERS[batch_format(path)](path), columns, optional)


def column_key(name: str) -> str:
    """What a column name is matched by: case, surrounding spaces, and spaces or hyphens for
    underscores do not matter ("Item ID" is item_id)."""
    return re.sub(r"[\s-]+", "_", name.strip()).casefold()


def select_columns(path: Path, df: pd.DataFrame, columns: dict[str, str],
            optional: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Keep and rename `columns` and the present `optional` ones of `df`, read from `path`,
    matching names as `column_key` does; also name the columns that were ignored. A wanted
    column that appears twice fails."""
    wanted = {column_key(k): v for k, v in ((optional or {}) | columns).items()}
    found: dict[str, list[int]] = {}
    for i, name in enumerate(df.columns):
        if (canonical := wanted.get(column_key(str(name)))) is not None:
            found.setdefault(canonical, []).append(i)
    missing = sorted(k for k, v in columns.items() if v not in found)
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    repeated = sorted(v for v, at in found.items() if len(at) > 1)
    if repeated:
        raise DatasetError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    keep = {found[v][0]: v for v in dict.fromkeys([*columns.values(), *(optional or {}).values()])
            if v in found}  # in the order asked for
    selected = df.iloc[:, list(keep)].set_axis(list(keep.values()), axis=1)
    ignored = [str(c) or "(unnamed)" for i, c in enumerate(df.columns) if i not in keep]
    return selected, ignored


def read_interaction_batch(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """An inbox batch: user_id, item_id, timestamp, optional rating and event_type."""
    return read_table(path, {c: c for c in ("user_id", "item_id", "timestamp")},
                      optional={"rating": "rating", "event_type": "event_type",
                                MALFORMED_ROW: MALFORMED_ROW})


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


# ML-100K: u.data (user, item, rating, time; tab separated), u.item (id | title | release date
# | video release date | IMDb URL | one 0/1 flag per genre; Latin-1), u.genre (name | index)
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _read_separated(path: Path, names: list[str], delimiter: str) -> pa.Table:
    """A headerless file of `delimiter`-separated text fields, UTF-8 or else Latin-1."""
    def read(encoding: str) -> pa.Table:
        return pacsv.read_csv(path, read_options=pacsv.ReadOptions(
            column_names=names, encoding=encoding), parse_options=pacsv.ParseOptions(
            delimiter=delimiter, quote_char=False), convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string())))
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        try:
            return read("utf8")
        except pa.ArrowInvalid as e:
            if "UTF8" not in str(e).upper():
                raise
            return read("latin-1")
    except pa.ArrowInvalid as e:
        raise DatasetError(f"{path}: not {len(names)} {delimiter!r}-separated fields per line "
                           f"({e})") from e


def load_movielens_100k(data_dir: Path) -> RawDataset:
    """The ML-100K release: u.data and u.item; genres named from the item's flags."""
    ratings = _read_separated(data_dir / "u.data", ["user_id", "item_id", "rating",
                                                    "timestamp"], "\t")
    fields = ["item_id", "title", "released", "video_released", "url", *ML100K_GENRES]
    movies = arrow_text_frame(_read_separated(data_dir / "u.item", fields, "|"))
    flags = movies[list(ML100K_GENRES)].eq("1").to_numpy()
    genres = [", ".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) or None
              for row in flags]
    items = text_frame({"item_id": movies["item_id"].tolist(), "title": movies["title"].tolist(),
                        "genres": genres, "tags": [None] * len(movies)})
    return RawDataset(arrow_text_frame(ratings), items)


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
