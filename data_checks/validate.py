"""Run the suites over raw frames: every row ends up accepted or quarantined with its reasons."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from data_checks.suites import interaction_suite, item_suite
from llmseqrec.datasets import RawDataset

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass(frozen=True)
class CheckedFrame:
    accepted: pd.DataFrame  # typed, canonical columns
    quarantined: pd.DataFrame  # the raw row, its row number in the input, and `failed_checks`
    failures: dict[str, int]  # check name -> failing rows

    @property
    def rows_in(self) -> int:
        return len(self.accepted) + len(self.quarantined)


@dataclass(frozen=True)
class ValidatedDataset:
    interactions: CheckedFrame
    items: CheckedFrame


def run_suite(df: pd.DataFrame, suite: gx.ExpectationSuite) -> pd.Series:
    """Failed check names of every row ('' when it passed every check)."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
    batch = asset.add_batch_definition_whole_dataframe("batch").get_batch(
        batch_parameters={"dataframe": df}
    )
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    reasons = pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
    for r in result.results:
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"check {r.expectation_config.meta['check']} could not run: "
                               f"{r.exception_info['exception_message']}")
        for idx in r.result.get("unexpected_index_list") or []:
            reasons[idx].append(r.expectation_config.meta["check"])
    return reasons.map(";".join)


def _split(raw: pd.DataFrame, reasons: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    bad = reasons != ""
    quarantined = raw[bad].assign(failed_checks=reasons[bad]).rename_axis("row").reset_index()
    failures = reasons[bad].str.split(";").explode().value_counts().to_dict()
    return raw[~bad], quarantined, {k: int(v) for k, v in failures.items()}


def validate_items(items: pd.DataFrame) -> CheckedFrame:
    raw = items.reset_index(drop=True)
    accepted, quarantined, failures = _split(raw, run_suite(raw, item_suite()))
    accepted = accepted.astype({"item_id": "int64"})
    return CheckedFrame(accepted.reset_index(drop=True), quarantined, failures)


def validate_interactions(interactions: pd.DataFrame, catalog_ids, now: int) -> CheckedFrame:
    raw = interactions.reset_index(drop=True)
    has_rating = "rating" in raw.columns
    prepared = raw.assign(
        timestamp_value=pd.to_numeric(raw["timestamp"], errors="coerce"),
        repeats_earlier_row=raw.duplicated(["user_id", "item_id", "timestamp"], keep="first"),
    )
    if has_rating:
        prepared["rating_value"] = pd.to_numeric(raw["rating"], errors="coerce")
    suite = interaction_suite([str(i) for i in catalog_ids], now, has_rating)
    accepted, quarantined, failures = _split(raw, run_suite(prepared, suite))
    types = {"user_id": "int64", "item_id": "int64", "timestamp": "int64"}
    accepted = accepted.astype(types | ({"rating": "float64"} if has_rating else {}))
    return CheckedFrame(accepted.reset_index(drop=True), quarantined, failures)


def validate_dataset(raw: RawDataset, now: int) -> ValidatedDataset:
    """Validate the catalog, then the interaction log against the accepted catalog."""
    items = validate_items(raw.items)
    interactions = validate_interactions(raw.interactions, items.accepted["item_id"], now)
    return ValidatedDataset(interactions=interactions, items=items)


def save_quarantine(validated: ValidatedDataset, quarantine_dir: Path, batch_id: str) -> list[Path]:
    """Write the quarantined rows of each frame, with their reasons; the files written."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in (("items", validated.items), ("interactions", validated.interactions)):
        if len(frame.quarantined):
            path = quarantine_dir / f"{batch_id}-{name}.csv"
            frame.quarantined.assign(batch_id=batch_id).to_csv(path, index=False)
            written.append(path)
    return written
