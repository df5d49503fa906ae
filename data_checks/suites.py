"""Great Expectations suites for the two data contracts: interaction logs and the item catalog.

Every expectation names, in its meta, the check a failing row is quarantined under. The
interaction suite runs on the raw text columns plus helper columns that `validate_interactions`
derives: format matches, parsed numbers, and lookups against the catalog, the batch and the
store.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from ingestion.readers import MALFORMED_ROW

INTEGER_ID = r"^[0-9]{1,18}$"  # 18 digits always fit in an int64
NUMBER = r"^-?[0-9]{1,18}(?:\.[0-9]+)?$"
EVENT_TYPE = r"^[a-z][a-z_]{0,31}$"
EARLIEST_TIMESTAMP = 631152000  # 1990-01-01: older interaction timestamps are not credible
_DATE, _TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
# ISO-8601 date and time with a UTC offset ("Z", "+02:00", "+0200", "+02"): converted to unix s
ISO_WITH_OFFSET = rf"^{_DATE}[T ]{_TIME}(?:Z|[+-][0-9]{{2}}(?::?[0-9]{{2}})?)$"
# ISO-8601 without an offset: a local time of an unknown zone, quarantined
ISO_WITHOUT_OFFSET = rf"^{_DATE}(?:[T ]{_TIME})?$"
# Timestamps are read by `validate_interactions` from any of their accepted forms.
INTERACTION_FORMATS = {"user_id": INTEGER_ID, "item_id": INTEGER_ID, "rating": NUMBER,
                       "event_type": EVENT_TYPE}


def _check(expectation: gxe.Expectation, name: str) -> gxe.Expectation:
    expectation.meta = {"check": name}
    return expectation


def _true(column: str, name: str) -> gxe.Expectation:
    return _check(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]), name)


def interaction_suite(now: int, optional: list[str]) -> gx.ExpectationSuite:
    """Row checks of an interaction log as of `now` (unix s); `optional` names the optional
    columns present (rating, event_type, MALFORMED_ROW)."""
    checks = [
        _check(gxe.ExpectColumnValuesToNotBeNull(column="user_id"), "user_id_missing"),
        _true("user_id_well_formed", "user_id_not_integer"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id_missing"),
        _true("item_id_well_formed", "item_id_not_integer"),
        _true("item_in_catalog", "item_not_in_catalog"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="timestamp"), "timestamp_missing"),
        _true("timestamp_well_formed", "timestamp_unreadable"),
        _true("timestamp_has_offset", "timestamp_without_utc_offset"),
        _true("timestamp_not_milliseconds", "timestamp_in_milliseconds"),
        _check(gxe.ExpectColumnValuesToBeBetween(
            column="timestamp_value", min_value=EARLIEST_TIMESTAMP, max_value=now),
            "timestamp_out_of_range"),
        _check(gxe.ExpectColumnValuesToBeInSet(column="repeats_earlier_row", value_set=[False]),
               "duplicate_row"),
        _check(gxe.ExpectColumnValuesToBeInSet(column="already_stored", value_set=[False]),
               "already_stored"),
    ]
    if MALFORMED_ROW in optional:
        checks.append(_true("fields_match_header", "wrong_field_count"))
    if "event_type" in optional:
        checks.append(_true("event_type_well_formed", "event_type_invalid"))
    if "rating" in optional:
        checks += [
            _true("rating_well_formed", "rating_not_a_number"),
            _check(gxe.ExpectColumnValuesToBeBetween(
                column="rating_value", min_value=0.5, max_value=5.0), "rating_out_of_range"),
        ]
    return gx.ExpectationSuite(name="interactions", expectations=checks)


def item_suite(malformed_rows: bool = False) -> gx.ExpectationSuite:
    """Row checks of the item catalog: integer, unique ids and a non-empty title; and, for a
    CSV batch with `malformed_rows`, rows of the header's field count."""
    checks = [
        _check(gxe.ExpectColumnValuesToNotBeNull(column="item_id"), "item_id_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="item_id", regex=INTEGER_ID),
               "item_id_not_integer"),
        _check(gxe.ExpectColumnValuesToBeUnique(column="item_id"), "item_id_not_unique"),
        _check(gxe.ExpectColumnValuesToNotBeNull(column="title"), "title_missing"),
        _check(gxe.ExpectColumnValuesToMatchRegex(column="title", regex=r"\S"), "title_blank"),
    ]
    if malformed_rows:
        checks.append(_true("fields_match_header", "wrong_field_count"))
    return gx.ExpectationSuite(name="items", expectations=checks)
