import gzip
import json

import pandas as pd
import pytest

from ingestion.published import (
    load_amazon_reviews,
    load_recbole_atomic,
    read_recbole_split,
    read_sequences,
    with_integer_ids,
)
from ingestion.readers import DatasetError, load_movielens, read_interaction_batch


def test_sequence_file_keeps_the_order_of_each_line(tmp_path):
    path = tmp_path / "Beauty.txt"
    path.write_text("1 5 6 7\n2 7\n3\n")
    log = read_sequences(path)
    assert log.values.tolist() == [[1, 5, 0], [1, 6, 1], [1, 7, 2], [2, 7, 0]]


def test_recbole_split_rebuilds_each_sequence_from_the_test_line(tmp_path):
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (tmp_path / "S.test.inter").write_text(header + "0\t0 1 2\t3\n1\t2 1\t0\n")
    (tmp_path / "S.text").write_text("item_id:token\ttext:token_seq\n"
                                     "A1\tFirst. \nA2\tSecond \"quoted\". \nA3\tThird.\nA4\tx\n")
    (tmp_path / "S.item2index").write_text("A1\t0\nA2\t1\nA3\t2\nA4\t3\n")
    log, items = read_recbole_split(tmp_path, "S")
    assert log.groupby("user_id")["item_id"].agg(list).to_dict() == {0: [0, 1, 2, 3], 1: [2, 1, 0]}
    assert (log.groupby("user_id")["timestamp"].agg(list)[0]) == [0, 1, 2, 3]
    assert items.set_index("item_id").loc[1, "text"] == 'Second "quoted". '
    assert isinstance(items, pd.DataFrame) and len(items) == 4


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def _write_jsonl(path, records):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_dat_release_reads_like_the_csv_release(tmp_path):
    csv_dir, dat_dir = tmp_path / "csv", tmp_path / "dat"
    csv_dir.mkdir()
    dat_dir.mkdir()
    _write(csv_dir / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,978300760\n"
           "1,20,3.5,978300761\n2,10,5,978300762\n")
    _write(dat_dir / "ratings.dat", "1::10::4::978300760\n1::20::3.5::978300761\n\n"
           "2::10::5::978300762\n")
    _write(csv_dir / "movies.csv", 'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n'
           "20,Shorts: Part 2 (2001),(no genres listed)\n")
    _write(dat_dir / "movies.dat", "10::Heat, The (1995)::Action|Crime\n"
           "20::Shorts: Part 2 (2001)::(no genres listed)\n")
    _write(csv_dir / "tags.csv", "userId,movieId,tag,timestamp\n1,10,Pacino,1\n2,10,heist ,2\n")
    _write(dat_dir / "tags.dat", "1::10::Pacino::1\n2::10::heist ::2\n")
    from_csv, from_dat = load_movielens(csv_dir), load_movielens(dat_dir)
    pd.testing.assert_frame_equal(from_dat.interactions, from_csv.interactions)
    pd.testing.assert_frame_equal(from_dat.items, from_csv.items)
    assert from_dat.interactions.columns.tolist() == ["user_id", "item_id", "timestamp",
                                                      "rating"]
    assert from_dat.interactions["rating"].tolist() == ["4", "3.5", "5"]
    items = from_dat.items.set_index("item_id")
    assert items.loc["10"].tolist() == ["Heat, The (1995)", "Action, Crime", "pacino, heist"]
    assert items.loc["20", "title"] == "Shorts: Part 2 (2001)"
    assert pd.isna(items.loc["20", "genres"]) and pd.isna(items.loc["20", "tags"])


def test_dat_release_decodes_latin1_titles(tmp_path):
    _write(tmp_path / "ratings.dat", "1::1::5::978300760\n")
    _write(tmp_path / "movies.dat", "1::Caf\u00e9 au lait (1993)::Comedy\n", "latin-1")
    items = load_movielens(tmp_path).items
    assert items["title"].tolist() == ["Caf\u00e9 au lait (1993)"]
    assert items["tags"].tolist() == [None]


