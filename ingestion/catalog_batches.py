"""Catalog batches: new and changed items, dropped in the inbox's `items/` folder (CSV, Parquet
or JSON Lines: item_id, title, optional genres, categories, tags, description). Ingested like
interaction batches (exactly once, counted in a ledger of their own; every row accepted or
quarantined with its reasons, or the file rejected), then merged into the store's catalog: a
new id is added, a known one updated (the columns the batch has replace the stored ones, the
others stay)."""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from pathlib import Path

import pandas as pd

from data_checks.validate import validate_items
from features.item_text import item_texts
from ingestion.batches import (
    BatchKind,
    BatchReport,
    IngestConfig,
    Read,
    accept,
    read_rows,
    refuse_if_too_bad,
    state_io,
)
from ingestion.layouts import GENERIC_ITEM_FIELDS
from ingestion.readers import MALFORMED_ROW, DatasetError, read_table
from ingestion.state import Stores

CATALOG_FOLDER = "items"  # inbox/items/: catalog batches; inbox/: interaction batches


def catalog_inbox(stores: Stores) -> Path:
    return stores.inbox / CATALOG_FOLDER


def read_catalog_batch(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A catalog batch: item_id, title, and the optional text fields it has."""
    return read_table(path, {"item_id": "item_id", "title": "title"},
                      optional={f: f for f in (*GENERIC_ITEM_FIELDS, MALFORMED_ROW)})


def merge_items(catalog: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """`catalog` with `items` added or updated (the columns `items` has replace the stored
    ones); how many items were new, and how many known ones have a changed text."""
    stored, batch = catalog.set_index("item_id"), items.set_index("item_id")
    kept = stored.reindex(batch.index)[stored.columns.difference(batch.columns)]
    rows = batch.join(kept)
    known = batch.index.isin(stored.index)
    before = item_texts(stored.loc[batch.index[known]].reset_index())
    changed = sum(a != b for a, b in zip(before, item_texts(rows[known].reset_index()),
                                         strict=True))
    merged = pd.concat([stored.drop(index=batch.index[known]), rows])
    return merged.reset_index(), int((~known).sum()), changed


def _check_and_store_items(read: Read, report: BatchReport, stores: Stores, now: datetime,
                           cfg: IngestConfig) -> BatchReport:
    store = stores.store
    with state_io():
        catalog = store.read_catalog()
    if catalog is None:
        raise DatasetError("no item catalog in the store yet: ingest the catalog first")
    raw = read_rows(read, report)
    checked = validate_items(raw, docs_root=stores.data_docs if cfg.data_docs else None,
                             run_name=report.batch_id)
    refuse_if_too_bad(checked, report, cfg)
    merged, new, changed = merge_items(
        catalog, checked.accepted.drop(columns=MALFORMED_ROW, errors="ignore"))
    with state_io():
        store.put_quarantine(checked.quarantined, report.batch_id, "items")
        store.put_catalog(merged)  # last: a failure before it leaves the catalog as it was
    return accept(checked, report, [f"{new} new items, {changed} changed"])


CATALOG = BatchKind("catalog", read_catalog_batch, _check_and_store_items,
                    attrgetter("catalog_ledger"))
