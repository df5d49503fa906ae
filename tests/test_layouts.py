"""Each data layout recognised from small files and read into rows the validators accept;
what an unknown or incomplete directory is told; one `llmseqrec run --data` end to end."""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from data_checks.validate import validate_interactions, validate_items
from ingestion.layouts import KINDS, POSITIONS_START, detect
from ingestion.readers import DatasetError
from llmseqrec.cli import app

NOW = 1_800_000_000
T0 = POSITIONS_START


def _write(directory: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return directory


def _jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _generic(d: Path) -> Path:
    pd.DataFrame({"item_id": [10, 20], "title": ["Soap", "Comb"],
                  "description": ["Smells nice.", None]}).to_parquet(d / "items.parquet")
    return _write(d, {"interactions.csv": "user_id,item_id,timestamp,rating,extra\n"
                                          "1,10,1400000000,5,x\n1,20,1400000001,4,y\n"})


def _movielens(d: Path) -> Path:
    return _write(d, {"ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.0,1400000000\n"
                                     "1,20,3.5,1400000001\n",
                      "movies.csv": "movieId,title,genres\n10,Heat (1995),Action|Crime\n"
                                    "20,Up (2009),Animation\n",
                      "README.txt": "Summary\n"})


def _movielens_100k(d: Path) -> Path:
    flags = "|".join(["0"] * 19)
    action = "|".join(["0", "1"] + ["0"] * 17)
    return _write(d, {"u.data": "1\t10\t4\t1400000000\n1\t20\t3\t1400000001\n",
                      "u.item": f"10|Heat (1995)|01-Jan-1995||http://x|{action}\n".encode()
                                + f"20|Am\xe9lie (2001)|01-Jan-2001||http://y|{flags}\n"
                                .encode("latin-1"),
                      "u.genre": "unknown|0\nAction|1\n"})


def _unisrec(d: Path) -> Path:
    return _write(d, {"S.test.inter": "user_id:token\titem_id_list:token_seq\titem_id:token\n"
                                      "0\t0\t1\n",
                      "S.train.inter": "user_id:token\titem_id_list:token_seq\titem_id:token\n",
                      "S.text": "item_id:token\ttext:token_seq\nA1\tSoap. Bath. Acme.\n"
                                "A2\tComb. Hair. \n",
                      "S.item2index": "A1\t0\nA2\t1\n"})


def _recbole(d: Path) -> Path:
    return _write(d, {"s.inter": "user_id:token\titem_id:token\nu1\tB2\nu1\tB1\n",
                      "s.item": "item_id:token\ttitle:token_seq\tcategories:token_seq\n"
                                "B1\tSoap\tBath\nB2\tComb\tHair\n"})


def _s3rec(d: Path) -> Path:
    return _write(d, {"Beauty.txt": "1 2 1\n",
                      "Beauty.item_text.tsv": "item_id\tasin\ttitle\tcategories\n"
                                              "1\tB1\tSoap\tBeauty > Bath\n2\tB2\tComb\t\n"})


def _amazon(d: Path) -> Path:
    return _write(d, {
        "Beauty_5.json.gz": gzip.compress(_jsonl(
            {"reviewerID": "UA", "asin": "B2", "overall": 5.0, "unixReviewTime": 1400000000},
            {"reviewerID": "UA", "asin": "B1", "overall": 4.0, "unixReviewTime": 1400000001},
        ).encode()),
        "meta_Beauty.json": _jsonl({"asin": "B1", "title": "Soap", "category": ["Bath"]},
                                   {"asin": "B2", "title": "Comb", "brand": "Acme"})})


# layout, its files, and the user's (item title, timestamp) pairs it reads
LAYOUTS = [
    ("generic", _generic, [("Soap", 1400000000), ("Comb", 1400000001)]),
    ("movielens", _movielens, [("Heat (1995)", 1400000000), ("Up (2009)", 1400000001)]),
    ("movielens", _movielens_100k, [("Heat (1995)", 1400000000),
                                    ("Am\xe9lie (2001)", 1400000001)]),
    ("unisrec-split", _unisrec, [("Soap. Bath. Acme.", T0), ("Comb. Hair. ", T0 + 1)]),
    ("recbole-atomic", _recbole, [("Comb", T0), ("Soap", T0 + 1)]),
    ("s3rec-sequences", _s3rec, [("Comb", T0), ("Soap", T0 + 1)]),
    ("amazon-reviews", _amazon, [("Comb", 1400000000), ("Soap", 1400000001)]),
]


@pytest.mark.parametrize(("name", "write", "history"), LAYOUTS,
                         ids=[w.__name__.lstrip("_") for _, w, _ in LAYOUTS])
def test_layout_is_recognised_and_read_into_rows_the_validators_accept(tmp_path, name, write,
                                                                       history):
    layout = detect(write(tmp_path))
    assert layout.name == name
    raw = layout.load()
    items = validate_items(raw.items)
    log = validate_interactions(raw.interactions, items.accepted["item_id"], now=NOW)
    assert items.quarantined.empty and log.quarantined.empty
    titles = items.accepted.set_index("item_id")["title"]
    assert [(titles[i], t) for i, t in log.accepted[["item_id", "timestamp"]].values] == history


def test_string_keys_become_integers_and_the_catalog_keeps_them(tmp_path):
    raw = detect(_amazon(tmp_path)).load()
    assert raw.items[["item_id", "source_id", "genres", "tags"]].fillna("").values.tolist() == [
        ["1", "B1", "Bath", ""], ["2", "B2", "", "Acme"]]
    assert raw.interactions[["user_id", "item_id"]].values.tolist() == [["1", "2"], ["1", "1"]]


def test_generic_items_keep_their_text_fields(tmp_path):
    items = detect(_generic(tmp_path)).load().items
    assert items.columns.tolist() == ["item_id", "title", "description"]
    assert items["description"].tolist() == ["Smells nice.", None]


def test_s3rec_item_without_title_is_quarantined_with_its_rows(tmp_path):
    _write(tmp_path, {"Beauty.txt": "1 1 2\n", "Beauty.item_text.tsv":
                      "item_id\tasin\ttitle\tcategories\n1\tB1\tSoap\t\n2\tB2\t\tHair\n"})
    raw = detect(tmp_path).load()
    items = validate_items(raw.items)
    log = validate_interactions(raw.interactions, items.accepted["item_id"], now=NOW)
    assert items.quarantined[["item_id", "failed_checks"]].values.tolist() == [
        ["2", "title_missing"]]
    assert log.quarantined[["item_id", "failed_checks"]].values.tolist() == [
        ["2", "item_not_in_catalog"]]


def test_unknown_directory_is_told_what_it_holds_and_what_each_layout_expects(tmp_path):
    _write(tmp_path, {"clicks.csv": "a,b\n", "notes.txt": "hello\n"})
    with pytest.raises(DatasetError) as e:
        detect(tmp_path)
    message = str(e.value)
    assert "no known data layout; found clicks.csv, notes.txt" in message
    for kind in KINDS:
        assert f"  {kind.name}: {kind.expects}" in message


@pytest.mark.parametrize(("files", "message"), [
    ({"ratings.csv": "userId\n"}, r"ratings\.csv: found, but not movies\.csv beside it"),
    ({"Beauty.txt": "1 2 3\n"}, r"Beauty\.txt: found, but not Beauty\.item_text\.tsv"),
    ({"interactions.csv": "user_id\n"}, r"found, but not items\.csv, items\.parquet or items"),
    ({"meta_B.json": "{}\n"}, r"meta_B\.json: found, but not a reviews file"),
    ({"a.inter": "", "b.inter": ""}, r"a\.inter, b\.inter: one data set per directory"),
    ({"ratings.csv": "", "movies.csv": "", "s.inter": "", "s.text": ""},
     r"files of several layouts \(movielens, recbole-atomic\)"),
])
def test_incomplete_or_mixed_directory_is_told_what_is_wrong(tmp_path, files, message):
    with pytest.raises(DatasetError, match=message):
        detect(_write(tmp_path, files))


def test_a_file_is_not_a_data_directory(tmp_path):
    _write(tmp_path, {"Beauty.txt": "1 2\n"})
    with pytest.raises(DatasetError, match="not a directory \\(give the directory that holds it"):
        detect(tmp_path / "Beauty.txt")


@pytest.mark.e2e
def test_run_trains_and_registers_a_model_from_the_generic_layout(movielens_slice, tmp_path,
                                                                  prefect_harness):
    data = tmp_path / "mine"  # the slice's 150 most rated films: few items to embed
    data.mkdir()
    ratings = pd.read_csv(movielens_slice / "ratings.csv", dtype=str)
    log = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    log = log[log["item_id"].isin(log["item_id"].value_counts().index[:150])]
    bad = pd.DataFrame([{"user_id": "1", "item_id": "999999", "timestamp": "1260759144"}])
    pd.concat([log, bad]).to_csv(data / "interactions.csv", index=False)
    movies = pd.read_csv(movielens_slice / "movies.csv", dtype=str)
    movies = movies[movies["movieId"].isin(log["item_id"])]
    movies.rename(columns={"movieId": "item_id"}).to_json(data / "items.jsonl",
                                                          orient="records", lines=True)
    run = CliRunner().invoke(app, [
        "run", "--data", str(data), "--state-dir", str(tmp_path / "state"), "--epochs", "1",
        "--hidden", "16", "--layers", "1", "--max-len", "20", "--p95-ms", "2000"])
    assert run.exit_code == 0, run.output[-3000:]
    assert f"{len(log)} rows accepted, 1 quarantined" in run.output
    assert "test NDCG@10: model " in run.output and "version 1: champion" in run.output
