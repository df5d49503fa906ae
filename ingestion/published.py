"""Readers of the formats the published benchmarks come in, into the canonical schema of
`ingestion.readers`: S3-Rec sequence files, RecBole atomic files and leave-one-out splits,
Amazon Reviews 2018/2023 JSON Lines with their metadata."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ingestion.readers import (
    DatasetError,
    RawDataset,
    arrow_text_frame,
    json_records,
    select_columns,
    text_frame,
)


def sequence_log(path: Path, start: int = 0) -> pd.DataFrame:
    """One line per user, `user item item ...` in time order (S3-Rec's Beauty.txt), as text
    interactions (ids as written) whose timestamp is `start` plus the position in the line."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    users, items, steps = [], [], []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                ids = line.split()
                if len(ids) > 1:  # a user alone on a line has no interaction
                    users += [ids[0]] * (len(ids) - 1)
                    items += ids[1:]
                    steps += [str(start + step) for step in range(len(ids) - 1)]
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 ({e})") from e
    return text_frame({"user_id": users, "item_id": items, "timestamp": steps})


def read_sequences(path: Path) -> pd.DataFrame:
    """One line per user, `user item item ...` in time order (S3-Rec's Beauty.txt): typed
    interactions whose timestamp is the position in the sequence."""
    return sequence_log(path).astype("int64")


def load_sequences(path: Path, items_path: Path, start: int = 0) -> RawDataset:
    """S3-Rec sequences (`sequence_log`) and their items: a tab-separated file with a header,
    item_id and title, categories as genres (`Beauty.item_text.tsv`); other fields ignored."""
    return RawDataset(sequence_log(path, start), _atomic_items(items_path))


def load_recbole_split(data_dir: Path, name: str, start: int = 0) -> RawDataset:
    """RecBole atomic files of a leave-one-out split (UniSRec preprocessing), as text: each
    user's sequence is its test history plus the test target, the timestamp `start` plus the
    position in it; items are the `.text` lines (text as title), their ids from `.item2index`
    (a text without an id, or an id without a text, is kept with the field missing)."""
    path = data_dir / f"{name}.test.inter"
    test, _ = select_columns(path, _read_atomic(path), {
        "user_id": "user_id", "item_id_list": "history", "item_id": "target"})
    sequence = (test["history"].fillna("") + " " + test["target"].fillna("")).str.split()
    log = test[["user_id"]].assign(item_id=sequence).explode("item_id").dropna(subset="item_id")
    position = log.groupby(level=0).cumcount() + start  # per line of the file
    interactions = log.assign(timestamp=position.astype(str)).reset_index(drop=True).astype(
        pd.StringDtype("pyarrow"))
    text = _read_atomic(data_dir / f"{name}.text").rename(columns={"item_id": "asin",
                                                                   "text": "title"})
    index = _read_atomic(data_dir / f"{name}.item2index", names=["asin", "item_id"])
    items = text[["asin", "title"]].merge(index, on="asin", how="outer", sort=False)
    return RawDataset(interactions, items.assign(genres=None, tags=None)[
        ["item_id", "title", "genres", "tags"]])


def read_recbole_split(data_dir: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`load_recbole_split` typed: interactions (timestamp the position from 0), and the
    items that have both an id and a text, as item_id and `text`."""
    raw = load_recbole_split(data_dir, name)
    items = raw.items.dropna(subset=["item_id", "title"]).rename(columns={"title": "text"})
    return (raw.interactions.astype("int64"),
            items.astype({"item_id": "int64"})[["item_id", "text"]].reset_index(drop=True))


# canonical item field -> the RecBole fields it is taken from, the first present
RECBOLE_ITEM_FIELDS = {"title": ("title", "movie_title", "text"),
                       "genres": ("categories", "genres", "genre"),
                       "tags": ("brand", "store")}


def _read_atomic(path: Path, names: list[str] | None = None) -> pd.DataFrame:
    """A RecBole atomic file: tab separated, unquoted, a header of `field:type` names (or,
    given `names`, no header); text columns named by field, without the type."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    headed = names is None
    try:
        if headed:
            with path.open(encoding="utf-8", newline="") as f:
                header = f.readline().rstrip("\r\n")
            if not header.strip():
                raise DatasetError(f"{path}: empty file, no header and no rows")
            names = [h.strip().rsplit(":", 1)[0] for h in header.split("\t")]
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(headed)),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 strings_can_be_null=True, null_values=[""]))
    except (UnicodeDecodeError, pa.ArrowInvalid) as e:
        raise DatasetError(f"{path}: not a readable UTF-8 RecBole atomic file ({e})") from e
    return arrow_text_frame(table)