def test_dat_line_with_too_few_fields_is_named(tmp_path):
    _write(tmp_path / "ratings.dat", "1::1::5::978300760\n\n1::2::4\n")
    _write(tmp_path / "movies.dat", "1::A (1990)::Comedy\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat: line 3 is not 4 '::'-separated"):
        load_movielens(tmp_path)


def test_directory_without_ratings_fails_clearly(tmp_path):
    with pytest.raises(DatasetError, match="no MovieLens ratings.csv or ratings.dat"):
        load_movielens(tmp_path)


def test_recbole_atomic_files_drop_the_field_types(tmp_path):
    _write(tmp_path / "ml.inter", "user_id:token\titem_id:token\trating:float\t"
           "timestamp:float\n1\t10\t4.0\t978300760.0\n1\t20\t3\t978300761\n")
    _write(tmp_path / "ml.item", "item_id:token\ttitle:token_seq\tcategories:token_seq\t"
           "brand:token\tprice:float\n10\tThe \"Best\" Lipstick\tBeauty Makeup\tAcme\t9.5\n"
           "20\tNo brand\t\t\t\n")
    raw = load_recbole_atomic(tmp_path, "ml")
    assert raw.interactions.values.tolist() == [["1", "10", "978300760", "4.0"],
                                                ["1", "20", "978300761", "3"]]
    assert raw.interactions.columns.tolist() == ["user_id", "item_id", "timestamp", "rating"]
    assert raw.items.columns.tolist() == ["item_id", "title", "genres", "tags"]
    assert raw.items.iloc[0].tolist() == ["10", 'The "Best" Lipstick', "Beauty Makeup", "Acme"]
    assert raw.items.iloc[1, :2].tolist() == ["20", "No brand"]
    assert raw.items.iloc[1, 2:].isna().all()


def test_recbole_inter_without_timestamp_takes_the_file_order(tmp_path):
    _write(tmp_path / "s.inter", "user_id:token\titem_id:token\nu1\tA\nu2\tB\nu1\tC\nu1\tA\n")
    _write(tmp_path / "s.text", "item_id:token\ttext:token_seq\nA\tFirst \"one\"\nB\tSecond\n")
    raw = load_recbole_atomic(tmp_path, "s")
    assert raw.interactions.values.tolist() == [["u1", "A", "0"], ["u2", "B", "0"],
                                                ["u1", "C", "1"], ["u1", "A", "2"]]
    assert raw.items.set_index("item_id")["title"].to_dict() == {"A": 'First "one"',
                                                                 "B": "Second"}


def test_recbole_inter_missing_item_id_fails_clearly(tmp_path):
    _write(tmp_path / "y.inter", "user_id:token\tbusiness_id:token\nu\tb\n")
    with pytest.raises(DatasetError, match=r"y\.inter: missing column\(s\) item_id"):
        load_recbole_atomic(tmp_path, "y")


def test_amazon_2018_reviews_with_metadata(tmp_path):
    reviews = _write_jsonl(tmp_path / "Beauty_5.json", [
        {"reviewerID": "U1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000,
         "reviewText": "great", "reviewTime": "05 13, 2014"},
        {"reviewerID": "U2", "asin": "B02", "overall": 2.0, "unixReviewTime": 1400000100},
    ])
    meta = _write_jsonl(tmp_path / "meta_Beauty.json", [
        {"asin": "B01", "title": "Rose &amp; Oud Soap", "brand": "Acme",
         "category": ["Beauty", "Bath & Body", "Beauty"], "description": ["Smells nice."]},
        {"asin": "B02", "title": "Comb", "category": [], "main_cat": "All Beauty"},
        {"asin": "B01", "title": "Duplicate line"},
    ])
    raw = load_amazon_reviews(reviews, meta)
    assert raw.interactions.values.tolist() == [["U1", "B01", "1400000000", "5.0"],
                                                ["U2", "B02", "1400000100", "2.0"]]
    items = raw.items.set_index("item_id")
    assert items.loc["B01"].tolist() == ["Rose & Oud Soap", "Beauty, Bath & Body", "Acme"]
    assert items.loc["B02", "genres"] == "All Beauty" and pd.isna(items.loc["B02", "tags"])
    assert len(items) == 2


