"""Recognise the layout of a data directory, and read it into the raw text columns the
validators take: interactions user_id, item_id, timestamp (unix seconds), optional rating;
items item_id, title, optional genres, categories, tags, description.

The layouts and the files each needs (`NAME` is any file stem):
- generic: interactions.{csv,parquet,jsonl} in the inbox batch format (user_id, item_id,
  timestamp, optional rating and event_type) and items.{csv,parquet,jsonl} (item_id, title,
  optional genres, categories, tags, description); integer ids.
- movielens: ratings.csv + movies.csv (+ tags.csv), the `::` release's .dat files, or
  ML-100K's u.data + u.item.
- unisrec-split: NAME.test.inter + NAME.text + NAME.item2index (a leave-one-out split).
- recbole-atomic: NAME.inter + NAME.item or NAME.text.
- s3rec-sequences: NAME.txt (`user item item ...`) + NAME.item_text.tsv (item_id, title,
  optional categories, tab separated with a header).
- amazon-reviews: one reviews file and one meta_*.json(l) file, each optionally gzipped.

Sequences without times (S3-Rec, UniSRec splits, RecBole `.inter` files without a timestamp
field) take their positions as times: a user's n-th interaction (from 0) is at
POSITIONS_START + n seconds, inside the range the validators accept; training reads only
the order. In the recbole-atomic and amazon-reviews layouts, keys that are not all integers
(ASINs, tokens) are numbered from 1 by `with_integer_ids` (items in the order of the item
file, users in order of appearance, so a file grown at its end keeps its ids), and the
catalog keeps each item's key as source_id; elsewhere a non-integer id is quarantined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from data_checks.suites import INTEGER_ID
from ingestion.published import (
    load_amazon_reviews,
    load_recbole_atomic,
    load_recbole_split,
    load_sequences,
    with_integer_ids,
)
from ingestion.readers import (
    DatasetError,
    RawDataset,
    load_movielens,
    load_movielens_100k,
    read_interaction_batch,
    read_table,
)

POSITIONS_START = 946684800  # 2000-01-01 00:00:00 UTC: the time of position 0
TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")
JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
GENERIC_ITEM_FIELDS = ("genres", "categories", "tags", "description")


@dataclass(frozen=True)
class Layout:
    """A recognised data directory: its layout's name, the files its interactions and its
    items are read from, and the reader of both."""

    name: str
    interaction_files: tuple[Path, ...]
    item_files: tuple[Path, ...]
    load: Callable[[], RawDataset]

    @property
    def interaction_source(self) -> str:
        """The interaction files by name, as a batch is named in the ledger."""
        return " + ".join(f.name for f in self.interaction_files)


def _missing(found: Path, expected: str) -> DatasetError:
    return DatasetError(f"{found}: found, but not {expected} beside it")


def _single(paths: list[Path]) -> Path:
    """The one path of `paths`; more than one is ambiguous."""
    if len(paths) > 1:
        raise DatasetError(f"{paths[0].parent}: {', '.join(p.name for p in paths)}: one data "
                           "set per directory, please")
    return paths[0]


def _integer_keys(raw: RawDataset) -> RawDataset:
    """`raw` as it is when every user and item key is an integer; else with the keys numbered
    from 1 (`with_integer_ids`), the catalog keeping each item's key as source_id."""
    keys = [raw.interactions["user_id"], raw.interactions["item_id"], raw.items["item_id"]]
    if all(k.dropna().astype(str).str.match(INTEGER_ID).all() for k in keys):
        return raw
    keyed = RawDataset(raw.interactions, raw.items.assign(source_id=raw.items["item_id"]))
    return with_integer_ids(keyed)[0]


def _table(directory: Path, stem: str) -> Path | None:
    found = [p for p in (directory / f"{stem}{s}" for s in TABLE_SUFFIXES) if p.is_file()]
    return _single(found) if found else None


def _load_generic(interactions: Path, items: Path) -> RawDataset:
    log, _ = read_interaction_batch(interactions)
    catalog, _ = read_table(items, {"item_id": "item_id", "title": "title"},
                            optional={f: f for f in GENERIC_ITEM_FIELDS})
    return RawDataset(log, catalog)


def _generic(directory: Path) -> Layout | None:
    interactions = _table(directory, "interactions")
    if interactions is None:
        return None
    items = _table(directory, "items")
    if items is None:
        raise _missing(interactions, "items.csv, items.parquet or items.jsonl")
    return Layout("generic", (interactions,), (items,),
                  partial(_load_generic, interactions, items))


def _movielens(directory: Path) -> Layout | None:
    for release in ("csv", "dat"):  # the order load_movielens looks in
        ratings, movies = directory / f"ratings.{release}", directory / f"movies.{release}"
        if ratings.is_file():
            if not movies.is_file():
                raise _missing(ratings, movies.name)
            tags = [t for t in [directory / f"tags.{release}"] if t.is_file()]
            return Layout("movielens", (ratings,), (movies, *tags),
                          partial(load_movielens, directory))
    ratings, movies = directory / "u.data", directory / "u.item"  # ML-100K
    if ratings.is_file():
        if not movies.is_file():
            raise _missing(ratings, movies.name)
        return Layout("movielens", (ratings,), (movies,),
                      partial(load_movielens_100k, directory))
    return None


