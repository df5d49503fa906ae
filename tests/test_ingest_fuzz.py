"""A generated corpus of odd batches, and Hypothesis-made CSV exports, through real ingestion.

Whatever a file holds, the run finishes and the file ends either ingested (rows in = accepted +
quarantined, exactly those rows in the stores) or rejected with its reason beside it (nothing
of it stored); the inbox is empty afterwards."""

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import random
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.ingest import ingest_inbox
from ingestion.batches import BatchRejected, IngestConfig, ingest_catalog, ingest_file
from ingestion.readers import NULL_SPELLINGS
from ingestion.state import Stores

T0 = 1_400_000_000
ITEMS = 30
HEADER = ["user_id", "item_id", "timestamp", "rating"]
ODD_VALUES = ["1.0", "1e3", "-4", "+5", "007", " 6", "7 ", "x", "true", "١٢", "0x1F",
              "12345678901234567890", "123456789012345678", "-123456789012345678", "NaN", "nan",
              "<NA>", "-", " ", "1,5", "2014-05-13T17:01:40Z", "2014-05-13 17:01:40",
              "1400000000123", "1400000000123456", "99999999999", "\u00e9", "\x00", "'1'"]


def good_rows(batch: int, n: int) -> list[list[str]]:
    """`n` valid rows of their own (timestamps apart from every other batch's)."""
    return [[str(1 + i % 7), str(1 + i % ITEMS), str(T0 + batch * 1000 + i), "4.0"]
            for i in range(n)]


def csv_text(header: list[str], rows: list[list[str]], sep: str = ",", end: str = "\n",
             quote: bool = False) -> str:
    def field(v: str) -> str:
        special = quote or any(c in v for c in (sep, '"', "\n", "\r"))
        return '"' + v.replace('"', '""') + '"' if special else v
    return "".join(sep.join(map(field, r)) + end for r in [header, *rows])


def jsonl(records: list[dict], end: str = "\n") -> str:
    return "".join(json.dumps(r) + end for r in records)


def parquet(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer)
    return buffer.getvalue()


def zstd(data: bytes) -> bytes:
    return pa.compress(data, codec="zstd", asbytes=True)


