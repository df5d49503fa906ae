"""Great Expectations suites for the two data contracts: interaction logs and the item catalog.

Every expectation names, in its meta, the check a failing row is quarantined under. Suites run
on frames prepared by `data_checks.validate.prepare_*`: raw text columns plus parsed helpers.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

INTEGER_ID = r"^[0-9]+$"
NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"
EARLIEST_TIMESTAMP = 631152000  # 1990-01-01: older interaction timestamps are not credible


def _check(expectation: gxe.Expectation, name: str) -> gxe.Expectation:
    expectation.meta = {"check": name}
    return expectation


def interaction_suite(catalog_ids: list[str], now: int, has_rating: bool) -> gx.ExpectationSuite:
    """Row checks of an interaction log against the accepted catalog ids, as of `now` (unix s)."""
    checks = [
        _check(gxe.ExpectColumnValuesToNotBeNull(column="user_id"), "user_id_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="user_id", regex=INTEGER_ID),
               "user_id_not_integer"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="item_id", regex=INTEGER_ID),
               "item_id_not_integer"),
        _check(gxe.ExpectColumnValuesToBeInSet(column="item_id", value_set=catalog_ids),
               "item_not_in_catalog"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="timestamp"), "timestamp_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="timestamp", regex=INTEGER_ID),
               "timestamp_not_integer"),
        _check(gxe.ExpectColumnValuesToBeBetween(
            column="timestamp_value", min_value=EARLIEST_TIMESTAMP, max_value=now),
            "timestamp_out_of_range"),
        _check(gxe.ExpectColumnValuesToBeInSet(column="repeats_earlier_row", value_set=[False]),
               "duplicate_row"),
    ]
    if has_rating:
        checks += [
            _check(gxe.ExpectColumnValuesToMatchRegex(column="rating", regex=NUMBER),
                   "rating_not_a_number"),
            _check(gxe.ExpectColumnValuesToBeBetween(
                column="rating_value", min_value=0.5, max_value=5.0), "rating_out_of_range"),
        ]
    return gx.ExpectationSuite(name="interactions", expectations=checks)


def item_suite() -> gx.ExpectationSuite:
    """Row checks of the item catalog: integer, unique ids and a non-empty title."""
    return gx.ExpectationSuite(name="items", expectations=[
        _check(gxe.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="item_id", regex=INTEGER_ID),
               "item_id_not_integer"),
        _check(gxe.ExpectColumnValuesToBeUnique(column="item_id"), "item_id_not_unique"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="title"), "title_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"), "title_blank"),
    ])
