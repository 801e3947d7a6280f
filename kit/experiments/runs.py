"""Grids of unlearning runs: every (method, k, seed) from one pre-trained model, one row each.

The notebooks call `run_grid` (main tables), `sweep` (notebook 08) and read tables through
`kit.experiments.tables`. Models come from the verified cache (`kit.experiments.cache`).
`cell_row` is the one cell of every grid; `kit.experiments.grid` runs the same cells as Ray
tasks (many cores, or a cluster).
"""
from __future__ import annotations

import warnings

import pandas as pd
from torch.utils.data import Subset

from ..baselines.oracle import oracle_unlearn
from ..core.request import ForgetRequest
from ..core.utils import check_names, progress
from ..evaluation.metrics import split_accuracies
from ..method.config import METHODS, UnlearnConfig
from ..method.engine import Diverged, unlearn
from ..method.recipes import resolve
from .cache import unlearned, weights_hash

ORACLE = "oracle"  # the D_r oracle: the engine's loss and optimiser, D_r batches as anchors
RUN_METHODS = (*METHODS, ORACLE)


def apply_method(model, data, request: ForgetRequest, *, method: str, config: UnlearnConfig,
                 earlier_x=None, hold=None):
    """Unlearn `request` from `model` in place with a paper method or the D_r oracle;
    earlier_x / hold: continual unlearning, earlier forget images to keep forgotten among
    the anchors / in the objective and the stop (`unlearn`)."""
    if method == ORACLE:
        retain = Subset(data.train, request.retain_idx.tolist())
        return oracle_unlearn(model, request.x, request.y, retain=retain,
                              objective=request.objective, new_labels=request.new_labels,
                              config=config, seed=request.seed, earlier_x=earlier_x, hold=hold)
    return unlearn(model, request.x, request.y, objective=request.objective,
                   new_labels=request.new_labels, method=method, config=config,
                   seed=request.seed, earlier_x=earlier_x, hold=hold)


def _row(method, request, acc: dict, run: dict | None) -> dict:
    base = {"method": method, "k": request.k, "seed": request.seed}
    if run is None:
        base.update(reached=float("nan"), steps=0)
    else:
        base.update({c: v for c, v in run.items()
                     if c not in ("flip_step", "settled_step", "sha256", "k", "seed", "method")})
        base["needs_retain"] = method == ORACLE
    return {**base, **{f"acc_{s}": v for s, v in acc.items()}}


BEFORE = "before"  # a grid row for the pre-trained model itself, on the request's splits


def cell_row(base_model, data, request: ForgetRequest, *, method: str, config: UnlearnConfig,
             retain_max: int | None = None, cache_dir="artifacts/checkpoints",
             base_id: str | None = None) -> dict:
    """One grid row: `method` applied to `request` from a copy of base_model (cached by
    `kit.experiments.cache.unlearned`), or the pre-trained model itself for BEFORE.

    The one cell of `run_grid`, `sweep` and `kit.experiments.grid` (the Ray grids). A run
    whose loss or weights stopped being finite is a row with diverged=True, reached=False
    and no accuracies (a warning names it).
    """
    if method == BEFORE:
        return _row(BEFORE, request, split_accuracies(base_model, data, request,
                                                      retain_max=retain_max), None)
    k, seed = request.k, request.seed
    try:
        model, run = unlearned(base_model, data, request, method=method, config=config,
                               cache_dir=cache_dir, base_id=base_id)
    except Diverged as e:   # a setting that blows up is a result, not a crash
        warnings.warn(f"{method}, k={k}, seed={seed}: {e}", stacklevel=2)
        return {"method": method, "k": k, "seed": seed, "reached": False,
                "steps": float("nan"), "diverged": True, "needs_retain": method == ORACLE}
    return {**_row(method, request, split_accuracies(model, data, request,
                                                     retain_max=retain_max), run),
            "diverged": False}


def _grid_rows(base_model, data, *, methods, ks, seeds, objective, config, retain_max,
               cache_dir, bar, before: bool = True) -> list[dict]:
    rows, base_id = [], weights_hash(base_model)
    for seed in seeds:
        for k in ks:
            req = ForgetRequest.draw(data, k, seed=seed, objective=objective)
            for method in ((BEFORE,) if before else ()) + tuple(methods):
                rows.append(cell_row(base_model, data, req, method=method, config=config,
                                     retain_max=retain_max, cache_dir=cache_dir,
                                     base_id=base_id))
                bar.update()
    return rows


def run_grid(base_model, data, *, methods=("neggrad", "adv", "imp", "adv+imp"),
             ks=(8, 32, 128), seeds=(0, 1, 2), objective: str = "misclassify",
             config: UnlearnConfig | None = None, retain_max: int | None = None,
             cache_dir="artifacts/checkpoints") -> pd.DataFrame:
    """Unlearn every (method, k, seed) from a copy of base_model; one row per run.

    methods: names in RUN_METHODS ("oracle" is the D_r oracle, flagged needs_retain).
    config: the resolved recipe (default: `resolve("default", objective)`).
    Rows (`cell_row`): method ("before" for the pre-trained model), k, seed, reached, steps,
    seconds per phase, attack success, and accuracies in [0, 1] on forget / retain / test,
    relabel agreement, and D_f over its neighbourhood views (forget_shift, forget_noise). A
    run whose loss or weights stopped being finite is a row with diverged=True,
    reached=False and no accuracies (a warning names it). A progress bar counts the cells
    (`kit.core.utils.progress`; KIT_QUIET=1 silences it).
    """
    check_names(methods, dict.fromkeys(RUN_METHODS), "method(s)")
    config = resolve("default", objective) if config is None else config
    with progress(total=len(seeds) * len(ks) * (1 + len(methods)), desc="grid",
                  unit="cell") as bar:
        return pd.DataFrame(_grid_rows(base_model, data, methods=methods, ks=ks, seeds=seeds,
                                       objective=objective, config=config,
                                       retain_max=retain_max, cache_dir=cache_dir, bar=bar))


def sweep(base_model, data, configs: dict[str, UnlearnConfig], *, methods=("adv+imp",),
          ks=(32,), seeds=(0,), objective: str = "misclassify", retain_max: int | None = None,
          cache_dir="artifacts/checkpoints") -> pd.DataFrame:
    """Hyper-parameter sweep: configs maps a row name to a resolved config.

    One row per (config, method, k, seed) with the usual columns of `run_grid`; one
    progress bar over all the cells.
    """
    check_names(methods, dict.fromkeys(RUN_METHODS), "method(s)")
    frames = []
    with progress(total=len(configs) * len(seeds) * len(ks) * len(methods),
                  desc="sweep", unit="cell") as bar:
        for name, cfg in configs.items():
            rows = pd.DataFrame(_grid_rows(base_model, data, methods=methods, ks=ks,
                                           seeds=seeds, objective=objective, config=cfg,
                                           retain_max=retain_max, cache_dir=cache_dir,
                                           bar=bar, before=False))
            frames.append(rows.assign(config=name))
    return pd.concat(frames, ignore_index=True)
