import pandas as pd

from llmseqrec.datasets import read_recbole_split, read_sequences


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
