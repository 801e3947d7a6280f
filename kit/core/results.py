"""Results on disk: a tidy CSV table plus a JSON sidecar with the configuration."""
from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write
from .utils import versions


def save_results(rows, path: str | Path, *, config: dict) -> Path:
    """Write rows (a DataFrame or list of dicts) to `path` (.csv) and the config to a JSON sidecar.

    The sidecar `path.with_suffix('.json')` holds `config` plus library versions, so every
    table on disk says how it was made. Both files are written to temporary names first and
    renamed, so an error never leaves a half-written result behind.
    """
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if path.suffix != ".csv":
        raise ValueError(f"results go to a .csv file (the sidecar is .json beside it); got {path}")
    text = json.dumps({"config": config, "versions": versions()}, indent=2, default=str)
    atomic_write(path.with_suffix(".json"), lambda t: t.write_text(text))
    atomic_write(path, lambda t: frame.to_csv(t, index=False))
    return path
