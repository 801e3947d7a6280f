"""Continual unlearning: a sequence of forget requests applied one after another to one model.

Cha et al. (AAAI 2024, "Learning to Unlearn"), continual setting: requests D_f^1, ..., D_f^T
arrive one at a time and each is unlearned from the model that the previous ones left behind.
`unlearn` sees only the current request's forget set, so the importance (IMP) is re-measured
and the adversarial examples (ADV) are regenerated at the current model by construction.
After every request the model is evaluated on the remaining data (training set minus the
union of all forget sets so far), the test set, and every earlier forget set: does an earlier
request stay forgotten, or does a later one undo it?

The tidy table (method, seed, request, split, accuracy, ...) feeds
`kit.figures.plot_continual` directly.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from .data import DataBundle, check_indices, gather
from .evaluate import accuracy
from .unlearn import UnlearnConfig, draw_new_labels, num_classes_of, unlearn

COLUMNS = ["method", "seed", "request", "objective", "split", "accuracy", "n", "reached",
           "steps", "seconds"]


def request_sequence(n_train: int, *, k: int, n_requests: int, seed: int = 0,
                     disjoint: bool = True) -> list[np.ndarray]:
    """T = n_requests forget sets of k training indices each (int64 arrays, draw order).

    disjoint=True: one seeded permutation of range(n_train) cut into consecutive chunks, so
    the first request equals `kit.data.sample_forget(n_train, k, seed=seed)`'s forget set
    and no index is requested twice (needs k * n_requests <= n_train).
    disjoint=False: independent uniform draws from one seeded generator (requests may
    overlap; the first request is the same as with disjoint=True).
    """
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if n_requests < 1:
        raise ValueError(f"n_requests must be >= 1, got {n_requests}")
    if not 1 <= k <= n_train:
        raise ValueError(f"forget-set size k={k} is out of range: choose 1 <= k <= {n_train} "
                         f"(the number of training instances)")
    if disjoint and k * n_requests > n_train:
        raise ValueError(f"{n_requests} disjoint requests of k={k} need k * n_requests = "
                         f"{k * n_requests} training instances but there are only {n_train}: "
                         f"choose 1 <= k <= {n_train // n_requests} for {n_requests} requests "
                         f"(or 1 <= n_requests <= {n_train // k} for k={k}), or pass "
                         f"disjoint=False to allow overlapping requests")
    gen = torch.Generator().manual_seed(seed)
    if disjoint:
        perm = torch.randperm(n_train, generator=gen).numpy().astype(np.int64)
        return [perm[t * k:(t + 1) * k].copy() for t in range(n_requests)]
    return [torch.randperm(n_train, generator=gen)[:k].numpy().astype(np.int64)
            for _ in range(n_requests)]


def retain_indices(n_train: int, requests) -> np.ndarray:
    """Sorted training indices outside the union of `requests` (the remaining data D_r)."""
    mask = np.ones(n_train, dtype=bool)
    for r in requests:
        mask[check_indices(r, n_train, what="request indices")] = False
    return np.flatnonzero(mask)


def _check_relabel(relabel_requests, n_requests: int) -> set[int]:
    chosen = {int(t) for t in relabel_requests}
    bad = sorted(t for t in chosen if not 1 <= t <= n_requests)
    if bad:
        raise ValueError(f"relabel_requests {bad} out of range: requests are numbered "
                         f"1..{n_requests} (1-based)")
    return chosen


def continual_unlearn(model: torch.nn.Module, data: DataBundle, requests, *,
                      method: str = "adv+imp", objective: str = "misclassify",
                      relabel_requests=(), seed: int = 0,
                      recipe: str | UnlearnConfig = "default", retain_max: int | None = None,
                      **overrides) -> pd.DataFrame:
    """Apply `requests` (index arrays into data.train) one after another to `model`, in place.

    Request t (1-based) is unlearned by `unlearn(model, x_t, y_t, method=..., seed=seed + t,
    recipe=..., **overrides)` with only its own forget tensors. It is a relabel request when
    objective == "relabel" or t is in `relabel_requests`; its new labels are
    `draw_new_labels(y_t, C, seed=seed + t)`.

    Returns a tidy DataFrame with columns COLUMNS: for request 0 (the model before any
    request) the splits "retain" (the whole training set) and "test"; after request t the
    splits "retain" (training set minus the union of forget sets 1..t, or a seeded sample of
    retain_max of it), "test", "forget_1".."forget_t" (accuracy w.r.t. the true labels) and
    "relabel_j" (agreement with the new labels) for every relabel request j <= t. reached,
    steps and seconds (total of unlearn's phases) describe request t (request 0: objective
    missing, reached None, steps 0, seconds 0.0); `n` is the number of examples the accuracy
    was measured on. Several requests may share instances (request_sequence(disjoint=False)).
    """
    n_train = len(data.train)
    requests = [check_indices(np.asarray(r), n_train, what=f"request {t} indices")
                for t, r in enumerate(requests, start=1)]
    if not requests:
        raise ValueError("requests is empty; pass at least one index array (request_sequence)")
    relabel = _check_relabel(relabel_requests, len(requests))
    if objective not in ("misclassify", "relabel"):
        raise ValueError(f"unknown objective {objective!r}; valid: misclassify, relabel")
    if retain_max is not None and retain_max < 1:
        raise ValueError(f"retain_max must be >= 1 or None, got {retain_max}")

    forget = []                      # (x, y, new_labels or None) of every request so far
    rows: list[dict] = []

    def record(t: int, obj, res):
        r_idx = retain_indices(n_train, requests[:t])
        if retain_max is not None and len(r_idx) > retain_max:
            r_idx = np.sort(np.random.default_rng(seed).choice(r_idx, retain_max, replace=False))
        splits = [("retain", Subset(data.train, r_idx)), ("test", data.test)]
        splits += [(f"forget_{j}", (x, y)) for j, (x, y, _) in enumerate(forget, start=1)]
        splits += [(f"relabel_{j}", (x, new)) for j, (x, _, new) in enumerate(forget, start=1)
                   if new is not None]
        common = {"method": method, "seed": seed, "request": t, "objective": obj,
                  "reached": None if res is None else res.reached,
                  "steps": 0 if res is None else res.steps,
                  "seconds": 0.0 if res is None else float(res.seconds["total"])}
        for name, split in splits:
            rows.append({**common, "split": name, "accuracy": accuracy(model, split),
                         "n": len(split[0]) if isinstance(split, tuple) else len(split)})

    record(0, None, None)
    num_classes = None
    for t, idx in enumerate(requests, start=1):
        fx, fy = gather(data.train, idx)
        obj = "relabel" if objective == "relabel" or t in relabel else "misclassify"
        new = None
        if obj == "relabel":
            num_classes = num_classes or num_classes_of(model, fx)
            new = draw_new_labels(fy, num_classes, seed=seed + t)
        res = unlearn(model, fx, fy, objective=obj, new_labels=new, method=method,
                      recipe=recipe, seed=seed + t, **overrides)
        forget.append((fx, fy, new))
        record(t, obj, res)
    return pd.DataFrame(rows, columns=COLUMNS)


def continual_grid(base_model: torch.nn.Module, data: DataBundle, *,
                   methods=("neggrad", "adv", "adv+imp"), seeds=(0, 1, 2), k: int = 32,
                   n_requests: int = 5, disjoint: bool = True, **kw) -> pd.DataFrame:
    """`continual_unlearn` from a deep copy of base_model for every (method, seed).

    The request sequence depends on the seed only (`request_sequence(len(data.train), k=k,
    n_requests=n_requests, seed=seed, disjoint=disjoint)`), so all methods of one seed face
    the same requests. base_model is not modified. `kw` goes to continual_unlearn
    (objective, relabel_requests, recipe, retain_max, engine overrides).
    """
    tables = []
    for seed in seeds:
        requests = request_sequence(len(data.train), k=k, n_requests=n_requests, seed=seed,
                                    disjoint=disjoint)
        for method in methods:
            tables.append(continual_unlearn(copy.deepcopy(base_model), data, requests,
                                            method=method, seed=seed, **kw))
    if not tables:
        raise ValueError("continual_grid needs at least one method and one seed")
    return pd.concat(tables, ignore_index=True)