def _bare_items(item_ids: pd.Series) -> pd.DataFrame:
    """A catalog of the distinct `item_ids` only: no title, genres or tags."""
    ids = item_ids.dropna().unique().tolist()
    return text_frame({"item_id": ids} | dict.fromkeys(("title", "genres", "tags"),
                                                        [None] * len(ids)))


def _recbole_items(data_dir: Path, name: str, item_ids: pd.Series) -> pd.DataFrame:
    """Items of `<name>.item`, else of `<name>.text`, else only the ids in `item_ids`."""
    path = next((p for p in (data_dir / f"{name}.item", data_dir / f"{name}.text")
                 if p.is_file()), None)
    return _bare_items(item_ids) if path is None else _atomic_items(path)


def _atomic_items(path: Path) -> pd.DataFrame:
    """The items of an atomic file (`_read_atomic`) in the canonical fields, taken from the
    RecBole fields of RECBOLE_ITEM_FIELDS."""
    df = _read_atomic(path)
    sources = {next(c for c in fields if c in df.columns): field
               for field, fields in RECBOLE_ITEM_FIELDS.items() if df.columns.isin(fields).any()}
    items, _ = select_columns(path, df, {"item_id": "item_id"}, optional=sources)
    return items.assign(**{f: None for f in RECBOLE_ITEM_FIELDS if f not in items.columns}
                        )[["item_id", *RECBOLE_ITEM_FIELDS]]


def load_recbole_atomic(data_dir: Path, name: str, start: int = 0) -> RawDataset:
    """RecBole atomic files: `<name>.inter` (user_id, item_id, optional timestamp and rating)
    and, when present, `<name>.item` or else `<name>.text` (UniSRec). Item title from title,
    movie_title or text; genres from categories, genres or genre; tags from brand or store;
    sequence values stay as written; other fields are ignored. Without a timestamp, the
    timestamp is `start` plus the order of the user's rows in the file (0, 1, ...)."""
    path = data_dir / f"{name}.inter"
    interactions, _ = select_columns(path, _read_atomic(path),
                              {"user_id": "user_id", "item_id": "item_id"},
                              optional={"timestamp": "timestamp", "rating": "rating"})
    if "timestamp" in interactions.columns:  # float fields: 978300760.0 is 978300760
        interactions["timestamp"] = interactions["timestamp"].str.replace(
            r"^([0-9]+)\.0*$", r"\1", regex=True)
    else:
        order = interactions.groupby("user_id", dropna=False, sort=False).cumcount() + start
        interactions["timestamp"] = order.astype(str).astype(pd.StringDtype("pyarrow"))
    interactions = interactions[[c for c in ("user_id", "item_id", "timestamp", "rating")
                                 if c in interactions.columns]]
    return RawDataset(interactions, _recbole_items(data_dir, name, interactions["item_id"]))


def _first(record: dict, *keys: str) -> object:
    """The value of the first of `keys` that `record` has (not null), else None."""
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _text(value: object) -> str | None:
    """A JSON value as text: strings with HTML entities decoded and stripped, empty as None."""
    if value is None or isinstance(value, (list, dict)) and not value:
        return None
    text = html.unescape(value).strip() if isinstance(value, str) else str(value)
    return text or None


def _names(value: object) -> list[str]:
    """The non-empty strings of a string or of a (nested) list of them."""
    if isinstance(value, list):
        return [name for v in value for name in _names(v)]
    text = _text(value) if isinstance(value, str) else None
    return [text] if text else []


def _seconds(ms: object) -> object:
    """Milliseconds since the epoch as whole seconds; anything else as it is."""
    if isinstance(ms, str) and ms.isdigit():
        ms = int(ms)
    return ms // 1000 if isinstance(ms, int) and not isinstance(ms, bool) else ms