def _unisrec(directory: Path) -> Layout | None:
    tests = sorted(directory.glob("*.test.inter"))
    if not tests:
        return None
    test = _single(tests)
    name = test.name.removesuffix(".test.inter")
    items = (directory / f"{name}.text", directory / f"{name}.item2index")
    for path in items:
        if not path.is_file():
            raise _missing(test, path.name)
    return Layout("unisrec-split", (test,), items,
                  partial(load_recbole_split, directory, name, POSITIONS_START))


def _load_recbole(directory: Path, name: str) -> RawDataset:
    return _integer_keys(load_recbole_atomic(directory, name, POSITIONS_START))


def _recbole(directory: Path) -> Layout | None:
    splits = (".train.inter", ".valid.inter", ".test.inter")
    inters = sorted(p for p in directory.glob("*.inter") if not p.name.endswith(splits))
    if not inters:
        return None
    inter = _single(inters)
    items = [p for p in (inter.with_suffix(".item"), inter.with_suffix(".text")) if p.is_file()]
    if not items:
        raise _missing(inter, f"{inter.stem}.item or {inter.stem}.text")
    return Layout("recbole-atomic", (inter,), (items[0],),
                  partial(_load_recbole, directory, inter.stem))


def _looks_like_sequences(path: Path) -> bool:
    """Whether the first line of `path` is `user item ...`: two or more integers."""
    with path.open(encoding="utf-8", errors="replace") as f:
        ids = f.readline().split()
    return len(ids) > 1 and all(i.isdigit() for i in ids)


def _s3rec(directory: Path) -> Layout | None:
    texts = sorted(directory.glob("*.item_text.tsv"))
    if not texts:
        bare = [p for p in sorted(directory.glob("*.txt")) if _looks_like_sequences(p)]
        if bare:
            raise _missing(bare[0], f"{bare[0].stem}.item_text.tsv (item_id, title)")
        return None
    text = _single(texts)
    sequences = directory / text.name.replace(".item_text.tsv", ".txt")
    if not sequences.is_file():
        raise _missing(text, sequences.name)
    return Layout("s3rec-sequences", (sequences,), (text,),
                  partial(load_sequences, sequences, text, POSITIONS_START))


def _load_amazon(reviews: Path, meta: Path) -> RawDataset:
    return _integer_keys(load_amazon_reviews(reviews, meta))


def _amazon(directory: Path) -> Layout | None:
    json_files = sorted(p for p in directory.iterdir() if p.name.endswith(JSON_SUFFIXES))
    metas = [p for p in json_files if p.name.startswith("meta_")]
    if not metas:
        return None
    meta = _single(metas)
    reviews = [p for p in json_files if not p.name.startswith("meta_")]
    if not reviews:
        raise _missing(meta, "a reviews file (.json or .jsonl, optionally .gz)")
    review = _single(reviews)
    return Layout("amazon-reviews", (review,), (meta,), partial(_load_amazon, review, meta))


@dataclass(frozen=True)
class LayoutKind:
    name: str
    expects: str  # the files it needs, as the error on an unknown directory lists them
    find: Callable[[Path], Layout | None]  # None when its main file is absent


KINDS = (
    LayoutKind("generic", "interactions.{csv,parquet,jsonl} (user_id, item_id, timestamp, "
               "optional rating) + items.{csv,parquet,jsonl} (item_id, title, optional "
               "genres, categories, tags, description)", _generic),
    LayoutKind("movielens", "ratings.csv + movies.csv (+ tags.csv), ratings.dat + "
               "movies.dat (+ tags.dat), or ML-100K's u.data + u.item", _movielens),
    LayoutKind("unisrec-split", "NAME.test.inter + NAME.text + NAME.item2index", _unisrec),
    LayoutKind("recbole-atomic", "NAME.inter + NAME.item or NAME.text", _recbole),
    LayoutKind("s3rec-sequences", "NAME.txt (user item item ...) + NAME.item_text.tsv "
               "(item_id, title, optional categories)", _s3rec),
    LayoutKind("amazon-reviews", "REVIEWS.json[l][.gz] + meta_NAME.json[l][.gz]", _amazon),
)


def _unknown(directory: Path) -> DatasetError:
    names = sorted(p.name for p in directory.iterdir())
    found = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    expected = "\n".join(f"  {kind.name}: {kind.expects}" for kind in KINDS)
    return DatasetError(f"{directory}: no known data layout; found {found or 'no files'}. "
                        f"Expected one of:\n{expected}")


def detect(path: Path) -> Layout:
    """The layout of the data directory `path`. A DatasetError says, when no layout fits,
    what the directory holds and what each layout expects; when a layout's main file is
    there, what it lacks; when several fit, which."""
    if not path.is_dir():
        raise DatasetError(f"{path}: not a directory" + (
            " (give the directory that holds it)" if path.is_file() else ""))
    found = [layout for kind in KINDS if (layout := kind.find(path)) is not None]
    if len(found) > 1:
        raise DatasetError(f"{path}: files of several layouts "
                           f"({', '.join(layout.name for layout in found)}): one data set "
                           "per directory, please")
    if not found:
        raise _unknown(path)
    return found[0]
