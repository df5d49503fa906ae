"""Ingestion of inbox batches: the bad-batch corpus. Every case checks the message, the
conservation law (rows in = accepted + quarantined, or the batch rejected with the store
byte-for-byte unchanged) and that a rejected file is still on disk."""

import gzip
import hashlib
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from ingestion.batches import (
    BatchRejected,
    IngestConfig,
    StoreUnavailable,
    ingest_batch,
    ingest_catalog,
    ingest_file,
    requeue_rejected,
)
from ingestion.state import Stores

T0 = 1_400_000_000


def rows(n: int, start: int = 0, **override) -> list[dict]:
    return [{"user_id": str(1 + (i % 5)), "item_id": str(1 + (i % 20)),
             "timestamp": str(T0 + start + i), "rating": "4.0"} | override for i in range(n)]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A state directory with a catalog of 30 items and a first batch of 40 rows, made once."""
    stores = Stores(tmp_path_factory.mktemp("seeded") / "state")
    catalog = pd.DataFrame({"item_id": [str(i) for i in range(1, 31)],
                            "title": [f"Item {i}" for i in range(1, 31)]})
    ingest_catalog(catalog, stores, "catalog")
    stores.inbox.mkdir(parents=True)
    history = stores.inbox / "history.csv"
    pd.DataFrame(rows(40, start=-1000)).to_csv(history, index=False)
    ingest_file(history, stores, datetime.now(UTC))
    return stores.state_dir


@pytest.fixture
def stores(seeded, tmp_path) -> Stores:
    """A copy of the seeded state directory, each test's own."""
    return Stores(shutil.copytree(seeded, tmp_path / "state"))


def store_fingerprint(stores: Stores) -> dict:
    root = stores.store.root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


QUICK = IngestConfig(data_docs=False)  # the checks without their Data Docs pages (one test has)


def send(stores: Stores, name: str, content, cfg: IngestConfig = QUICK) -> tuple:
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
        return ingest_file(path, stores, datetime.now(UTC), cfg), before
    except BatchRejected as e:
        return e, before


def assert_conserved(stores: Stores, report, before: int, quarantined_before: int = 0) -> None:
    assert not isinstance(report, BatchRejected), report
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
    reason = stores.inbox / "rejected" / f"{outcome.report.file_name}.reason.txt"
    assert says in reason.read_text()
    assert stores.ledger.all().iloc[-1]["status"] == "rejected"


