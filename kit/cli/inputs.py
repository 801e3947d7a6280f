"""What every command shares about bad input: the one error type, and reading id files.

`UsageError` is printed as one line `error: ...` with exit status 2 and nothing written;
`bad_input` turns the library's own input errors (ValueError, TypeError, OSError) into it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


class UsageError(ValueError):
    """Bad input on the command line; printed as one line, exit status 2."""


@contextlib.contextmanager
def bad_input(prefix: str = ""):
    """Report the library's input errors raised in the block (ValueError, TypeError and
    OSError: bad values, missing files or data sets, mismatched checkpoints) as UsageError."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(f"{prefix}{e}") from e


def existing_file(path, what: str) -> Path:
    """`path` as a Path, if it is a file; else a UsageError naming `what`."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file '{path}' does not exist or is not a file")
    return p


def read_ints(path: str, what: str) -> np.ndarray:
    """Integers from a .npy file or a text file (one per line, or comma/space separated)."""
    p = existing_file(path, what)
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if not np.issubdtype(arr.dtype, np.integer):
            raise UsageError(f"{what} file '{path}' must hold integers, got dtype {arr.dtype}")
    else:
        tokens = p.read_text().replace(",", " ").split()
        try:
            arr = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise UsageError(f"{what} file '{path}' must hold integers only ({e})") from None
    return np.asarray(arr).reshape(-1)


def first_few(items, n: int = 5) -> str:
    """The first n items as a list literal, with '...' when there are more."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"