def _require(path: Path, df: pd.DataFrame, fields: dict[str, tuple[str, ...]]) -> None:
    """Fail when no record of `path` had any of the source fields of a column of `df`."""
    missing = [" or ".join(sources) for column, sources in fields.items()
               if df[column].isna().all()]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {', '.join(missing)}")


def _amazon_reviews(path: Path) -> pd.DataFrame:
    """Interactions of Amazon reviews JSON Lines: 2018 (reviewerID, asin, overall,
    unixReviewTime in seconds) or 2023 (user_id, parent_asin, rating, timestamp in ms)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    rows: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    for r in json_records(path):
        if r:
            seconds = r.get("unixReviewTime")
            rows["user_id"].append(_text(_first(r, "reviewerID", "user_id")))
            rows["item_id"].append(_text(_first(r, "parent_asin", "asin")))
            rows["timestamp"].append(_text(
                _seconds(r.get("timestamp")) if seconds is None else seconds))
            rows["rating"].append(_text(_first(r, "overall", "rating")))
    if not rows["user_id"]:
        raise DatasetError(f"{path}: no rows")
    df = text_frame(rows)
    _require(path, df, {"user_id": ("reviewerID", "user_id"),
                        "item_id": ("parent_asin", "asin"),
                        "timestamp": ("unixReviewTime", "timestamp")})
    return df if df["rating"].notna().any() else df.drop(columns="rating")


def _amazon_meta(path: Path) -> pd.DataFrame:
    """Items of Amazon metadata JSON Lines, the first line of each id: title; genres, the
    categories (else the main category) joined with ', '; tags, the brand (2018) or store (2023)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    rows: dict[str, list] = {"item_id": [], "title": [], "genres": [], "tags": []}
    for r in json_records(path):
        if r:
            categories = _names(r.get("category")) or _names(r.get("categories"))
            rows["item_id"].append(_text(_first(r, "parent_asin", "asin")))
            rows["title"].append(_text(r.get("title")))
            rows["genres"].append(", ".join(dict.fromkeys(categories)) or _text(
                _first(r, "main_category", "main_cat")))
            rows["tags"].append(_text(_first(r, "brand", "store")))
    if not rows["item_id"]:
        raise DatasetError(f"{path}: no rows")
    df = text_frame(rows)
    _require(path, df, {"item_id": ("parent_asin", "asin")})
    return df.drop_duplicates("item_id").reset_index(drop=True)


def load_amazon_reviews(reviews_path: Path, meta_path: Path | None = None) -> RawDataset:
    """Amazon Reviews 2018 or 2023 JSON Lines, plain or gzipped, and their item metadata
    (without it, items are only ids). The item is the parent_asin where given (2023: the
    metadata's id), else the asin; the description and other fields are ignored."""
    interactions = _amazon_reviews(reviews_path)
    items = _bare_items(interactions["item_id"]) if meta_path is None else _amazon_meta(meta_path)
    return RawDataset(interactions, items)


def with_integer_ids(raw: RawDataset) -> tuple[RawDataset, dict[str, pd.Series]]:
    """The data set with user and item keys (ASINs, RecBole tokens) replaced by integer ids
    from 1, as the interaction store takes them, and each key's id ('user_id', 'item_id')."""
    items = raw.items["item_id"].dropna().unique().tolist()
    items += sorted(set(raw.interactions["item_id"].dropna()) - set(items))
    keys = {"item_id": pd.Series(range(1, len(items) + 1), index=items),
            "user_id": pd.Series(
                range(1, raw.interactions["user_id"].nunique() + 1),
                index=raw.interactions["user_id"].dropna().unique())}
    def encode(df: pd.DataFrame, column: str) -> pd.Series:
        return df[column].map(keys[column]).astype("Int64").astype(str).replace("<NA>", None)
    interactions = raw.interactions.assign(user_id=encode(raw.interactions, "user_id"),
                                           item_id=encode(raw.interactions, "item_id"))
    return RawDataset(interactions, raw.items.assign(item_id=encode(raw.items, "item_id"))), keys
