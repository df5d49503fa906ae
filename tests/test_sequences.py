import numpy as np
import pandas as pd

from training.sequences import (
    ItemIndex,
    leave_one_out,
    length_batches,
    pad_left,
    popularity,
    training_windows,
    user_sequences,
)


def test_item_index_round_trip_and_unknown_ids():
    index = ItemIndex.from_items([30, 10, 20, 10])
    assert len(index) == 3
    assert index.encode([10, 20, 30, 99, 5]).tolist() == [1, 2, 3, 0, 0]
    assert index.decode([3, 1]).tolist() == [30, 10]


def test_sequences_are_time_ordered_and_split_leave_one_out():
    log = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 3, 3, 3],
                        "item_id": [10, 20, 30, 40, 10, 20, 30, 20, 10],
                        "timestamp": [4, 1, 3, 2, 1, 2, 1, 1, 1]})
    index = ItemIndex.from_items([10, 20, 30, 40])
    seqs = user_sequences(log, index)
    assert [s.tolist() for s in seqs] == [[2, 4, 3, 1], [1, 2], [3, 2, 1]]
    split = leave_one_out(seqs)  # user 2 has too few items
    assert [s.tolist() for s in split.train] == [[2, 4], [3]]
    assert split.valid_target.tolist() == [3, 2] and split.test_target.tolist() == [1, 1]
    assert [s.tolist() for s in split.test_history] == [[2, 4, 3], [3, 2]]


def test_windows_make_every_item_after_the_first_a_target_once():
    seq = np.arange(1, 12)  # 11 items
    windows = training_windows([seq], max_len=4)
    targets = np.concatenate([w[1:] for w in windows])
    assert sorted(targets.tolist()) == list(range(2, 12))
    assert max(len(w) for w in windows) == 5


def test_pad_left_keeps_the_latest_items():
    batch = pad_left([np.array([1, 2, 3, 4]), np.array([5])], max_len=3)
    assert batch.tolist() == [[2, 3, 4], [0, 0, 5]]


def test_popularity_counts_training_items():
    assert popularity([np.array([1, 1, 3])], 3).tolist() == [0, 2, 0, 1]
    assert popularity([], 2).tolist() == [0, 0, 0]


def test_length_batches_cover_every_sequence_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 51, size=1000)
    batches = length_batches(lengths, 10, np.random.default_rng(1), pool=20)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    padded = [len(b) * lengths[b].max() for b in batches]
    assert sum(padded) < 1.2 * lengths.sum()  # random batches of 10 would pad to about 1.7x
    assert max(padded) <= 10 * lengths.mean()  # short sequences come in larger batches
    assert max(len(b) for b in batches) > 3 * min(len(b) for b in batches)
    again = length_batches(lengths, 10, np.random.default_rng(2), pool=20)
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]  # reshuffled
