"""Ingestion of inbox batches: the bad-batch corpus. Every case checks the message, the
conservation law (rows in = accepted + quarantined, or the batch rejected with the store
byte-for-byte unchanged) and that a rejected file is still on disk."""

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from ingestion.batches import BatchRejected, ingest_catalog, ingest_file
from ingestion.state import Stores

T0 = 1_400_000_000


def rows(n: int, start: int = 0, **override) -> list[dict]:
    return [{"user_id": str(1 + (i % 5)), "item_id": str(1 + (i % 20)),
             "timestamp": str(T0 + start + i), "rating": "4.0"} | override for i in range(n)]


@pytest.fixture
def stores(tmp_path):
    stores = Stores(tmp_path / "state")
    catalog = pd.DataFrame({"item_id": [str(i) for i in range(1, 31)],
                            "title": [f"Item {i}" for i in range(1, 31)]})
    ingest_catalog(catalog, stores, "catalog")
    stores.inbox.mkdir(parents=True)
    history = stores.inbox / "history.csv"
    pd.DataFrame(rows(40, start=-1000)).to_csv(history, index=False)
    ingest_file(history, stores, datetime.now(UTC))
    return stores


def store_fingerprint(stores: Stores) -> dict:
    root = stores.store.root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def send(stores: Stores, name: str, content) -> tuple:
    """Drop a file in the inbox and ingest it: (report or BatchRejected, store rows before)."""
    path = stores.inbox / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, pd.DataFrame):
        content.to_parquet(path) if name.endswith(".parquet") else content.to_csv(path, index=False)
    else:
        path.write_text(content)
    before = len(stores.store.read())
    try:
        return ingest_file(path, stores, datetime.now(UTC)), before
    except BatchRejected as e:
        return e, before


def assert_conserved(stores: Stores, report, before: int, quarantined_before: int = 0) -> None:
    assert report.status == "accepted"
    assert report.rows_in == report.rows_accepted + report.rows_quarantined
    assert len(stores.store.read()) == before + report.rows_accepted
    assert len(stores.store.read_quarantine()) == quarantined_before + report.rows_quarantined
    assert (stores.inbox / "processed" / report.file_name).is_file()


def assert_rejected(stores: Stores, outcome, fingerprint: dict, says: str) -> None:
    assert isinstance(outcome, BatchRejected), outcome
    assert says in str(outcome), str(outcome)
    assert store_fingerprint(stores) == fingerprint
    assert (stores.inbox / "rejected" / outcome.report.file_name).is_file()
    assert stores.ledger.all().iloc[-1]["status"] == "rejected"


@pytest.mark.parametrize(("bad", "check"), [
    ({"user_id": "abc"}, "user_id_not_integer"),  # wrong type
    ({"item_id": "2.5"}, "item_id_not_integer"),
    ({"user_id": None}, "user_id_missing"),  # nulls
    ({"timestamp": None}, "timestamp_missing"),
    ({"timestamp": "-86400"}, "timestamp_not_integer"),  # negative
    ({"timestamp": str(int(time.time()) + 3600)}, "timestamp_out_of_range"),  # future
    ({"timestamp": "86400"}, "timestamp_out_of_range"),  # absurdly old
    ({"item_id": "999"}, "item_not_in_catalog"),  # unknown item
    ({"user_id": " 3 "}, "user_id_not_integer"),  # whitespace-padded id
    ({"rating": "NaN"}, "rating_not_a_number"),
    ({"rating": "inf"}, "rating_not_a_number"),
    ({"rating": "6"}, "rating_out_of_range"),
])
def test_bad_rows_are_quarantined_with_their_reason(stores, bad, check):
    batch = pd.DataFrame(rows(10) + [rows(1, start=500)[0] | bad])
    report, before = send(stores, "batch.csv", batch)
    assert_conserved(stores, report, before)
    assert report.rows_quarantined == 1 and check in report.failures
    quarantined = stores.store.read_quarantine()
    assert quarantined["row"].tolist() == [10] and check in quarantined["failed_checks"].iloc[0]


def test_duplicate_rows_in_a_batch_keep_the_first(stores):
    batch = pd.DataFrame(rows(10) + rows(1))
    report, before = send(stores, "dups.csv", batch)
    assert_conserved(stores, report, before)
    assert report.failures == {"duplicate_row": 1} and report.rows_accepted == 10


