"""Small shared helpers: seeding, devices, eval mode, registry look-ups, atomic writes,
progress bars, versions."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Mapping

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


def _fsync_dir(folder: Path) -> None:
    """Make renames inside `folder` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_temp(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` into a unique, fsynced temporary file beside `path`; returns tmp (with
    the permissions of a plainly created file, not mkstemp's private 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, shared: bool = False):
    """Hold an advisory lock on `folder` itself (flock on the folder, no lock file).

    Writers of files that must change together take it exclusive around their renames;
    readers of such a group take it shared. Best effort: where the platform or the file
    system has no flock it does nothing (each file is still atomic on its own).
    """
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file by `write(tmp)` into a unique temporary file beside `path`, fsync it and
    rename it into place: readers see the old file or the new one, never a torn one, and
    two processes writing the same path never share a temporary name.

    >>> import tempfile, pathlib; d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.txt", lambda t: t.write_text("hi")).read_text()
    'hi'
    """
    return atomic_write_group({path: write})[0]


def atomic_write_group(writes: Mapping[str | Path, Callable[[Path], None]]) -> list[Path]:
    """Write several files of one folder so that they change together.

    Each file is written to a unique temporary name and fsynced; then all are renamed into
    place while holding `folder_lock(folder)`, so concurrent writers of the same group
    never leave files of two different saves side by side (e.g. weights and a sidecar
    describing other weights). Returns the paths, in order.
    """
    paths = [Path(p) for p in writes]
    folder = paths[0].parent
    if any(p.parent != folder for p in paths):
        raise ValueError(f"atomic_write_group writes files of one folder; got {paths}")
    folder.mkdir(parents=True, exist_ok=True)
    tmps: list[Path] = []
    try:
        for p, write in zip(paths, writes.values()):
            tmps.append(_write_temp(p, write))
        with folder_lock(folder):
            for tmp, p in zip(tmps, paths):
                os.replace(tmp, p)
        _fsync_dir(folder)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return paths


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a text file."""
    return atomic_write(path, lambda t: t.write_text(text))


def check_output(path: str | Path, *, overwrite: bool = False, folder: bool = False) -> Path:
    """Check, before any compute, that `path` can be written: raise OSError subclasses
    with a message naming the problem and the fix.

    folder: `path` is an output folder (it may exist empty; non-empty needs `overwrite`);
    else an output file (an existing one needs `overwrite`). The nearest existing parent
    must be a folder this process may write to.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise NotADirectoryError(f"'{path}' is a file, not a folder; choose a folder name")
        if not folder and path.is_dir():
            raise IsADirectoryError(f"'{path}' is a folder, not a file; choose a file name")
        if not overwrite and (not folder or any(path.iterdir())):
            raise FileExistsError(f"'{path}' already exists{' and is not empty' if folder else ''}"
                                  f"; allow replacing it (--overwrite) or choose a new name")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into '{parent}' (permission denied); choose "
                              f"another place for '{path}'")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False):
    """Build an output folder in a temporary sibling and rename it to `path` when the block
    ends without error, so `path` holds one whole run or none.

    Without `overwrite`, a non-empty `path` raises FileExistsError (before the block and
    again at the rename); with it, the old folder is replaced only after the new one is
    complete (moved aside, the new one renamed in, then the old one deleted). On error the
    temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite, folder=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _fsync_dir(tmp)
        _swap_in(tmp, path, overwrite=overwrite)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_APPEARED = ("'{path}' appeared while this run was computing; its result is not written "
             "(allow replacing it: --overwrite)")


def _swap_in(new: Path, path: Path, *, overwrite: bool) -> None:
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()                                   # an empty folder is replaced freely
    elif path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(_APPEARED.format(path=path))
        old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old.tmp"
        os.replace(path, old)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(old, path)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
        return
    try:
        os.rename(new, path)
    except OSError:
        if path.exists():                              # a concurrent run got there first
            raise FileExistsError(_APPEARED.format(path=path)) from None
        raise
