"""Files the kit writes: atomic writes (single files, groups, whole folders), advisory
locks (on a folder, or a lock file per cache entry), and the up-front check that an output
place can be written."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Mapping

from .utils import quiet


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
def _flocked(path: str | Path, *, flags: int, shared: bool = False, waiting: str = ""):
    """flock on os.open(path, flags) for the block; yields whether the lock is held (False
    where the platform, the file system or the path gives none). `waiting`: a line for
    stderr (unless `quiet()`) when another holder makes this one wait."""
    try:
        import fcntl
        fd = os.open(path, flags, 0o644)
    except (ImportError, OSError):
        yield False
        return
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting and not quiet():
                    print(waiting, file=sys.stderr)
                fcntl.flock(fd, mode)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)                       # closing releases the lock


def folder_lock(folder: str | Path, *, shared: bool = False):
    """Hold an advisory lock on `folder` itself (flock on the folder, no lock file).

    Writers of files that must change together take it exclusive around their renames;
    readers of such a group take it shared. Best effort: where the platform or the file
    system has no flock it does nothing (each file is still atomic on its own).
    """
    return _flocked(folder, flags=os.O_RDONLY, shared=shared)


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


def file_lock(path: str | Path):
    """Hold an exclusive advisory lock on the file `path` (created if missing) for the
    block; yields True when locked. A second process asking for the same lock waits until
    the first leaves the block (one line on stderr says so, unless `quiet()`). The caches
    take one per entry, so two processes that need the same entry compute it once: the
    second finds it made. Where no lock can be had (no flock, a folder this process cannot
    write) the block runs unlocked and yields False; writes stay atomic either way."""
    with contextlib.suppress(OSError):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _flocked(path, flags=os.O_RDWR | os.O_CREAT,
                    waiting=f"waiting for another process to finish '{path}'")


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
