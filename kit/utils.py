"""Small shared helpers: seeding, device resolution, progress bars, versions."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) with `seed`; return a CPU generator.

    The same seed gives the same split, the same forget indices and, on CPU, the same
    trained weights.

    >>> g = seed_everything(0); int(torch.randint(10, (1,), generator=g))
    4
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if present, else cpu; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the kit never hard-codes a device)."""
    return next(model.parameters()).device


def quiet() -> bool:
    """True when progress bars should be off (CI=true, or KIT_QUIET=1)."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("KIT_QUIET") == "1"


def progress(iterable=None, **kwargs):
    """tqdm progress bar that is silent under CI."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=quiet(), file=sys.stderr, **kwargs)


def versions() -> dict:
    """Versions of the kit and its main dependencies, for JSON sidecars."""
    import torchvision

    from . import __version__

    return {
        "kit": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