@pytest.mark.parametrize(("bad", "check"), [
    ({"user_id": "abc"}, "user_id_not_integer"),  # wrong type
    ({"item_id": "2.5"}, "item_id_not_integer"),
    ({"user_id": None}, "user_id_missing"),  # nulls
    ({"timestamp": None}, "timestamp_missing"),
    ({"timestamp": "-86400"}, "timestamp_unreadable"),  # negative
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


def test_a_row_of_the_wrong_field_count_is_quarantined_whole(stores):
    good = [",".join(r.values()) for r in rows(20)]
    ragged = ["1,2", f"1,2,{T0 + 900},4.0,extra", '3,"4,5"']
    report, before = send(stores, "ragged.csv", "\r\n".join(
        ["user_id,item_id,timestamp,rating", *good[:5], *ragged, *good[5:]]) + "\r\n")
    assert_conserved(stores, report, before)
    assert report.rows_accepted == 20 and report.failures["wrong_field_count"] == 3
    quarantined = stores.store.read_quarantine()
    assert sorted(quarantined["malformed_row"]) == sorted(ragged)
    assert quarantined["failed_checks"].str.contains("wrong_field_count").all()


@pytest.mark.parametrize(("name", "content", "says"), [
    ("no-time.csv", "user_id,item_id\n1,2\n", "missing column(s) timestamp"),
    ("twice.csv", "user_id,item_id,timestamp, Timestamp\n1,2,1400000000,3\n",
     "column(s) timestamp appear more than once"),
    ("cut.csv.gz", gzip.compress(b"user_id,item_id,timestamp\n1,2,1400000000\n" * 99)[:60],
     "not a readable UTF-8 CSV file"),
    ("batch.xlsx", b"PK\x03\x04", "not a batch file"),
    ("nested.parquet", None, "column 'item_id' of type list<element: int64> cannot be read"),
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
    if name == "nested.parquet":
        content = pd.DataFrame({"user_id": [1], "item_id": [[2, 3]], "timestamp": [T0]})
    if name == "mostly-bad.csv":
        content = pd.DataFrame(rows(1) + rows(9, start=100, item_id="999"))
    fingerprint = store_fingerprint(stores)
    outcome, _ = send(stores, name, content)
    assert_rejected(stores, outcome, fingerprint, says)


def test_a_rejected_batch_sent_again_is_checked_again(stores):
    content = "user_id,item_id\n1,2\n"
    fingerprint = store_fingerprint(stores)
    send(stores, "a.csv", content)
    again, _ = send(stores, "a-again.csv", content)  # unchanged: rejected again, same reason
    assert_rejected(stores, again, fingerprint, "missing column(s) timestamp")
    fixed, before = send(stores, "a.csv", "user_id,item_id,timestamp\n1,2,1400000500\n")
    assert_conserved(stores, fixed, before)
    assert len(stores.ledger.all()) == 3  # the history, the rejected content, the fixed one


def test_a_batch_rejected_for_the_catalog_goes_in_once_the_catalog_has_its_items(stores):
    batch = pd.DataFrame(rows(10, start=500, item_id="31"))  # item 31 is not in the catalog
    outcome, _ = send(stores, "new-items.csv", batch)
    assert "item_not_in_catalog" in str(outcome)
    catalog = pd.DataFrame({"item_id": [str(i) for i in range(1, 32)],
                            "title": [f"Item {i}" for i in range(1, 32)]})
    ingest_catalog(catalog, stores, "catalog-2")
    [requeued] = requeue_rejected(stores.inbox)
    assert not (stores.inbox / "rejected" / "new-items.csv.reason.txt").exists()
    before = len(stores.store.read())
    report = ingest_file(requeued, stores, datetime.now(UTC), QUICK)
    assert_conserved(stores, report, before)
    assert stores.ledger.all()["status"].tolist() == ["accepted", "accepted"]
    again, _ = send(stores, "new-items-copy.csv", batch)  # accepted content counts once
    assert again.status == "duplicate"


def test_a_file_that_cannot_be_moved_stays_in_the_inbox_and_is_named(stores):
    shutil.rmtree(stores.inbox / "processed")
    for folder in ("rejected", "processed"):
        (stores.inbox / folder).write_text("a file where the folder should be")
    fingerprint = store_fingerprint(stores)
    outcome, _ = send(stores, "bad.xlsx", b"PK\x03\x04")
    assert isinstance(outcome, BatchRejected) and "not a batch file" in str(outcome)
    assert "stays in the inbox" in outcome.report.message
    assert (stores.inbox / "bad.xlsx").is_file() and store_fingerprint(stores) == fingerprint
    report, before = send(stores, "good.csv", pd.DataFrame(rows(10, start=700)))
    assert report.status == "accepted" and "stays in the inbox" in report.message
    assert len(stores.store.read()) == before + 10 and (stores.inbox / "good.csv").is_file()
    again, _ = send(stores, "good.csv", pd.DataFrame(rows(10, start=700)))
    assert again.status == "duplicate"


def test_requeue_keeps_a_file_of_the_same_name_already_in_the_inbox(stores):
    send(stores, "day.csv", "user_id,item_id\n1,2\n")
    (stores.inbox / "day.csv").write_text("the fixed file")
    assert requeue_rejected(stores.inbox) == []
    assert (stores.inbox / "rejected" / "day.csv").read_text() == "user_id,item_id\n1,2\n"
    assert (stores.inbox / "day.csv").read_text() == "the fixed file"


def test_any_failure_while_checking_a_batch_rejects_it(stores):
    fingerprint = store_fingerprint(stores)
    typed = pd.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [T0 + 500]})
    with pytest.raises(BatchRejected) as e:  # not text, as readers give: Arrow cannot match it
        ingest_batch(lambda: (typed, []), "typed.csv", "ab" * 32, stores, datetime.now(UTC),
                     QUICK)
    assert "unexpected ArrowTypeError while ingesting" in e.value.report.message
    assert store_fingerprint(stores) == fingerprint
    assert stores.ledger.all().iloc[-1]["status"] == "rejected"


@pytest.mark.parametrize("broken", ["interactions", "quarantine"])
def test_a_failing_state_directory_leaves_the_batch_in_the_inbox(stores, broken):
    """The interaction store or, after the rows were written, the quarantine store cannot be
    written: the batch may go in later, so it stays in the inbox, nothing of it stored."""
    fingerprint = store_fingerprint(stores)
    folder = stores.store.root / broken
    folder.mkdir(exist_ok=True)
    folder.rename(folder.with_name("moved"))
    folder.write_text("not a folder")
    path = stores.inbox / "later.csv"
    pd.DataFrame(rows(10, start=500) + rows(1, start=600, user_id="x")).to_csv(path, index=False)
    with pytest.raises(StoreUnavailable, match="the state directory failed"):
        ingest_file(path, stores, datetime.now(UTC), QUICK)
    assert path.is_file() and len(stores.ledger.all()) == 1
    folder.unlink()
    folder.with_name("moved").rename(folder)
    assert store_fingerprint(stores) == fingerprint
    assert ingest_file(path, stores, datetime.now(UTC), QUICK).rows_accepted == 10


def zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


GOOD_ROWS = "".join(f"{1 + i % 5},{1 + i % 20},{T0 + 500 + i}\n" for i in range(10))


@pytest.mark.parametrize(("name", "content"), [
    ("excel.csv", ('\ufeff"User_ID";"Item ID";"Timestamp"\r\n'  # BOM, ;, CRLF, quotes
                   + GOOD_ROWS.replace(",", ";").replace("\n", "\r\n")).encode()),
    ("spaced.csv", (" USER_ID , item_id ,TimeStamp \n" + GOOD_ROWS).encode()),
    ("tabs.tsv", ("user_id\titem_id\ttimestamp\n" + GOOD_ROWS.replace(",", "\t")).encode()),
    ("old-mac.csv", ("user_id,item_id,timestamp\r" + GOOD_ROWS.replace("\n", "\r")).encode()),
    ("notes.csv", ("user_id,item_id,timestamp,note\n"
                   + GOOD_ROWS.replace("\n", ',"two\nlines, quoted"\n')).encode()),
    ("batch.csv.gz", gzip.compress(("user_id,item_id,timestamp\n" + GOOD_ROWS).encode())),
    ("batch.csv.zst", zstd(("user_id,item_id,timestamp\n" + GOOD_ROWS).encode())),
    ("batch.jsonl.gz", gzip.compress("".join(
        json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\r\n"
        for u, i, t in (r.split(",") for r in GOOD_ROWS.split())).encode("utf-8-sig"))),
    ("batch.ndjson.zst", zstd("".join(
        json.dumps({"user_id": int(u), "item_id": int(i), "timestamp": int(t)}) + "\n"
        for u, i, t in (r.split(",") for r in GOOD_ROWS.split())).encode())),
])
def test_what_spreadsheets_and_databases_export_is_read(stores, name, content):
    report, before = send(stores, name, content)
    assert_conserved(stores, report, before)
    assert report.rows_accepted == 10


def test_missing_values_in_every_export_spelling_are_missing(stores):
    nulls = ["", "NULL", "null", "\\N", "NA", "N/A", "#N/A", "None", '""']
    lines = [f"{1 + i % 5},{1 + i % 20},{T0 + 500 + i},{v}" for i, v in enumerate(nulls * 3)]
    lines.append(f"{nulls[1]},3,{T0 + 900},4")
    report, before = send(stores, "nulls.csv", "user_id,item_id,timestamp,rating\n"
                          + "\n".join(lines) + "\n")
    assert_conserved(stores, report, before)
    assert report.failures == {"user_id_missing": 1}  # a missing rating is no failure


def test_timestamp_forms(stores):
    """Unix seconds and ISO-8601 with a UTC offset are read; ISO-8601 without one, and
    milliseconds, are quarantined under their own reasons."""
    forms = {"1400000500": T0 + 500, "2014-05-13T17:01:41Z": T0 + 501,  # T0 + 500 is 17:01:40
             "2014-05-13 19:01:42+02:00": T0 + 502, "2014-05-13T17:01:43.999+0000": T0 + 503}
    odd = {"2014-05-13T17:01:44": "timestamp_without_utc_offset",
           "2014-05-13": "timestamp_without_utc_offset",
           "1400000505000": "timestamp_in_milliseconds",
           "2014-02-30T00:00:00Z": "timestamp_unreadable", "13/05/2014": "timestamp_unreadable",
           "1400000506.5": "timestamp_unreadable"}
    batch = pd.DataFrame(rows(40, start=600) + [{"user_id": "1", "item_id": "1", "timestamp": t}
                                                for t in [*forms, *odd]])
    report, before = send(stores, "times.csv", batch)
    assert_conserved(stores, report, before)
    stored = set(stores.store.read(batch=report.batch_id)["timestamp"])
    assert set(forms.values()) <= stored and len(stored) == 40 + len(forms)
    quarantined = stores.store.read_quarantine().set_index("timestamp")["failed_checks"]
    assert quarantined.to_dict() == odd


def test_an_id_of_18_digits_is_kept_exactly(stores):
    big = "987654321987654321"
    batch = pd.DataFrame(rows(10, start=500) + [rows(1, start=700, user_id=big)[0],
                                                rows(1, start=701, user_id=None)[0]])
    report, _ = send(stores, "big.csv", batch)
    assert int(big) in stores.store.read(batch=report.batch_id)["user_id"].tolist()


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
    report, _ = send(stores, "docs.csv", pd.DataFrame(rows(10)), IngestConfig())
    assert report.data_docs.startswith("file://") and report.data_docs.endswith(".html")
    page = Path(report.data_docs.removeprefix("file://")).read_text()
    assert report.batch_id in page and "interactions" in page
