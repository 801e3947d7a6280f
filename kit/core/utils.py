"""Small shared helpers: seeding, devices, eval mode, registry look-ups, progress bars,
versions (files: atomic writes and locks, `kit.core.files`)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from typing import Mapping

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
    """"auto" -> cuda if present, then Apple's mps, else cpu; anything else is passed to
    torch.device."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    return torch.device(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the kit never hard-codes a device)."""
    return next(model.parameters()).device


def quiet() -> bool:
    """True when progress bars should be off (CI=true, or KIT_QUIET=1)."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("KIT_QUIET") == "1"


def progress(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm.auto progress bar (a widget in JupyterLab) on stderr; off when `disable` or
    `quiet()`: set KIT_QUIET=1 to silence every bar of the kit."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=bool(disable) or quiet(), file=sys.stderr, **kwargs)


def versions() -> dict:
    """Versions of the kit and its main dependencies, for JSON sidecars."""
    from importlib.metadata import PackageNotFoundError, version

    import torchvision

    try:
        kit_version = version("unlearning-kit")
    except PackageNotFoundError:  # run from a source tree without `pip install -e .`
        kit_version = "unknown"
    return {
        "kit": kit_version,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def check_name(name, registry: Mapping, what: str):
    """registry[name], or a ValueError naming the valid choices ("unknown X 'y'; valid ...").

    >>> check_name("b", {"a": 1, "b": 2}, "letter")
    2
    >>> check_name("z", {"a": 1}, "letter")
    Traceback (most recent call last):
    ...
    ValueError: unknown letter 'z'; valid names: a
    """
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid names: {', '.join(map(str, registry))}")
    return registry[name]


def check_names(names, registry: Mapping, what: str) -> None:
    """`check_name` for several names at once; the error lists every unknown one."""
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid names: {', '.join(map(str, registry))}")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, *, training: bool = False, restore_buffers: bool = False):
    """Set every submodule to eval (or train) mode; restore each one's own flag on exit.

    restore_buffers: also restore every buffer (e.g. BatchNorm running statistics that a
    train-mode forward pass updates). The one mode switch of the kit.

    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()); m[1].eval()
    ... # doctest: +ELLIPSIS
    Dropout(...)
    >>> with eval_mode(m): m.training
    False
    >>> m.training, m[1].training
    (True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    saved = ({n: b.detach().clone() for n, b in model.named_buffers()} if restore_buffers
             else None)
    model.train(training)
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        if saved is not None:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(saved[n])


def train_mode(model: torch.nn.Module, bn_mode: str = "train") -> None:
    """Train mode for an update step; bn_mode "frozen" keeps every BatchNorm layer in eval
    mode (its running statistics used and left as they are).

    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).eval()
    >>> train_mode(m, "frozen"); m.training, m[1].training
    (True, False)
    """
    model.train()
    if bn_mode == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


@contextlib.contextmanager
def channels_last(model: torch.nn.Module, enabled: bool = True):
    """Within the block: the model's 4-d weights in channels_last memory format, the layout
    in which convolutions and pooling run fastest on a CPU (benchmarks/README.md); the
    standard layout is put back on exit. A no-op when not enabled, for a model without 4-d
    weights, or for one already in channels_last. It changes float round-off only.

    >>> m = torch.nn.Conv2d(3, 4, 3)
    >>> with channels_last(m): m.weight.is_contiguous(memory_format=torch.channels_last)
    True
    >>> m.weight.is_contiguous()
    True
    """
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    if (not enabled or w is None
            or (w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous())):
        yield model
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


def as_channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """A 4-d image batch in channels_last memory format (others unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def weights_hash(model: torch.nn.Module, n: int = 10) -> str:
    """Content hash of a model's state, bit for bit (identifies a base model in cache keys
    and a model in the inversion memo, `kit.method.synthesis`)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:n]
