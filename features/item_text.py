"""The text each item is embedded from: its title, then labelled catalog fields."""

from __future__ import annotations

import pandas as pd

DEFAULT_FIELDS = ("genres", "tags")


def item_texts(items: pd.DataFrame, fields: tuple[str, ...] = DEFAULT_FIELDS) -> list[str]:
    """'Title. Genres: a, b. Tags: c.'; empty or absent fields are left out."""
    texts = []
    for row in items.to_dict("records"):
        parts = [str(row["title"]).strip()]
        for field in fields:
            value = row.get(field)
            if isinstance(value, str) and value.strip():
                parts.append(f"{field.capitalize()}: {value.strip()}")
        texts.append(". ".join(parts) + ".")
    return texts
