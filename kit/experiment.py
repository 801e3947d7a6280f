"""Orchestration shared by the notebooks and the CLI: cached pre-training and run grids.

Checkpoints and tables are cached under `artifacts/` by a hash of their configuration, so
a notebook reuses what an earlier notebook computed for the same configuration and
computes it otherwise.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DataBundle, gather, load_dataset, sample_forget
from .evaluate import accuracy
from .models import create_model
from .train import preset, train
from .unlearn import UnlearnConfig, draw_new_labels, get_recipe, unlearn
from .utils import resolve_device, seed_everything


def config_hash(config: dict, n: int = 10) -> str:
    """Short stable hash of a JSON-able configuration (cache key)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:n]


def pretrained(*, dataset: str = "mnist5k", arch: str = "cnn", seed: int = 0,
               train_preset: str = "default", epochs: int | None = None, lr: float | None = None,
               root: str | None = None, cache_dir: str | Path = "artifacts/checkpoints",
               device: str = "auto", data: DataBundle | None = None, retain_idx=None,
               tag: str = "pretrained"):
    """Return (model, data, history) for a pre-trained model, training it if not cached.

    retain_idx: train only on these training indices (the retrain-from-scratch reference).
    The training history is saved beside the checkpoint (`.history.csv`) and returned
    from the cache too.
    """
    data = data if data is not None else load_dataset(dataset, root=root)
    recipe = preset(train_preset)
    recipe.update({k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None})
    key = {"dataset": data.name, "arch": arch, "seed": seed, "recipe": recipe, "tag": tag,
           "retain": None if retain_idx is None else config_hash(list(map(int, retain_idx)), 16)}
    path = Path(cache_dir) / f"{tag}_{data.name.replace(':', '_').replace('/', '_')}_{arch}_{config_hash(key)}.pt"
    dev = resolve_device(device)
    hist_path = path.with_suffix(".history.csv")
    if path.is_file() and path.with_suffix(".json").is_file():
        history = pd.read_csv(hist_path) if hist_path.is_file() else None
        return load_checkpoint(path, arch=arch, dataset=data.name).to(dev), data, history
    seed_everything(seed)
    model = create_model(arch, **data.model_kwargs()).to(dev)
    train_set = data.train if retain_idx is None else torch.utils.data.Subset(data.train, retain_idx)
    history = train(model, train_set, test_data=data.test, seed=seed, **recipe)
    metrics = {"train_acc": accuracy(model, data.train), "test_acc": accuracy(model, data.test),
               "train_seconds": float(history.seconds.iloc[-1])}
    save_checkpoint(model, path, dataset=data.name, seed=seed, metrics=metrics,
                    extra={"recipe": recipe, "cache_key": key})
    history.to_csv(hist_path, index=False)
    return model, data, history


def forget_request(data: DataBundle, *, k: int, seed: int, class_id: int | None = None):
    """(forget_idx, retain_idx, forget_x, forget_y) for a uniformly drawn request of size k."""
    from .data import labels_of

    labels = labels_of(data.train) if class_id is not None else None
    f_idx, r_idx = sample_forget(len(data.train), k, seed=seed, labels=labels, class_id=class_id)
    fx, fy = gather(data.train, f_idx)
    return f_idx, r_idx, fx, fy


def split_accuracies(model, data: DataBundle, forget_idx, retain_idx, *, new_labels=None,
                     retain_max: int | None = None, seed: int = 0) -> dict:
    """Accuracy on D_f, D_r (optionally a seeded sub-sample of retain_max) and D_test."""
    from torch.utils.data import Subset

    fx, fy = gather(data.train, forget_idx)
    r = np.asarray(retain_idx)
    if retain_max is not None and len(r) > retain_max:
        r = np.sort(np.random.default_rng(seed).choice(r, retain_max, replace=False))
    out = {"forget": accuracy(model, (fx, fy)), "retain": accuracy(model, Subset(data.train, r)),
           "test": accuracy(model, data.test)}
    if new_labels is not None:
        out["relabel"] = accuracy(model, (fx, torch.as_tensor(new_labels)))
    return out


def run_grid(base_model, data: DataBundle, *, methods=("neggrad", "adv", "imp", "adv+imp"),
             ks=(8, 32, 128), seeds=(0, 1, 2), objective: str = "misclassify",
             recipe: str | UnlearnConfig = "default", retain_max: int | None = None,
             keep_models: bool = False, **overrides):
    """Unlearn every (method, k, seed) from a copy of base_model; return (rows, models).

    rows: one dict per run (method, k, seed, reached, steps, accuracies before/after,
    seconds per phase, attack success). models: {(method, k, seed): model} if keep_models.
    """
    rows, models = [], {}
    for seed in seeds:
        for k in ks:
            f_idx, r_idx, fx, fy = forget_request(data, k=k, seed=seed)
            new = (draw_new_labels(fy, data.num_classes, seed=seed) if objective == "relabel"
                   else None)
            before = split_accuracies(base_model, data, f_idx, r_idx, new_labels=new,
                                      retain_max=retain_max, seed=seed)
            rows.append({"method": "before", "k": k, "seed": seed, "reached": False,
                         "steps": 0, **{f"acc_{s}": v for s, v in before.items()}})
            for method in methods:
                model = copy.deepcopy(base_model)
                res = unlearn(model, fx, fy, objective=objective, new_labels=new, method=method,
                              recipe=recipe, seed=seed, **overrides)
                after = split_accuracies(model, data, f_idx, r_idx, new_labels=new,
                                         retain_max=retain_max, seed=seed)
                rows.append({**res.summary(), "k": k, "seed": seed,
                             **{f"acc_{s}": v for s, v in after.items()}})
                if keep_models:
                    models[(method, k, seed)] = model
    return rows, models


def summarize(rows, *, by=("method", "k"), metrics=None) -> pd.DataFrame:
    """Mean and std over seeds of each metric, plus the share of runs that reached."""
    df = pd.DataFrame(rows)
    metrics = metrics or [c for c in df.columns if c.startswith("acc_")] + ["steps", "sec_total"]
    metrics = [m for m in metrics if m in df.columns]
    g = df.groupby(list(by), sort=False)
    out = g[metrics].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["reached"] = g["reached"].mean()
    out["runs"] = g.size()
    return out.reset_index()
