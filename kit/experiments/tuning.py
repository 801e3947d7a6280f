"""Tune a baseline the way the kit's recipes were tuned: on the calibration split only.

`tune_baselines` runs each baseline over a grid of one hyper-parameter (the learning rate by
default) on calibration requests, under the same stop rule and budget as the paper's method,
and `best_settings` picks, per baseline, the value that keeps the most test accuracy among
those that reached the objective on every request. Notebook 08 runs it; notebook 07 reports
the chosen values on the held-out split (kit.experiments.protocol).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..baselines import BASELINES
from ..core.predict import accuracy
from ..core.request import ForgetRequest
from ..core.utils import check_names, progress
from .cache import baselined


def tune_baselines(base, data, grids: dict[str, dict], *, ks=(32,), seeds=(100,),
                   fixed: dict | None = None,
                   cache_dir: str | Path | None = "artifacts/checkpoints") -> pd.DataFrame:
    """One row per (baseline, value, k, seed): reached, steps, acc_forget, acc_test in [0, 1].

    grids: baseline name -> {hyper-parameter: [values]} (one hyper-parameter each).
    fixed: hyper-parameters given to every run (e.g. the stop rule and its budget).
    cache_dir: runs are cached there (`kit.experiments.cache.baselined`); None: no cache.

    >>> tune_baselines(None, None, {"nope": {"lr": [1.0]}})
    Traceback (most recent call last):
    ...
    ValueError: unknown baseline(s) ['nope']; valid names: retrain, finetune, neggrad_plus, scrub, salun, random_labels, boundary_shrink, amun
    """
    check_names(grids, BASELINES, "baseline(s)")
    for name, grid in grids.items():
        if len(grid) != 1:
            raise ValueError(f"{name}: tune one hyper-parameter at a time, got {sorted(grid)}")
        check_names(grid, BASELINES[name].defaults, f"hyper-parameter(s) of {name!r}")
    fixed = dict(fixed or {})
    cells = [(name, hp, v, k, seed) for name, grid in grids.items()
             for hp, values in grid.items() for v in values for k in ks for seed in seeds]
    rows = []
    for name, hp, value, k, seed in progress(cells, desc="tune", unit="run"):
        req = ForgetRequest.draw(data, k, seed=seed)
        model, out = baselined(base, data, req, name=name, hp={**fixed, hp: value},
                               cache_dir=cache_dir)
        rows.append({"baseline": name, "hyper_parameter": hp, "value": value, "k": k,
                     "seed": seed, "reached": out["reached"], "steps": out["steps"],
                     "acc_forget": accuracy(model, (req.x, req.y)),
                     "acc_test": accuracy(model, data.test)})
    return pd.DataFrame(rows)


def best_settings(rows: pd.DataFrame) -> dict[str, dict]:
    """{baseline: {hyper-parameter: value}} with the highest mean test accuracy among the
    values that reached the objective on every request (the most-reaching value if none did).

    >>> r = pd.DataFrame(dict(baseline=["a"] * 3, hyper_parameter="lr", value=[0.1, 0.01, 1e-3],
    ...                       reached=[True, True, False], acc_test=[0.5, 0.7, 0.9]))
    >>> best_settings(r)
    {'a': {'lr': 0.01}}
    """
    out = {}
    for name, g in pd.DataFrame(rows).groupby("baseline", sort=False):
        per = g.groupby("value").agg(reached=("reached", "mean"), test=("acc_test", "mean"))
        full = per[per["reached"] == 1.0]
        pick = (full["test"].idxmax() if len(full)
                else per.sort_values(["reached", "test"]).index[-1])
        out[name] = {g["hyper_parameter"].iloc[0]: float(pick)}
    return out
