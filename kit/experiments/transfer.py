"""The transfer study's data set: scikit-learn's 8x8 digits as an ImageFolder tree.

The default recipe was calibrated on mnist5k with the small CNN. Notebook 09 runs it,
untouched, on a data set and an architecture it never saw: the 1,797 handwritten digits
of 8x8 pixels and 17 grey levels that ship with scikit-learn (UCI optical digits: other
writers, another scanner and resolution), written once as PNG files in the torchvision
ImageFolder layout and read back through the kit's `folder:PATH` loader as a user's own
data would be, with a ResNet-8 (`kit.core.models`, "resnet8_cifar").

>>> import tempfile
>>> path = digits_folder(tempfile.mkdtemp())
>>> sorted(p.name for p in path.iterdir())
['DONE', 'test', 'train']
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

DIGITS = "digits"          # the name notebook 09 resolves to this folder


def digits_folder(root: str | Path, *, test_size: float = 0.2, seed: int = 0) -> Path:
    """ROOT/sklearn_digits with train/<digit>/<index>.png and test/<digit>/<index>.png (a
    stratified, seeded split; <index> is the row in `sklearn.datasets.load_digits`).

    Written once, into a temporary folder renamed into place when complete, so a reader
    never sees a partial tree; later calls return the existing folder.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    path = Path(root) / "sklearn_digits"
    if (path / "DONE").is_file():
        return path
    Path(root).mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)      # 0..16 -> 0..255
    idx = np.arange(len(images))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed,
                                   stratify=digits.target)
    tmp = Path(tempfile.mkdtemp(prefix=".sklearn_digits.", dir=root))
    try:
        for split, rows in (("train", train), ("test", test)):
            for i in rows:
                folder = tmp / split / str(int(digits.target[i]))
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i], mode="L").save(folder / f"{int(i):04d}.png")
        (tmp / "DONE").write_text(f"{len(train)} train, {len(test)} test, seed {seed}\n")
        try:
            os.replace(tmp, path)
        except OSError:                    # another process finished first: keep theirs
            if not (path / "DONE").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def transfer_spec(name: str, data_root: str | Path) -> str:
    """The `load_dataset` name of a transfer data set: "digits" writes (once) and names the
    scikit-learn digits folder under data_root; anything else is passed through."""
    return f"folder:{digits_folder(data_root)}" if name == DIGITS else name
