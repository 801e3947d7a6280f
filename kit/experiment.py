"""Orchestration shared by the notebooks and the CLI: cached pre-training and run grids.

Checkpoints and tables are cached under `artifacts/` by a hash of their configuration, so
a notebook reuses what an earlier notebook computed for the same configuration and
computes it otherwise.
"""
from __future__ import annotations

import copy
import dataclasses
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
    if path.is_file() and path.with_suffix(".json").is_file() and hist_path.is_file():
        return load_checkpoint(path, arch=arch, dataset=data.name).to(dev), data, pd.read_csv(hist_path)
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


def weights_hash(model: torch.nn.Module, n: int = 10) -> str:
    """Content hash of a model's state (identifies a base model in cache keys)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:n]


def unlearned(base_model, data: DataBundle, *, method: str, k: int, seed: int,
              objective: str = "misclassify", recipe: str | UnlearnConfig = "default",
              cache_dir: str | Path | None = "artifacts/checkpoints", base_id: str | None = None,
              **overrides):
    """(model, run) for one request: a copy of base_model unlearned, cached by configuration.

    run: dict with the request (forget/retain indices, new labels) and the engine's summary
    (reached, steps, seconds, attack success, flip steps). Cached as checkpoint + JSON under
    cache_dir (None: no cache), keyed by the base model's weights and every setting.
    """
    cfg = (recipe if isinstance(recipe, UnlearnConfig)
           else get_recipe(recipe, objective)).replace(**overrides)
    key = {"base": base_id or weights_hash(base_model), "data": data.name, "method": method,
           "k": k, "seed": seed, "objective": objective, "config": dataclasses.asdict(cfg)}
    f_idx, r_idx, fx, fy = forget_request(data, k=k, seed=seed)
    new = draw_new_labels(fy, data.num_classes, seed=seed) if objective == "relabel" else None
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"unlearned_{method.replace('+', '_')}_k{k}_s{seed}_{config_hash(key)}.pt"
        if path.is_file() and path.with_suffix(".run.json").is_file():
            run = json.loads(path.with_suffix(".run.json").read_text())
            model = load_checkpoint(path).to(next(base_model.parameters()).device)
            return model, {**run, "forget_idx": f_idx, "retain_idx": r_idx, "new_labels": new}
    model = copy.deepcopy(base_model)
    res = unlearn(model, fx, fy, objective=objective, new_labels=new, method=method,
                  recipe=cfg, seed=seed)
    run = {**res.summary(), "k": k, "seed": seed, "flip_step": res.flip_step.tolist()}
    if path is not None:
        save_checkpoint(model, path, dataset=data.name, seed=seed, extra={"cache_key": key})
        path.with_suffix(".run.json").write_text(json.dumps(run, default=float))
    return model, {**run, "forget_idx": f_idx, "retain_idx": r_idx, "new_labels": new}


def run_grid(base_model, data: DataBundle, *, methods=("neggrad", "adv", "imp", "adv+imp"),
             ks=(8, 32, 128), seeds=(0, 1, 2), objective: str = "misclassify",
             recipe: str | UnlearnConfig = "default", retain_max: int | None = None,
             cache_dir: str | Path | None = "artifacts/checkpoints", **overrides) -> pd.DataFrame:
    """Unlearn every (method, k, seed) from a copy of base_model; one row per run.

    Rows: method ("before" for the pre-trained model), k, seed, reached, steps, seconds per
    phase, attack success, and accuracy on forget/retain/test (and relabel agreement).
    """
    rows, base_id = [], weights_hash(base_model)
    for seed in seeds:
        for k in ks:
            f_idx, r_idx, _, fy = forget_request(data, k=k, seed=seed)
            new = draw_new_labels(fy, data.num_classes, seed=seed) if objective == "relabel" else None
            before = split_accuracies(base_model, data, f_idx, r_idx, new_labels=new,
                                      retain_max=retain_max, seed=seed)
            rows.append({"method": "before", "k": k, "seed": seed, "reached": np.nan,
                         "steps": 0, **{f"acc_{s}": v for s, v in before.items()}})
            for method in methods:
                model, run = unlearned(base_model, data, method=method, k=k, seed=seed,
                                       objective=objective, recipe=recipe, cache_dir=cache_dir,
                                       base_id=base_id, **overrides)
                after = split_accuracies(model, data, f_idx, r_idx, new_labels=new,
                                         retain_max=retain_max, seed=seed)
                rows.append({**{c: v for c, v in run.items() if c not in
                                ("flip_step", "forget_idx", "retain_idx", "new_labels")},
                             **{f"acc_{s}": v for s, v in after.items()}})
    return pd.DataFrame(rows)


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


def paper_table(rows, *, columns=("acc_forget", "acc_retain", "acc_test"), by=("method", "k"),
                percent: bool = True) -> pd.DataFrame:
    """The paper's table layout: one row per method, 'mean ± std' strings per (metric, k).

    Also adds 'reached' (runs that reached the objective / runs) and mean steps and seconds.
    """
    df = pd.DataFrame(rows)
    scale = 100.0 if percent else 1.0
    g = df.groupby(list(by), sort=False)
    out = pd.DataFrame(index=g.size().index)
    for c in columns:
        if c in df.columns:
            m, s = g[c].mean() * scale, g[c].std().fillna(0) * scale
            out[c.replace("acc_", "")] = [f"{a:.1f} ± {b:.1f}" for a, b in zip(m, s)]
    if "reached" in df.columns:
        out["reached"] = [f"{int(np.nansum(v))}/{v.notna().sum()}" if v.notna().any() else "-"
                          for _, v in g["reached"]]
    for c, fmt in (("steps", "{:.0f}"), ("sec_total", "{:.1f}")):
        if c in df.columns:
            out[c.replace("sec_total", "seconds")] = [fmt.format(v) if pd.notna(v) else "-"
                                                     for v in g[c].mean()]
    return out.reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (no extra dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def long_accuracies(rows, *, splits=("forget", "retain", "test")) -> pd.DataFrame:
    """Rows reshaped to (method, k, seed, split, accuracy) for figures."""
    df = pd.DataFrame(rows)
    cols = [f"acc_{s}" for s in splits if f"acc_{s}" in df.columns]
    long = df.melt(id_vars=["method", "k", "seed"], value_vars=cols, var_name="split",
                   value_name="accuracy")
    long["split"] = long["split"].str.replace("acc_", "", regex=False)
    return long


def sweep(base_model, data: DataBundle, configs: dict, *, methods=("adv+imp",), ks=(32,),
          seeds=(0,), recipe: str | UnlearnConfig = "official", objective: str = "misclassify",
          retain_max: int | None = None, cache_dir: str | Path | None = "artifacts/checkpoints"
          ) -> pd.DataFrame:
    """Hyper-parameter sweep: configs maps a row name to overrides of `recipe`.

    One row per (config, method, k, seed) with the resolved settings that differ from the
    recipe and the usual accuracies, steps and seconds (see run_grid).
    """
    frames = []
    for name, over in configs.items():
        rows = run_grid(base_model, data, methods=methods, ks=ks, seeds=seeds,
                        objective=objective, recipe=recipe, retain_max=retain_max,
                        cache_dir=cache_dir, **over)
        rows = rows[rows["method"] != "before"].assign(
            config=name, settings=", ".join(f"{k}={v}" for k, v in over.items()) or "(recipe)")
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)
