"""Run the suites over raw frames: every row ends up accepted or quarantined with its reasons."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig

from data_checks.suites import (
    EARLIEST_TIMESTAMP,
    INTEGER_ID,
    INTERACTION_FORMATS,
    ISO_WITH_OFFSET,
    ISO_WITHOUT_OFFSET,
    interaction_suite,
    item_suite,
)
from ingestion.readers import MALFORMED_ROW

logging.getLogger("great_expectations").setLevel(logging.WARNING)
KEY = ["user_id", "item_id", "timestamp"]
PARSED_TYPES = {"rating": pa.float64(), "event_type": pa.string()}  # the others are int64


@dataclass(frozen=True)
class CheckedFrame:
    accepted: pd.DataFrame  # typed, canonical columns
    quarantined: pd.DataFrame  # the raw row, its row number in the input, and `failed_checks`
    failures: dict[str, int]  # check name -> failing rows
    docs: str | None = field(default=None)  # Data Docs page of this validation

    @property
    def rows_in(self) -> int:
        return len(self.accepted) + len(self.quarantined)


def run_suite(df: pd.DataFrame, suite: gx.ExpectationSuite, docs_root: Path | None = None,
              run_name: str = "validation") -> tuple[pd.Series, str | None]:
    """Failed check names of every row ('' when it passed every check), and the Data Docs page
    of the validation when `docs_root` (a GX project directory) is given."""
    context = (gx.get_context(mode="file", project_root_dir=docs_root) if docs_root
               else gx.get_context(mode="ephemeral"))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas("batches")
    asset = (source.get_asset(suite.name) if suite.name in source.get_asset_names()
             else source.add_dataframe_asset(suite.name))
    batch = (asset.get_batch_definition("whole") if asset.batch_definitions
             else asset.add_batch_definition_whole_dataframe("whole"))
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=suite.name, validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="data_docs")] if docs_root else [],
        result_format={"result_format": "COMPLETE"}))
    run = checkpoint.run(batch_parameters={"dataframe": df},
                         run_id=RunIdentifier(run_name=run_name))
    [(identifier, result)] = run.run_results.items()
    reasons = pd.Series("", index=df.index, dtype=object)
    for r in result.results:
        check = r.expectation_config.meta["check"]
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"check {check} could not run: "
                               f"{r.exception_info['exception_message']}")
        failing = r.result.get("unexpected_index_list") or []
        if failing:
            reasons.loc[failing] += ";" + check
    docs = context.get_docs_sites_urls(resource_identifier=identifier)[0]["site_url"] \
        if docs_root else None
    return reasons.str.lstrip(";"), docs


def _quarantine(raw: pd.DataFrame, reasons: pd.Series) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Which rows failed, those raw rows with their reasons, and the count per check."""
    bad = (reasons != "").to_numpy()
    quarantined = raw[bad].assign(failed_checks=reasons[bad]).rename_axis("row").reset_index()
    failures = reasons[bad].str.split(";").explode().value_counts().to_dict()
    return bad, quarantined, {k: int(v) for k, v in failures.items()}


def validate_items(items: pd.DataFrame, docs_root: Path | None = None,
                   run_name: str = "items") -> CheckedFrame:
    raw = items.reset_index(drop=True)
    prepared = raw.copy()  # the suite reads the raw columns and, for a CSV batch, a helper
    if MALFORMED_ROW in raw.columns:
        prepared["fields_match_header"] = raw[MALFORMED_ROW].isna().to_numpy()
    reasons, docs = run_suite(prepared, item_suite(MALFORMED_ROW in raw.columns), docs_root,
                              run_name)
    bad, quarantined, failures = _quarantine(raw, reasons)
    accepted = raw[~bad].astype({"item_id": "int64"})
    return CheckedFrame(accepted.reset_index(drop=True), quarantined, failures, docs)


def _matches(text: pa.Array, pattern: str) -> np.ndarray:
    """Whether each text matches `pattern` (False when missing)."""
    return pc.fill_null(pc.match_substring_regex(text, pattern), False).to_numpy(
        zero_copy_only=False)


def _parse(col: pd.Series, pattern: str, to: pa.DataType) -> tuple[np.ndarray, pd.Series]:
    """Whether each text matches `pattern` (True when missing: that is a check of its own),
    and the value of those that do (missing otherwise; integers exact, as nullable Int64)."""
    text = pa.array(col, type=pa.string(), from_pandas=True)
    matches = pc.match_substring_regex(text, pattern)
    values = pc.cast(pc.if_else(matches, text, pa.scalar(None, pa.string())), to)
    return (pc.fill_null(matches, True).to_numpy(zero_copy_only=False),
            values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))


