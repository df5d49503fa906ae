"""The text each item is embedded from: its title, then labelled catalog fields."""

from __future__ import annotations

import pandas as pd

# MovieLens and the generic layout of `llmseqrec run --data`; e.g. ("text",) for RecBole .text
DEFAULT_FIELDS = ("title", "genres", "categories", "tags", "description")


def item_texts(items: pd.DataFrame, fields: tuple[str, ...] = DEFAULT_FIELDS) -> list[str]:
    """The first field as is, the others labelled: 'Title. Genres: a, b. Tags: c.'.
    Empty or absent fields are left out."""
    texts = []
    for row in items.to_dict("records"):
        parts = []
        for n, field in enumerate(fields):
            value = row.get(field)
            if isinstance(value, str) and value.strip():
                parts.append(value.strip() if n == 0 else f"{field.capitalize()}: {value.strip()}")
        texts.append(". ".join(parts).rstrip(".") + ".")
    return texts