def corpus(seed: int = 16) -> dict[str, bytes]:
    """File name -> content of odd batches: encodings, byte-order marks, line endings,
    delimiters, compression, truncation, types, huge and negative ids, nulls in every spelling,
    duplicate headers, very long lines, binary junk."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    n = iter(range(10_000))

    def add(kind: str, content: bytes | str, suffix: str = ".csv") -> int:
        k = next(n)
        files[f"{k:03d}-{kind}{suffix}"] = content.encode() if isinstance(content, str) \
            else content
        return k

    def rows(k: int | None = None, size: int = 12) -> list[list[str]]:
        return good_rows(len(files) if k is None else k, size)

    for encoding in ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1",
                     "cp1252", "mac-roman"]:
        for extra in ["", "Café ‘quoted’ naïve"]:
            text = csv_text([*HEADER, "note"], [[*r, extra] for r in rows()])
            add(f"encoding-{encoding}", text.encode(encoding, errors="replace"))
    for bom in [b"\xef\xbb\xbf", b"\xef\xbb\xbf" * 2, b"\xff\xfe", b"\xfe\xff", b"\xef\xbb"]:
        for quote in (False, True):
            add("bom", bom + csv_text(HEADER, rows(), quote=quote).encode())
    for i, end in enumerate(["\n", "\r\n", "\r", "\n\r", "\n\n", "\r\r\n", "\x85", "\u2028"]):
        add("line-ends", csv_text(HEADER, rows(), sep=",;\t|"[i % 4], end=end))
    for end in ["\n", "\r\n"]:  # mixed endings, no final newline, blank lines between rows
        lines = csv_text(HEADER, rows()).splitlines()
        add("mixed-ends", "\r\n".join(lines[:5]) + "\n" + "\n".join(lines[5:]))
        add("no-final-newline", end.join(csv_text(HEADER, rows()).splitlines()))
        add("blank-lines", (end * 2).join(csv_text(HEADER, rows()).splitlines()) + end)
    for sep, other in [(",", ";"), (";", ","), ("\t", ","), (",", "\t"), ("|", ","), (",", " ")]:
        add("delimiter-mismatch", sep.join(HEADER) + "\n" + csv_text(HEADER, rows(), sep=other)
            .split("\n", 1)[1])
    for quote in (False, True):  # header, case and spaces as exports write them
        for header in [["User_ID", "Item_ID", "Timestamp", "Rating"],
                       [" user_id ", " item_id", "timestamp ", "rating"],
                       ["USER ID", "item-id", "TimeStamp", "RATING"],
                       ["userid", "itemid", "ts", "stars"]]:
            add("header", csv_text(header, rows(), quote=quote))
    plain = {"csv": lambda k: csv_text(HEADER, rows(k)),
             "jsonl": lambda k: jsonl([dict(zip(HEADER, r, strict=True)) for r in rows(k)])}
    for fmt, make in plain.items():
        for compress, suffix in [(gzip.compress, ".gz"), (zstd, ".zst")]:
            for cut in [None, 0.5, 0.9, 20]:
                k = len(files)
                data = compress(make(k).encode())
                if cut is not None:
                    data = data[:int(len(data) * cut) if cut < 1 else cut]
                add(f"compressed-{fmt}-cut-{cut}", data, f".{fmt}{suffix}")
            add(f"compressed-{fmt}-twice", compress(compress(make(len(files)).encode())),
                f".{fmt}{suffix}")
            add(f"compressed-{fmt}-no-suffix", compress(make(len(files)).encode()), f".{fmt}")
    for fraction in [0.05, 0.3, 0.6, 0.95, 0.999]:  # compressed uploads cut short
        for fmt, make in plain.items():
            for compress, suffix in [(gzip.compress, ".gz"), (zstd, ".zst")]:
                data = compress(make(len(files)).encode())
                add(f"cut-{fmt}", data[:int(len(data) * fraction)], f".{fmt}{suffix}")
    for sep in ",;\t|":  # wide encodings, which are not read
        for encoding in ["utf-16-be", "utf-32-le"]:
            add("wide", csv_text(HEADER, rows(), sep=sep).encode(encoding))
    for lines in [1, 2, 5, 50, 500]:  # text, but no table of interactions
        alphabet = "abc,;\t |\"'01 \\"
        add("text", "".join("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
                            + "\n" for _ in range(lines)))
    for fraction in [0.1, 0.33, 0.5, 0.77, 0.99]:  # truncated uploads
        k = len(files)
        text = csv_text(HEADER, rows(k, 30)).encode()
        add("truncated-csv", text[:int(len(text) * fraction)])
        text = jsonl([dict(zip(HEADER, r, strict=True)) for r in rows(k + 1, 30)]).encode()
        add("truncated-jsonl", text[:int(len(text) * fraction)], ".jsonl")
        data = parquet(pd.DataFrame(rows(k + 2, 30), columns=HEADER))
        add("truncated-parquet", data[:int(len(data) * fraction)], ".parquet")
    for value in ODD_VALUES:  # odd types, huge and negative ids: in every column, a row each
        r = rows(size=20)
        for i in range(len(HEADER)):
            r[rng.randrange(5 * i, 5 * i + 5)][i] = value
        add("value", csv_text(HEADER, r, quote=rng.random() < 0.5))
    for spelling in [*NULL_SPELLINGS, "NaN", "<NA>", "(null)"]:  # nulls in every column
        r = rows(size=20)
        for i in range(len(HEADER)):
            r[i][i] = spelling
        add("nulls", csv_text(HEADER, r, quote=rng.random() < 0.5))
    for header in [["user_id", "user_id", "item_id", "timestamp"],
                   ["user_id", "item_id", "timestamp", "TIMESTAMP"],
                   ["user_id", "item_id", "timestamp", " item_id "],
                   ["user_id", "item_id", "timestamp", "note", "note"],
                   ["user_id", "item_id", "timestamp", "", ""]]:
        add("duplicate-header", csv_text(header, [[*r[:3], "a", "b"][:len(header)]
                                                  for r in rows()]))
    for length, size in [(10_000, 8), (1_000_000, 2), (17_000_000, 1)]:  # very long lines
        add("long-line", csv_text([*HEADER, "note"], [[*x, "z" * length] for x in rows(size=size)]))
    add("long-header", ",".join(HEADER + [f"c{i}" for i in range(5000)]) + "\n")
    for size in [1, 3, 16, 100, 1000, 100_000]:  # binary junk, plain and compressed
        for suffix in [".csv", ".jsonl", ".parquet", ".tsv"]:
            junk = rng.randbytes(size)
            add("junk", junk, suffix)
            add("junk-gzip", gzip.compress(junk), f"{suffix}.gz")
            add("junk-zstd", zstd(junk), f"{suffix}.zst")
    for magic in [b"PK\x03\x04", b"%PDF-1.4", b"\xd0\xcf\x11\xe0", b"PAR1", b"\x1f\x8b",
                  b"\x28\xb5\x2f\xfd", b"\x89PNG", b"BZh9"]:  # other files' first bytes
        add("magic", magic + rng.randbytes(300))
    for flips in [1, 4, 32]:  # corrupt compressed uploads: bytes changed in transit
        for compress, suffix in [(gzip.compress, ".csv.gz"), (zstd, ".csv.zst")]:
            data = bytearray(compress(csv_text(HEADER, rows(size=200)).encode()))
            for _ in range(flips):
                data[rng.randrange(12, len(data) - 8)] ^= 1 << rng.randrange(8)
            add("bit-flips", bytes(data), suffix)
    add("junk-parquet-magic", b"PAR1" + rng.randbytes(200) + b"PAR1", ".parquet")
    add("nul-bytes", csv_text(HEADER, rows()).replace(",", ",\x00", 3))
    for suffix in [".xlsx", ".txt", "", ".json", ".csv.bz2", ".CSV", ".JSONL", ".Parquet"]:
        add("suffix", csv_text(HEADER, rows()), suffix)
    for content in ["", "\n", "\r\n\r\n", "\ufeff", ",,,\n", "user_id,item_id,timestamp\n",
                    "user_id,item_id,timestamp\n\n\n"]:  # empty in its ways
        add("empty", content)
    for records in [[1, 2, 3], [[1, 2, 3]], ["user_id"], [None], [{"user_id": {"x": 1}}]]:
        add("jsonl-not-objects", jsonl(records), ".jsonl")
    for end in ["\n", "\r\n"]:
        records = [dict(zip(HEADER, map(int, r[:3]), strict=False)) for r in rows(size=24)]
        records[0] = records[0] | {"user_id": None}
        records[1] = {k: v for k, v in records[1].items() if k != "timestamp"}
        records[2] = records[2] | {"item_id": 1.5, "extra": [1, 2]}
        records[3] = records[3] | {"user_id": 10**30, "timestamp": "2014-05-13T17:01:40+00:00"}
        add("jsonl-odd", "\ufeff" + jsonl(records, end), ".ndjson")
    for make in [lambda r: r,  # Parquet of odd types
                 lambda r: r.astype({"user_id": "int64", "item_id": "int32"}),
                 lambda r: r.astype({"user_id": "float64", "rating": "float32"}),
                 lambda r: r.assign(timestamp=pd.to_datetime(r["timestamp"].astype(int),
                                                             unit="s", utc=True)),
                 lambda r: r.assign(item_id=[[1, 2]] * len(r)),
                 lambda r: r.assign(user_id=r["user_id"].astype("category")),
                 lambda r: r.assign(user_id=[b"\xff\xfe"] * len(r)),
                 lambda r: r.iloc[:0],
                 lambda r: r.rename(columns={"user_id": "User_Id"})]:
        add("parquet", parquet(make(pd.DataFrame(rows(), columns=HEADER))), ".parquet")
    for quoted in ['"1","2","1400000000",""4""', '"1,2",3,1400000000,4', '1,"2,1400000000,4',
                   '1,2,1400000000,"4\n"', '1,2,1400000000,"a""b"', '1,2,"14000"00000,4']:
        add("quotes", csv_text(HEADER, rows()) + quoted + "\n")
    add("duplicate-file-a", csv_text(HEADER, rows(999)))  # the same content twice: once
    add("duplicate-file-b", csv_text(HEADER, rows(999)))
    return files


def store_rows(stores: Stores, batch_id: str) -> tuple[int, int]:
    """Rows of batch `batch_id` in the interaction store and in the quarantine store."""
    quarantined = sum(len(pd.read_parquet(f))
                      for f in stores.store.quarantine.glob(f"{batch_id}-*.parquet"))
    return len(stores.store.read(batch=batch_id)), quarantined


def assert_answered(stores: Stores, name: str) -> str:
    """The file `name` ended ingested (rows conserved and stored) or rejected with its
    reason (nothing stored); its status in the ledger."""
    processed, rejected = stores.inbox / "processed" / name, stores.inbox / "rejected" / name
    assert processed.is_file() != rejected.is_file(), name
    path = processed if processed.is_file() else rejected
    record = stores.ledger.find(hashlib.sha256(path.read_bytes()).hexdigest())
    if rejected.is_file():
        assert (stores.inbox / "rejected" / f"{name}.reason.txt").read_text().strip()
        assert record is None or record.status == "rejected", name
        if record:
            assert store_rows(stores, record.batch_id) == (0, 0), name
        return "rejected"
    assert record.status == "accepted", name
    assert record.rows_in == record.rows_accepted + record.rows_quarantined, name
    assert store_rows(stores, record.batch_id) == (record.rows_accepted,
                                                   record.rows_quarantined), name
    return "accepted" if record.file_name == name else "duplicate"


def assert_consistent(stores: Stores) -> None:
    """The stores hold exactly the rows the ledger says were accepted and quarantined, and the
    inbox holds no file."""
    ledger = stores.ledger.all().query("status == 'accepted'")
    assert len(stores.store.read()) == ledger["rows_accepted"].sum()
    assert len(stores.store.read_quarantine()) == ledger["rows_quarantined"].sum()
    assert [p.name for p in stores.inbox.iterdir() if p.is_file()] == []


def new_stores(state_dir) -> Stores:
    stores = Stores(state_dir)
    catalog = pd.DataFrame({"item_id": [str(i) for i in range(1, ITEMS + 1)],
                            "title": [f"Item {i}" for i in range(1, ITEMS + 1)]})
    ingest_catalog(catalog, stores, "catalog")
    stores.inbox.mkdir(parents=True)
    return stores


@pytest.mark.e2e  # 300 batches through the real validation and store: a minute or two
def test_every_batch_of_the_corpus_is_ingested_or_rejected(tmp_path):
    stores = new_stores(tmp_path / "state")
    files = corpus()
    assert len(files) >= 300
    outcomes = {}
    for name, content in files.items():
        (stores.inbox / name).write_bytes(content)
        with contextlib.suppress(BatchRejected):
            ingest_file(stores.inbox / name, stores, datetime.now(UTC),
                        IngestConfig(data_docs=False))
        outcomes[name] = assert_answered(stores, name)
    assert_consistent(stores)
    counts = pd.Series(outcomes).value_counts().to_dict()
    assert counts["duplicate"] == 1 and counts["accepted"] >= 60 and counts["rejected"] >= 150
    accepted = {name for name, outcome in outcomes.items() if outcome == "accepted"}
    assert {"000-encoding-utf-8.csv", "002-encoding-utf-8-sig.csv"} <= accepted


@pytest.mark.e2e
def test_the_flow_answers_one_batch_of_every_kind_and_fails_saying_why(tmp_path,
                                                                      prefect_harness):
    stores = new_stores(tmp_path / "state")
    files = {}
    for name, content in corpus().items():  # the first file of each kind
        files.setdefault(name.split("-", 1)[1].split(".")[0], (name, content))
    for name, content in files.values():
        (stores.inbox / name).write_bytes(content)
    state = ingest_inbox(state_dir=stores.state_dir, data_docs=False, return_state=True)
    outcomes = {name: assert_answered(stores, name) for name, _ in files.values()}
    assert_consistent(stores)
    rejected = sorted(name for name, outcome in outcomes.items() if outcome == "rejected")
    assert state.is_failed() and f"{len(rejected)} batch(es) rejected:\n" in state.message
    lines = state.message.split("rejected:\n", 1)[1].split("\n")  # one line per batch
    assert sorted(line.split(": batch rejected: ")[0] for line in lines) == rejected
    assert "accepted" in outcomes.values()


@st.composite
def exports(draw) -> tuple[str, bytes, int]:
    """A CSV export as a spreadsheet or a database might write it: its name, its bytes, and
    its number of rows."""
    batch = draw(st.integers(0, 10**6))
    cell = st.one_of(st.sampled_from(ODD_VALUES + NULL_SPELLINGS), st.text(max_size=8),
                     st.integers(-(10**20), 10**20).map(str))
    rows = good_rows(batch, draw(st.integers(1, 12)))
    for row in rows:
        if draw(st.booleans()):
            row[draw(st.integers(0, 3))] = draw(cell)
    header = [draw(st.sampled_from([c, c.upper(), f" {c} ", c.replace("_", " ")]))
              for c in HEADER]
    text = csv_text(header, rows, sep=draw(st.sampled_from(",;\t|")),
                    end=draw(st.sampled_from(["\n", "\r\n"])), quote=draw(st.booleans()))
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode()
    compress = draw(st.sampled_from([("", lambda b: b), (".gz", gzip.compress),
                                     (".zst", zstd)]))
    return f"export-{batch}.csv{compress[0]}", compress[1](data), len(rows)


EXAMPLES = itertools.count()


@pytest.fixture(scope="module")
def export_stores(tmp_path_factory) -> Stores:
    return new_stores(tmp_path_factory.mktemp("exports") / "state")


@pytest.mark.e2e  # 25 drawn exports through the real validation and store
@settings(max_examples=25, deadline=None, database=None)
@given(export=exports())
def test_an_export_is_ingested_or_rejected_and_nothing_is_lost(export_stores, export):
    name, content, rows = export
    name = f"{next(EXAMPLES)}-{name}"  # a drawn name may come again, with other content
    stores = export_stores
    (stores.inbox / name).write_bytes(content)
    try:
        report = ingest_file(stores.inbox / name, stores, datetime.now(UTC),
                             IngestConfig(data_docs=False))
    except BatchRejected as e:
        report = e.report
    outcome = assert_answered(stores, name)
    if outcome == "accepted":  # every row of the export was read: none lost or made up
        assert report.rows_in == rows == report.rows_accepted + report.rows_quarantined
    assert_consistent(stores)
