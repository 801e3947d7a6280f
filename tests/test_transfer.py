"""The transfer study's data set and its ordering summary."""
import os

import numpy as np
import pandas as pd
import pytest

import kit
from kit.experiments.tables import ordering_by
from kit.experiments.transfer import digits_folder, transfer_spec


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    digits_folder(root)
    return root


def test_digits_folder_is_a_stratified_image_folder_of_every_digit(digits_root):
    path = digits_root / "sklearn_digits"
    train = sorted(path.glob("train/*/*.png"))
    test = sorted(path.glob("test/*/*.png"))
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert {p.name for p in train}.isdisjoint({p.name for p in test})   # no image in both
    counts = pd.Series([p.parent.name for p in test]).value_counts()
    assert set(counts.index) == {str(d) for d in range(10)} and counts.min() >= 35
    # no temporary folder left behind
    assert [p.name for p in digits_root.iterdir()] == ["sklearn_digits"]


def test_digits_folder_loads_through_the_folder_loader_and_matches_sklearn(digits_root):
    from sklearn.datasets import load_digits

    bundle = kit.load_dataset(transfer_spec("digits", digits_root), image_size=8)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 3, 8)
    x, y = bundle.train[0]
    i = int(os.path.splitext(os.path.basename(bundle.train.samples[0][0]))[0])
    ref = load_digits()
    assert y == ref.target[i]
    # PNG keeps the 17 grey levels exactly (0..16 -> 0..255), in every RGB channel
    np.testing.assert_allclose(x[0].numpy() * 16, ref.images[i], atol=0.04)
    assert (x[0] == x[1]).all() and (x[1] == x[2]).all()


def test_digits_folder_is_written_once(digits_root):
    path = digits_root / "sklearn_digits"
    before = (path / "DONE").stat().st_mtime_ns
    assert digits_folder(digits_root) == path
    assert (path / "DONE").stat().st_mtime_ns == before
    assert transfer_spec("mnist5k", digits_root) == "mnist5k"       # other names pass through


def test_ordering_by_sorts_methods_by_mean_test_accuracy_without_before():
    rows = pd.DataFrame({"method": ["before", "a", "a", "b", "c"],
                         "acc_test": [0.99, 0.2, 0.6, 0.5, 0.1]})
    assert ordering_by(rows) == ["c", "a", "b"]          # a: mean 0.4