def _unix_seconds(iso: str) -> int | None:
    """An ISO-8601 time with a UTC offset in unix seconds (None if it is no real date)."""
    try:
        return int(datetime.fromisoformat(iso).timestamp() // 1)
    except (ValueError, OverflowError):
        return None


def _timestamps(col: pd.Series, now: int) -> tuple[pd.DataFrame, pd.Series]:
    """The helper columns of the timestamp checks and the unix seconds of each timestamp:
    integer seconds as they are, ISO-8601 with a UTC offset converted; ISO-8601 without an
    offset and integers that are milliseconds of the credible range have no value."""
    text = pa.array(col, type=pa.string(), from_pandas=True)
    integer, with_offset = _matches(text, INTEGER_ID), _matches(text, ISO_WITH_OFFSET)
    without_offset = _matches(text, ISO_WITHOUT_OFFSET)
    seconds = pc.cast(pc.if_else(integer, text, pa.scalar(None, pa.string())), pa.int64())
    values = seconds.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    milliseconds = values.between(EARLIEST_TIMESTAMP * 1000, now * 1000).fillna(False)
    values[milliseconds.to_numpy()] = pd.NA
    converted = [_unix_seconds(t) for t in col[with_offset]]
    values[with_offset] = pd.array(converted, dtype="Int64")
    helpers = pd.DataFrame({
        "timestamp_well_formed": col.isna().to_numpy() | integer | without_offset
        | (with_offset & values.notna().to_numpy()),
        "timestamp_has_offset": ~without_offset,
        "timestamp_not_milliseconds": ~milliseconds.to_numpy(),
        "timestamp_value": values.astype("float64"),  # the range check compares floats
    }, index=col.index)
    return helpers, values


def _stored(keys: pd.DataFrame, stored_keys: pd.DataFrame | None) -> np.ndarray:
    """Whether each parsed (user, item, timestamp) is already in `stored_keys`."""
    found = np.zeros(len(keys), dtype=bool)
    if stored_keys is None or stored_keys.empty:
        return found
    stored = stored_keys[stored_keys["timestamp"].between(keys["timestamp"].min(),
                                                          keys["timestamp"].max())]
    if stored.empty:  # the usual case: a new batch is newer than the store
        return found
    whole = keys.notna().all(axis=1).to_numpy()
    index = pd.MultiIndex.from_frame(keys[whole].astype("int64"))
    found[whole] = index.isin(pd.MultiIndex.from_frame(stored[KEY].astype("int64")))
    return found


def validate_interactions(interactions: pd.DataFrame, catalog_ids, now: int,
                          stored_keys: pd.DataFrame | None = None, docs_root: Path | None = None,
                          run_name: str = "interactions") -> CheckedFrame:
    """Check a raw interaction log against the catalog, the clock and what is already stored."""
    raw = interactions.reset_index(drop=True)
    optional = [c for c in ("rating", "event_type", MALFORMED_ROW) if c in raw.columns]
    prepared = raw[KEY].copy()  # the suite reads these raw columns; the rest are helpers
    if MALFORMED_ROW in optional:
        prepared["fields_match_header"] = raw[MALFORMED_ROW].isna().to_numpy()
    parsed = {}
    for column in ["user_id", "item_id", *(c for c in optional if c in PARSED_TYPES)]:
        prepared[f"{column}_well_formed"], parsed[column] = _parse(
            raw[column], INTERACTION_FORMATS[column], PARSED_TYPES.get(column, pa.int64()))
    helpers, parsed["timestamp"] = _timestamps(raw["timestamp"], now)
    prepared[helpers.columns] = helpers
    typed = pd.DataFrame(parsed)
    catalog = pd.Index([str(i) for i in catalog_ids])
    prepared["item_in_catalog"] = raw["item_id"].isin(catalog) | raw["item_id"].isna()
    # a row missing part of its key is quarantined for that, not as a repeat of another one
    prepared["repeats_earlier_row"] = (typed.duplicated(KEY, keep="first")
                                       & typed[KEY].notna().all(axis=1))
    prepared["already_stored"] = _stored(typed[KEY], stored_keys)
    if "rating" in optional:
        prepared["rating_value"] = parsed["rating"]
    suite = interaction_suite(now, optional)
    reasons, docs = run_suite(prepared, suite, docs_root, run_name)
    bad, quarantined, failures = _quarantine(raw, reasons)
    accepted = typed[~bad].astype({k: "int64" for k in KEY})
    return CheckedFrame(accepted.reset_index(drop=True), quarantined, failures, docs)
