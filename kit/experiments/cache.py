"""Verified caches of pre-trained and unlearned models, shared by notebooks, grids and CLI.

An entry is a checkpoint (.pt + .json sidecar with the weights' sha256) plus, for unlearned
models, a `.run.json` with the run's summary; both record the entry's full key, which
includes the torch thread count and the device (weights depend on both). A missing,
corrupt, stale or mismatched entry is recomputed with a one-line warning naming the file.
Writes are atomic, so two processes filling the same entry never tear it, and each entry
is filled under its own lock file (`kit.core.files.file_lock`, `<entry>.lock`): a process that
needs an entry another is computing waits for it and reads it instead of computing it again
(the notebooks of `make run` run side by side and share runs).
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path

import pandas as pd
import torch

from ..baselines import BASELINES, run_baseline
from ..core.checkpoint import CheckpointMismatch, file_sha256, load_checkpoint, save_checkpoint
from ..core.data import DataBundle, load_dataset
from ..core.models import create_model
from ..core.predict import accuracy
from ..core.train import preset, train
from ..core.files import atomic_write_text, file_lock
from ..core.utils import (check_name, model_device, resolve_device, seed_everything,
                          weights_hash)  # noqa: F401 (weights_hash: this module's API too)
from ..method.config import METHODS


def config_hash(config, n: int = 10) -> str:
    """Short stable hash of a JSON-able configuration (cache key).

    >>> config_hash({"a": 1}) == config_hash({"a": 1}) != config_hash({"a": 2})
    True
    """
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:n]


def machine_key(device) -> dict:
    """What besides the configuration decides the weights: thread count and device."""
    return {"threads": torch.get_num_threads(), "device": str(device)}


def _stale(path: Path, why: str) -> None:
    warnings.warn(f"cache entry '{path}' {why}; recomputing it", stacklevel=3)


def load_entry(path: Path, key: dict, *, run_suffix: str | None = None):
    """(model, run dict or None) of a verified cache entry, or None (with a warning if an
    entry was there but unusable)."""
    if not path.is_file() and not path.with_suffix(".json").is_file():
        return None
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("cache_key") != json.loads(json.dumps(key, default=str)):
            _stale(path, "was made for another configuration")
            return None
        run = None
        if run_suffix is not None:
            run = json.loads(path.with_suffix(run_suffix).read_text())
            if run.get("sha256") != meta.get("sha256"):
                _stale(path, "and its run record come from different runs")
                return None
        return load_checkpoint(path), run
    except (OSError, ValueError, KeyError, CheckpointMismatch) as e:
        _stale(path, f"is unreadable ({type(e).__name__}: {str(e)[:120]})")
        return None


def pretrained(*, dataset: str = "mnist5k", arch: str = "cnn", seed: int = 0,
               train_preset: str = "default", epochs: int | None = None, lr: float | None = None,
               root: str | None = None, cache_dir: str | Path = "artifacts/checkpoints",
               device: str = "auto", data: DataBundle | None = None, retain_idx=None,
               tag: str = "pretrained"):
    """Return (model, data, history) for a pre-trained model, training it if not cached.

    seed: the pre-training seed (initialisation and batch order). retain_idx: train only on
    these training indices (the retrain-from-scratch reference). The training history is
    saved beside the checkpoint (`.history.csv`) and returned from the cache too.
    """
    data = data if data is not None else load_dataset(dataset, root=root)
    recipe = preset(train_preset)
    recipe.update({k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None})
    dev = resolve_device(device)
    key = {"dataset": data.name, "arch": arch, "seed": seed, "recipe": recipe, "tag": tag,
           "retain": None if retain_idx is None else config_hash(list(map(int, retain_idx)), 16),
           **machine_key(dev)}
    name = data.name.replace(":", "_").replace("/", "_")
    path = Path(cache_dir) / f"{tag}_{name}_{arch}_{config_hash(key)}.pt"
    hist_path = path.with_suffix(".history.csv")
    with file_lock(path.with_suffix(".lock")):   # another process training it: wait, then read
        hit = load_entry(path, key)
        if hit is not None and hist_path.is_file():
            return hit[0].to(dev), data, pd.read_csv(hist_path)
        seed_everything(seed)
        model = create_model(arch, **data.model_kwargs()).to(dev)
        train_set = (data.train if retain_idx is None
                     else torch.utils.data.Subset(data.train, retain_idx))
        history = train(model, train_set, test_data=data.test, seed=seed, **recipe)
        metrics = {"train_acc": accuracy(model, data.train), "test_acc": accuracy(model, data.test),
                   "train_seconds": float(history.seconds.iloc[-1])}
        atomic_write_text(hist_path, history.to_csv(index=False))
        save_checkpoint(model, path, dataset=data.name, seed=seed, metrics=metrics,
                        extra={"recipe": recipe, "cache_key": key})
    return model, data, history


def unlearned(base_model, data: DataBundle, request, *, method: str, config,
              cache_dir: str | Path | None = "artifacts/checkpoints", base_id: str | None = None,
              earlier=(), hold=()):
    """(model, run) for one request: a copy of base_model unlearned, cached by its full key.

    request: a `kit.core.request.ForgetRequest`; method: a name in kit.method.config.METHODS
    or "oracle" (`kit.baselines.oracle`, which sees D_r); config: the resolved
    `UnlearnConfig`. run: the engine's summary plus k, seed, flip and settled steps.
    cache_dir None: no cache. earlier: ForgetRequests of a continual sequence that came
    before this one and stay forgotten (their images join the anchors, `unlearn`'s
    earlier_x); hold: earlier ForgetRequests of the same objective that the objective and the
    stopping rule cover too (`unlearn`'s hold: their labels, or new labels). Each part of the
    key only when given, so runs without them keep their entries.
    """
    from .runs import apply_method  # the dispatcher sits beside the grids

    device = model_device(base_model)
    key = {"base": base_id or weights_hash(base_model), "data": data.name, "method": method,
           "forget": config_hash(request.forget_idx.tolist(), 16), "seed": request.seed,
           "objective": request.objective,
           "new_labels": None if request.new_labels is None else request.new_labels.tolist(),
           "config": config.key(k=request.k, anchors=METHODS.get(method, {}).get("adv", False)),
           **machine_key(device)}
    earlier = list(earlier)
    earlier_x = torch.cat([q.x for q in earlier]) if earlier else None
    if earlier:
        key["earlier"] = config_hash([int(i) for q in earlier for i in q.forget_idx], 16)
    hold, held = list(hold), None
    if any(q.objective != request.objective for q in hold):
        raise ValueError(f"hold takes earlier requests of this request's objective "
                         f"({request.objective}) only; the others can join as `earlier`")
    if hold:
        key["hold"] = config_hash([int(i) for q in hold for i in q.forget_idx], 16)
        held = (torch.cat([q.x for q in hold]), torch.cat(
            [q.y if q.objective == "misclassify" else q.new_labels for q in hold]))

    def compute():
        model = copy.deepcopy(base_model)
        res = apply_method(model, data, request, method=method, config=config,
                           earlier_x=earlier_x, hold=held)
        return model, {**res.summary(), "k": request.k, "seed": request.seed,
                       "flip_step": res.flip_step.tolist(),
                       "settled_step": res.settled_step.tolist()}
    return _cached(cache_dir, f"unlearned_{method.replace('+', '_')}", key, request, data,
                   device, compute)


def _cached(cache_dir, tag: str, key: dict, request, data: DataBundle, device, compute):
    """(model, run) of the verified entry TAG_kK_sSEED_<hash of key>.pt (+ .run.json) under
    cache_dir; else compute() -> (model, run dict), saved there atomically with the weights'
    sha256 in the run record. cache_dir None: compute() without a cache."""
    if cache_dir is None:
        return compute()
    path = (Path(cache_dir) / f"{tag}_k{request.k}_s{request.seed}_{config_hash(key)}.pt")
    with file_lock(path.with_suffix(".lock")):   # another process filling it: wait, then read
        hit = load_entry(path, key, run_suffix=".run.json")
        if hit is not None:
            return hit[0].to(device), hit[1]
        model, run = compute()
        save_checkpoint(model, path, dataset=data.name, seed=request.seed,
                        extra={"cache_key": key})
        run = {**run, "sha256": file_sha256(path)}
        atomic_write_text(path.with_suffix(".run.json"), json.dumps(run, default=float))
    return model, run


# bump when a baseline's code changes what it computes, so that older entries are recomputed
BASELINE_VERSION = 2   # 2: updates in channels_last memory format


def baselined(base_model, data: DataBundle, request, *, name: str, hp: dict | None = None,
              cache_dir: str | Path | None = "artifacts/checkpoints", base_id: str | None = None):
    """(model, out) for baseline `name` (a key of `kit.baselines.BASELINES`) applied to
    `request` from a copy of base_model, cached like `unlearned` by its full key (the
    hyper-parameters with their defaults filled in, the forget set, the seed, BASELINE_VERSION).
    Baselines flagged needs_retain get the request's D_r. out: `run_baseline`'s dict; its
    seconds are those of the run that made the entry. cache_dir None: no cache.
    """
    entry, hp = check_name(name, BASELINES, "baseline"), dict(hp or {})
    device = model_device(base_model)
    key = {"base": base_id or weights_hash(base_model), "data": data.name, "baseline": name,
           "hp": {**entry.defaults, **hp}, "forget": config_hash(request.forget_idx.tolist(), 16),
           "seed": request.seed, "version": BASELINE_VERSION, **machine_key(device)}

    def compute():
        model = copy.deepcopy(base_model)
        retain = (torch.utils.data.Subset(data.train, request.retain_idx.tolist())
                  if entry.needs_retain else None)
        return model, run_baseline(name, model, request.x, request.y, retain=retain,
                                   num_classes=data.num_classes, seed=request.seed, **hp)
    return _cached(cache_dir, f"baseline_{name}", key, request, data, device, compute)
