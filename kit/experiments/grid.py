"""Experiment grids on many cores or a cluster: every cell a Ray task, cached, resumable.

A grid is the cross product data sets x architectures x methods x k x seeds (x variants of
the hyper-parameters, when it names some). One cell is one row of
`kit.experiments.runs.run_grid` (`runs.cell_row`: a request drawn with the seed, unlearned
from the pre-trained model and evaluated), with the same cache keys
(`kit.experiments.cache`), so a grid that was interrupted resumes where it stopped and
the notebooks reuse its models. `run_cells` runs the cells as Ray tasks (a local Ray on
this machine's cores, or a cluster) or one after another in this process (`serial`);
both set torch to `threads` threads (1, as the Makefile's OMP_NUM_THREADS=1), so their
rows and cache entries are the same. A cell that fails is a row with its `error`; the
others are kept.

The cells and the parameters file of `python -m kit grid PARAMS.yaml --out DIR` are
defined in `kit.experiments.grid_spec` (re-exported here). On a cluster every node needs
the kit's dependencies (the kit's own code is shipped with the job) and the data under
`root`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from ..core.data import load_dataset
from ..core.request import ForgetRequest
from ..core.results import save_results
from ..core.files import atomic_dir
from ..core.utils import progress
from ..method.recipes import resolve
from .cache import pretrained, weights_hash
from .grid_spec import GRID_METHODS, IDENTITY, Cell, grid_cells, load_grid  # noqa: F401
from .runs import cell_row


# ------------------------------------------------------------------ one cell
@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=2)
def _data(dataset: str, root):
    return load_dataset(dataset, root=root)


@functools.lru_cache(maxsize=2)
def _base(base: tuple, root, cache_dir, device, threads):
    """(model, data, weights hash) of a pre-trained model, trained once if not cached;
    kept per process, so a Ray worker loads it once for all its cells."""
    dataset, arch, model_seed, train_preset, epochs = base
    data = _data(dataset, root)
    model, _, _ = pretrained(data=data, arch=arch, seed=model_seed, train_preset=train_preset,
                             epochs=epochs, cache_dir=cache_dir, device=device)
    return model, data, weights_hash(model)


def _failure(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()


def _unbuilt(cell: Cell, why: str) -> dict:
    """The error row of a cell whose base model could not be pre-trained or loaded."""
    return {**cell.identity(), "error": f"pre-training failed: {why}"}


def prepare_base(base: tuple, *, root=None, cache_dir="artifacts/checkpoints",
                 device="auto", threads: int | None = 1) -> str:
    """Pre-train (or load) one base model before its cells run; '' or the error."""
    with _threads(threads):
        try:
            _base(base, root, str(cache_dir), device, threads)
            return ""
        except Exception as e:  # noqa: BLE001 - reported in the rows of its cells
            return _failure(e)


def run_cell(cell: Cell, *, root=None, cache_dir="artifacts/checkpoints", device="auto",
             threads: int | None = 1) -> dict:
    """The row of one cell (`runs.cell_row` plus the cell's identity and `error`, '' when
    it ran); any exception becomes the row's error instead of stopping the grid."""
    with _threads(threads):
        try:
            model, data, base_id = _base(cell.base(), root, str(cache_dir), device, threads)
            config = resolve(cell.recipe, cell.objective, **dict(cell.overrides))
            req = ForgetRequest.draw(data, cell.k, seed=cell.seed, objective=cell.objective)
            row = cell_row(model, data, req, method=cell.method, config=config,
                           retain_max=cell.retain_max, cache_dir=cache_dir, base_id=base_id)
            return {**cell.identity(), **row, "error": ""}
        except Exception as e:  # noqa: BLE001 - a failed cell is a row, the grid goes on
            return {**cell.identity(), "error": _failure(e)}


def _quiet_task(fn, *args, **kwargs):
    """A Ray task: fn without progress bars (many workers share one terminal)."""
    os.environ["KIT_QUIET"] = "1"
    return fn(*args, **kwargs)


# ------------------------------------------------------------------ many cells
def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray; True if this call did (the caller shuts it down).

    address: `ray://HEAD:10001` (Ray Client) or `HOST:6379` (on a cluster node); None:
    $RAY_ADDRESS if set, else a new local Ray on this machine's cores (num_cpus: fewer).
    On a cluster the kit's code travels with the job (runtime_env py_modules).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    else:
        import kit

        ray.init(address=address, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(kit.__file__).parent)]})
    return True


def _gather_ray(cells, bases, place, bar) -> dict:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(_quiet_task).options(num_cpus=1, num_gpus=1 if gpus else 0)
    failed = {}
    for base, ref in [(b, task.remote(prepare_base, b, **place)) for b in bases]:
        try:
            failed[base] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a worker that died
            failed[base] = _failure(e).splitlines()[0][:300]
    rows, pending = {}, {}
    for i, cell in enumerate(cells):
        if failed[cell.base()]:
            rows[i] = _unbuilt(cell, failed[cell.base()])
            bar.update()
        else:
            pending[task.remote(run_cell, cell, **place)] = i
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            rows[i] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a worker that died: the cell's error row
            rows[i] = {**cells[i].identity(), "error": _failure(e).splitlines()[0][:300]}
        bar.update()
    return rows


def run_cells(cells, *, backend: str = "ray", address: str | None = None, root=None,
              cache_dir="artifacts/checkpoints", device: str = "auto",
              threads: int | None = 1) -> pd.DataFrame:
    """One row per cell (in the cells' order): IDENTITY, `error` ('' when the cell ran)
    and the `run_grid` columns.

    backend: "ray" (each cell a task: one CPU each, or one GPU each where the cluster has
    GPUs; Ray is started by `start_ray(address)` unless this process is connected already,
    and shut down after if this call started it) or "serial" (in this process). Each cell
    runs with torch at `threads` threads, so both backends give the same rows. Cells in
    the cache (`cache_dir`; on a cluster a folder every node shares) are loaded, not
    recomputed. A base model is pre-trained once before its cells start.
    """
    cells = list(cells)
    if backend not in ("ray", "serial"):
        raise ValueError(f"unknown backend {backend!r}; valid names: ray, serial")
    absolute = {k: None if v is None else str(Path(v).absolute())
                for k, v in (("root", root), ("cache_dir", cache_dir))}
    place = {**absolute, "device": device, "threads": threads}
    bases = list(dict.fromkeys(c.base() for c in cells))
    with progress(total=len(cells), desc="grid", unit="cell") as bar:
        if backend == "serial":
            failed = {b: prepare_base(b, **place) for b in bases}
            rows = {}
            for i, cell in enumerate(cells):
                why = failed[cell.base()]
                rows[i] = _unbuilt(cell, why) if why else run_cell(cell, **place)
                bar.update()
        else:
            import ray

            started = start_ray(address)
            try:
                rows = _gather_ray(cells, bases, place, bar)
            finally:
                if started:
                    ray.shutdown()
    table = pd.DataFrame([rows[i] for i in range(len(cells))])
    first = [*IDENTITY, "error"]
    return table[[*first, *[c for c in table.columns if c not in first]]]


def save_grid(table: pd.DataFrame, out: str | Path, *, config: dict,
              overwrite: bool = False) -> Path:
    """Write `out`/grid.csv and its sidecar grid.json (config + versions) all or nothing."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_results(table, tmp / "grid.csv", config=config)
    return Path(out) / "grid.csv"