def test_rows_already_stored_are_quarantined(stores):
    batch = pd.DataFrame(rows(2, start=-1000) + rows(10))  # 2 rows of the history again
    report, before = send(stores, "again.csv", batch)
    assert_conserved(stores, report, before)
    assert report.failures == {"already_stored": 2} and report.rows_accepted == 10


@pytest.mark.parametrize(("name", "content", "says"), [
    ("no-time.csv", "user_id,item_id\n1,2\n", "missing column(s) timestamp"),
    ("empty.csv", "", "empty file"),
    ("header-only.csv", "user_id,item_id,timestamp\n", "no rows"),
    ("latin1.csv", b"user_id,item_id,timestamp,rating\n1,2,1400000000,4\n\xe9\xff,3,4,5\n",
     "not a readable UTF-8 CSV"),
    ("truncated.parquet", None, "not a readable Parquet file"),
    ("broken.jsonl", '{"user_id": 1, "item_id": 2, "timestamp": 1400000000}\n{"user_id": ',
     "line 2 is not valid JSON"),
    ("mostly-bad.csv", None, "90% of 10 rows failed checks, over the limit of 20%"),
])
def test_unusable_batches_are_rejected_whole_and_kept(stores, tmp_path, name, content, says):
    if name == "truncated.parquet":
        pd.DataFrame(rows(50)).to_parquet(tmp_path / "full.parquet")
        content = (tmp_path / "full.parquet").read_bytes()[:300]
    if name == "mostly-bad.csv":
        content = pd.DataFrame(rows(1) + rows(9, start=100, item_id="999"))
    fingerprint = store_fingerprint(stores)
    outcome, _ = send(stores, name, content)
    assert_rejected(stores, outcome, fingerprint, says)


def test_a_rejected_batch_sent_again_is_recognised(stores):
    content = "user_id,item_id\n1,2\n"
    send(stores, "a.csv", content)
    report, _ = send(stores, "a-again.csv", content)
    assert report.status == "duplicate" and "already ingested (rejected)" in report.message


def test_extra_columns_are_ignored_and_named(stores):
    batch = pd.DataFrame(rows(10)).assign(device="phone")
    report, before = send(stores, "extra.csv", batch)
    assert_conserved(stores, report, before)
    assert report.ignored_columns == ["device"]
    assert "ignored extra column(s) device" in report.message


def test_the_same_batch_sent_twice_or_renamed_counts_once(stores):
    batch = pd.DataFrame(rows(10))
    first, before = send(stores, "day.csv", batch)
    assert_conserved(stores, first, before)
    fingerprint = store_fingerprint(stores)
    again, _ = send(stores, "day.csv", batch)
    renamed, _ = send(stores, "renamed.csv", batch)
    for report in (again, renamed):
        assert report.status == "duplicate" and first.batch_id in report.message
    assert store_fingerprint(stores) == fingerprint
    assert len(stores.ledger.all()) == 2  # history and day.csv: duplicates are not batches


@pytest.mark.parametrize("name", ["batch.parquet", "batch.jsonl"])
def test_parquet_and_json_lines_are_accepted(stores, name):
    batch = pd.DataFrame(rows(10)).astype({"user_id": int, "item_id": int, "timestamp": int,
                                           "rating": float})
    if name.endswith(".jsonl"):
        content = "\n".join(json.dumps(r) for r in batch.to_dict("records")) + "\n"
    else:
        content = batch.assign(timestamp=pd.to_datetime(batch["timestamp"], unit="s"))
    report, before = send(stores, name, content)
    assert_conserved(stores, report, before)
    assert report.rows_accepted == 10
    stored = stores.store.read(batch=report.batch_id).sort_values("timestamp")
    assert stored["timestamp"].tolist() == batch["timestamp"].tolist()


def test_every_validation_has_a_data_docs_page(stores):
    report, _ = send(stores, "docs.csv", pd.DataFrame(rows(10)))
    assert report.data_docs.startswith("file://") and report.data_docs.endswith(".html")
    page = Path(report.data_docs.removeprefix("file://")).read_text()
    assert report.batch_id in page and "interactions" in page
