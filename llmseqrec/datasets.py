"""Readers from the formats users have into raw, all-text frames with canonical column names.

Interactions: user_id, item_id, timestamp, rating. Items: item_id, title, genres, tags.
Everything is read as text so that validation, not the reader, decides what is malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BUNDLED_MOVIELENS = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"


class DatasetError(ValueError):
    """A data set that cannot be used: missing file or column, not CSV, too little valid data."""


@dataclass(frozen=True)
class RawDataset:
    interactions: pd.DataFrame
    items: pd.DataFrame


def read_text_csv(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None
                  ) -> pd.DataFrame:
    """Read a CSV as text and keep `columns` (source name -> canonical name), plus those of
    `optional` that are present; fail clearly on what cannot be read."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DatasetError(f"{path}: not a readable UTF-8 CSV file ({e})") from e
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    keep = columns | {k: v for k, v in (optional or {}).items() if k in df.columns}
    return df[list(keep)].rename(columns=keep)


def load_movielens(data_dir: Path = BUNDLED_MOVIELENS) -> RawDataset:
    """MovieLens CSV release: ratings.csv, movies.csv and (optional) tags.csv."""
    interactions = read_text_csv(
        data_dir / "ratings.csv",
        {"userId": "user_id", "movieId": "item_id", "timestamp": "timestamp"},
        optional={"rating": "rating"},
    )
    items = read_text_csv(
        data_dir / "movies.csv", {"movieId": "item_id", "title": "title", "genres": "genres"}
    )
    items["genres"] = items["genres"].str.replace("|", ", ", regex=False)
    items["genres"] = items["genres"].where(items["genres"] != "(no genres listed)")
    tags_file = data_dir / "tags.csv"
    if tags_file.is_file():
        tags = read_text_csv(tags_file, {"movieId": "item_id", "tag": "tag"}).dropna()
        tags["tag"] = tags["tag"].str.strip().str.lower()
        joined = tags.drop_duplicates().groupby("item_id")["tag"].agg(", ".join)
        items["tags"] = items["item_id"].map(joined)
    else:
        items["tags"] = None
    return RawDataset(interactions=interactions, items=items)