def test_amazon_2023_gzipped_reviews_in_milliseconds(tmp_path):
    reviews = _write_jsonl(tmp_path / "All_Beauty.jsonl.gz", [
        {"user_id": "AX", "asin": "B0V1", "parent_asin": "B0P", "rating": 4.0,
         "timestamp": 1588687728923, "title": "review title", "text": "ok"},
    ])
    meta = _write_jsonl(tmp_path / "meta_All_Beauty.jsonl", [
        {"parent_asin": "B0P", "title": "Hair Clip", "main_category": "All Beauty",
         "categories": [], "store": "ClipCo", "description": []},
    ])
    raw = load_amazon_reviews(reviews, meta)
    assert raw.interactions.values.tolist() == [["AX", "B0P", "1588687728", "4.0"]]
    assert raw.items.values.tolist() == [["B0P", "Hair Clip", "All Beauty", "ClipCo"]]
    bare = load_amazon_reviews(reviews).items
    assert bare["item_id"].tolist() == ["B0P"] and bare["title"].isna().all()


def test_amazon_bad_json_line_is_named(tmp_path):
    path = _write(tmp_path / "reviews.jsonl",
                  '{"reviewerID": "U1", "asin": "B1", "unixReviewTime": 1}\n\n{"asin": oops}\n')
    with pytest.raises(DatasetError, match=r"reviews\.jsonl: line 3 is not valid JSON"):
        load_amazon_reviews(path)


def test_amazon_reviews_without_a_user_field_fail_clearly(tmp_path):
    path = _write_jsonl(tmp_path / "r.jsonl", [{"asin": "B1", "unixReviewTime": 1}])
    with pytest.raises(DatasetError, match="missing field.*reviewerID or user_id"):
        load_amazon_reviews(path)


def test_jsonl_batch_key_absent_from_a_line_is_missing_not_nan(tmp_path):
    path = _write_jsonl(tmp_path / "batch.jsonl", [
        {"user_id": 1, "item_id": 2, "timestamp": 1400000000},
        {"user_id": 1, "item_id": 3, "timestamp": 1400000001, "rating": 4.5},
    ])
    batch, _ = read_interaction_batch(path)
    assert batch["rating"].tolist() == [None, "4.5"]


def test_string_keys_become_integer_ids_the_store_takes(tmp_path):
    (tmp_path / "r.jsonl").write_text(
        '{"reviewerID": "UA", "asin": "B2", "overall": 5.0, "unixReviewTime": 1400000000}\n'
        '{"reviewerID": "UB", "asin": "B9", "overall": 4.0, "unixReviewTime": 1400000001}\n'
        '{"reviewerID": "UA", "asin": "B1", "overall": 3.0, "unixReviewTime": 1400000002}\n')
    (tmp_path / "m.jsonl").write_text('{"asin": "B1", "title": "One"}\n'
                                      '{"asin": "B2", "title": "Two"}\n')
    raw, keys = with_integer_ids(load_amazon_reviews(tmp_path / "r.jsonl", tmp_path / "m.jsonl"))
    assert raw.items[["item_id", "title"]].values.tolist() == [["1", "One"], ["2", "Two"]]
    assert raw.interactions[["user_id", "item_id"]].values.tolist() == [
        ["1", "2"], ["2", "3"], ["1", "1"]]  # B9 has no metadata: an id after the catalog's
    assert keys["item_id"].to_dict() == {"B1": 1, "B2": 2, "B9": 3}
    assert keys["user_id"].to_dict() == {"UA": 1, "UB": 2}
