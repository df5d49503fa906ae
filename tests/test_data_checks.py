import time

import pandas as pd
import pytest

from data_checks.validate import validate_interactions, validate_items
from ingestion.readers import DatasetError, load_movielens

NOW = int(time.time())
GOOD = {"user_id": "1", "item_id": "10", "timestamp": "1260759144", "rating": "4.0"}


def check_interactions(bad_rows: list[dict]) -> tuple:
    raw = pd.DataFrame([GOOD, {**GOOD, "item_id": "20"}, *bad_rows])
    return raw, validate_interactions(raw, [10, 20], now=NOW)


@pytest.mark.parametrize(("row", "check"), [
    ({"user_id": None}, "user_id_missing"),
    ({"user_id": "abc"}, "user_id_not_integer"),
    ({"user_id": " 1"}, "user_id_not_integer"),
    ({"item_id": None}, "item_id_missing"),
    ({"item_id": "1.5"}, "item_id_not_integer"),
    ({"item_id": "99"}, "item_not_in_catalog"),
    ({"timestamp": None}, "timestamp_missing"),
    ({"timestamp": "yesterday"}, "timestamp_unreadable"),
    ({"timestamp": "-5"}, "timestamp_unreadable"),
    ({"timestamp": str(NOW + 86400)}, "timestamp_out_of_range"),
    ({"timestamp": "100"}, "timestamp_out_of_range"),
    ({"rating": "nan"}, "rating_not_a_number"),
    ({"rating": "inf"}, "rating_not_a_number"),
    ({"rating": "7"}, "rating_out_of_range"),
    ({}, "duplicate_row"),
])
def test_each_bad_interaction_is_quarantined_with_its_check(row, check):
    raw, checked = check_interactions([{**GOOD, **row}])
    assert len(checked.accepted) == 2 and checked.rows_in == len(raw)
    assert checked.quarantined["row"].tolist() == [2]
    assert check in checked.quarantined.loc[0, "failed_checks"].split(";")
    assert checked.failures[check] == 1


def test_accepted_interactions_are_typed():
    _, checked = check_interactions([])
    assert checked.accepted.dtypes.to_dict() == {"user_id": "int64", "item_id": "int64",
                                                 "timestamp": "int64", "rating": "float64"}


@pytest.mark.parametrize(("row", "check"), [
    ({"item_id": None}, "item_id_missing"),
    ({"item_id": "x1"}, "item_id_not_integer"),
    ({"title": None}, "title_missing"),
    ({"title": "   "}, "title_blank"),
])
def test_each_bad_item_is_quarantined_with_its_check(row, check):
    good = {"item_id": "1", "title": "Toy Story (1995)", "genres": "Comedy", "tags": None}
    checked = validate_items(pd.DataFrame([good, {**good, "item_id": "2", **row}]))
    assert len(checked.accepted) == 1 and len(checked.quarantined) == 1
    assert check in checked.quarantined.loc[0, "failed_checks"].split(";")


def test_duplicate_item_ids_are_all_quarantined():
    items = pd.DataFrame({"item_id": ["1", "1", "2"], "title": ["A", "B", "C"]})
    checked = validate_items(items)
    assert checked.accepted["item_id"].tolist() == [2]
    assert set(checked.quarantined["failed_checks"]) == {"item_id_not_unique"}


def test_bundled_data_passes_every_check():
    raw = load_movielens()
    items = validate_items(raw.items)
    checked = validate_interactions(raw.interactions, items.accepted["item_id"], now=NOW)
    assert len(items.accepted) == 9125 and len(checked.accepted) == 100004
    assert items.quarantined.empty and checked.quarantined.empty


@pytest.mark.parametrize(("content", "message"), [
    ("userId,movieId,rating\n1,2,3\n", "missing column"),
    (b"userId,movieId,timestamp\n\xff\xfe,1,2\n", "not a readable UTF-8 CSV"),
    ("", "empty file"),
])
def test_unreadable_logs_fail_clearly(tmp_path, content, message):
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A,Comedy\n")
    path = tmp_path / "ratings.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError, match=message):
        load_movielens(tmp_path)
