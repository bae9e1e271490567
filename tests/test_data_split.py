"""The seeded stratified search split, search-val cycling and step counting (issue 10, points 1-2).

Pure numpy except one tiny folder and the search streams of a synthetic set (no model).
"""

import os

import numpy as np
import pytest
from PIL import Image

from keras_darts import data as D
from keras_darts.errors import UserError


def _check_stratified(labels, train, val, portion):
    labels = np.asarray(labels)
    n = len(labels)
    assert len(np.intersect1d(train, val)) == 0, "halves overlap"
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert len(train) == int(np.floor(portion * n))
    for c in np.unique(labels):
        members = np.sum(labels == c)
        got = np.sum(labels[train] == c)
        assert abs(got - portion * members) <= 1, (c, got, portion * members)
        assert got >= 1 and members - got >= 1, f"class {c} missing from a half"


def test_stratified_split_of_class_sorted_npz(tmp_path):
    # Class-sorted, unequal classes: the old split (first half trains) gave train no class 2..4.
    y = np.repeat(np.arange(5), [30, 7, 12, 21, 10])
    x = np.zeros((len(y), 2, 2, 1), np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    data = D.load_image_data(str(tmp_path / "train.npz"))
    for portion in (0.5, 0.7, 0.25):
        train, val = D.stratified_split(data.y_train, portion, seed=2)
        _check_stratified(data.y_train, train, val, portion)
    # Same seed, same split; another seed, another one.
    a = D.stratified_split(y, 0.5, 2)
    b = D.stratified_split(y, 0.5, 2)
    c = D.stratified_split(y, 0.5, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_stratified_split_of_class_sorted_folder(tmp_path):
    counts = {"a": 5, "b": 3, "c": 6}
    for cls, count in counts.items():
        os.makedirs(tmp_path / cls)
        for i in range(count):
            Image.new("RGB", (3, 3), (i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    data = D.load_image_data(str(tmp_path))
    np.testing.assert_array_equal(data.y_train, np.repeat([0, 1, 2], [5, 3, 6]))  # Class-sorted.
    train, val = D.stratified_split(data.y_train, 0.5, seed=0)
    _check_stratified(data.y_train, train, val, 0.5)
    # The halves are file lists: every file once, in one half only.
    files_train = set(data.train.subset(train).paths)
    files_val = set(data.train.subset(val).paths)
    assert not files_train & files_val and files_train | files_val == set(data.train.paths)


def test_stratified_split_remainders_and_errors():
    # 3 classes of 3, portion 0.5: shares 1.5 each, floor 1 each, total floor(4.5) = 4 -> one class
    # gets the extra example; which one depends on the seed only.
    y = np.repeat([0, 1, 2], 3)
    winners = set()
    for seed in range(12):
        train, _ = D.stratified_split(y, 0.5, seed)
        per_class = np.bincount(y[train], minlength=3)
        assert sorted(per_class) == [1, 1, 2]
        winners.add(int(np.argmax(per_class)))
    assert winners == {0, 1, 2}
    for portion in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(UserError, match=f"^--train_portion={portion}: "):
            D.stratified_split(y, portion, 0)
    with pytest.raises(UserError, match="^--train_portion=0.5: .*at least one"):
        D.stratified_split([0], 0.5, 0)


def test_steps_per_epoch():
    assert D.steps_per_epoch(100, 32) == 3
    assert D.steps_per_epoch(100, 32, cap=2) == 2
    assert D.steps_per_epoch(100, 32, cap=10) == 3
    with pytest.raises(UserError, match="^--batch_size=64: larger than the 10 examples"):
        D.steps_per_epoch(10, 64)
    with pytest.raises(UserError, match="^--batch_size=0: "):
        D.steps_per_epoch(10, 0)


def test_cycle_order_reshuffles_each_pass():
    order, passes = D.cycle_order(7, seed=4, epoch=3, count=17)
    assert len(order) == 17 and passes.tolist() == [0] * 7 + [1] * 7 + [2] * 3
    np.testing.assert_array_equal(order[:7], D.epoch_order(7, 4, 3))  # Pass 0 = the epoch order.
    assert sorted(order[7:14]) == list(range(7)) and not np.array_equal(order[7:14], order[:7])
    assert len(set(order[14:])) == 3
    # A prefix is a prefix: resuming mid-stream sees the same entries.
    np.testing.assert_array_equal(D.cycle_order(7, 4, 3, 9)[0], order[:9])


def test_search_epoch_is_one_pass_over_search_train():
    """--train_portion=0.7 of 200 images at batch 10: floor(140 / 10) = 14 weight steps per epoch
    (the old min(train, val) gave 6), each with a search-val batch cycling through its 60 images."""
    data = D.synthetic_image_data(200, 0, (8, 8, 3), num_classes=4, seed=1)
    streams = D.SearchStreams(data, batch_size=10, train_portion=0.7, seed=5)
    assert streams.steps == 14 and len(streams.train_idx) == 140 and len(streams.val_idx) == 60
    labels = [(t[1].numpy(), v[1].numpy()) for t, v in streams.epoch(0)[0]]
    assert len(labels) == 14
    order, _ = D.cycle_order(60, 5 + 1_000_003, 0, 140)
    val_seen = np.concatenate([v for _, v in labels])
    np.testing.assert_array_equal(val_seen, data.y_train[streams.val_idx][order])
    train_seen = np.concatenate([t for t, _ in labels])
    np.testing.assert_array_equal(
        train_seen, data.y_train[streams.train_idx][D.epoch_order(140, 5, 0)])
    assert D.SearchStreams(data, 10, 0.7, 5, cap=3).steps == 3
    # A resume at step 9 sees the batches an uninterrupted epoch does from there.
    resumed = [(t[1].numpy(), v[1].numpy()) for t, v in streams.epoch(0, 9)[0]]
    assert len(resumed) == 5
    for (ta, va), (tb, vb) in zip(labels[9:], resumed):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(va, vb)
