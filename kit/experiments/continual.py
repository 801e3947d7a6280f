"""Continual unlearning: a sequence of forget requests applied one after another to one model.

Cha et al. (AAAI 2024, "Learning to Unlearn"), continual setting: requests D_f^1, ..., D_f^T
arrive one at a time and each is unlearned from the model that the previous ones left behind.
`unlearn` sees only the current request's forget set, so the importance (IMP) is re-measured
and the adversarial examples (ADV) are regenerated at the current model by construction.
After every request the model is evaluated on the remaining data (training set minus the
union of all forget sets so far), the test set, and every earlier forget set: does an earlier
request stay forgotten, or does a later one undo it?

With keep_scale (the kit's default) the model's logit layer is rescaled after every
request so that the logit scale on the request's transformed forget images is what it was
before it (`kit.method.scale`): no prediction changes, but the next request starts from
the scale the previous one eroded (docs/exploration.md, "Continual unlearning: the logit
scale"). With remember (the kit's default) the forget images of the earlier requests join
the anchors of every later one, labelled by the model before it (which misclassifies them),
so that a later request keeps them forgotten (`kit.method.anchors.with_earlier`). This keeps
the earlier forget images until the sequence ends: they are forget data, so the
remaining-data-free contract holds, but whoever deletes on request must be allowed to keep
them that long. With hold (the kit's default) the objective and the stopping rule of
request t cover the earlier requests of its objective too (`unlearn`'s hold), so none of
them is classified right (misclassify) or off its new label (relabel) when request t ends
(docs/exploration.md, "Continual unlearning: holding earlier forget sets"). keep_scale=False,
remember=False, hold=False is the paper's sequence.

The tidy table (method, seed, request, split, accuracy, ...) feeds
`kit.experiments.figures.plot_continual` directly.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from ..core.data import DataBundle
from ..core.predict import accuracy
from ..core.request import ForgetRequest, subsample
from ..core.utils import progress
from ..method.config import METHODS, UnlearnConfig
from ..method.recipes import resolve
from ..method.scale import logit_layer, logits_of, restore_scale, scale_views
from .cache import unlearned
from .runs import ORACLE, RUN_METHODS

COLUMNS = ["method", "seed", "request", "objective", "split", "accuracy", "n", "reached",
           "steps", "seconds", "scale"]


def continual_unlearn(model: torch.nn.Module, data: DataBundle, requests, *,
                      method: str = "adv+imp", config: UnlearnConfig | None = None,
                      relabel_config: UnlearnConfig | None = None,
                      retain_max: int | None = None,
                      cache_dir: str | Path | None = None,
                      keep_scale: bool = True, remember: bool = True,
                      hold: bool = True) -> pd.DataFrame:
    """Apply `requests` (ForgetRequests, e.g. `ForgetRequest.sequence`) one after another to
    `model`, in place, each with only its own forget tensors (method "oracle" also gets the
    request's D_r).

    cache_dir: where each request's result is cached (`kit.experiments.cache.unlearned`,
    keyed by the weights it starts from, so request t's entry stands for the whole sequence
    before it); None: no cache. The seconds of a cached request are those of the run that
    made the entry.
    keep_scale: after each request multiply the logit layer by the factor that gives the
    request's transformed forget images their median top-2 logit gap of before the request
    (`kit.method.scale.restore_scale`; only images whose prediction did not change count).
    No prediction changes; False: the paper's sequence.
    remember: request t also gets the forget images of requests 1..t-1 as anchors, labelled
    by the model before request t (methods with ADV and the oracle; NegGrad and IMP have no
    anchors and run as without it). False: the paper's sequence.
    hold: request t's objective and stopping rule cover the earlier requests of its
    objective as well (any method): when it is reached they are all unlearned. False: the
    paper's sequence.
    config / relabel_config: resolved configs for misclassify / relabel requests (default:
    the "default" recipe of each objective).
    Returns a tidy DataFrame with columns COLUMNS: for request 0 (the model before any
    request) the splits "retain" (the whole training set) and "test"; after request t the
    splits "retain" (training set minus the union of forget sets 1..t, or a seeded sample of
    retain_max of it), "test", "forget_1".."forget_t" (accuracy w.r.t. the true labels) and
    "relabel_j" (agreement with the new labels) for every relabel request j <= t. reached,
    steps, seconds and scale (the factor keep_scale applied, 1.0 without) describe request
    t (request 0: reached None, steps 0, seconds 0.0, scale 1.0);
    `n` is the number of examples the accuracy was measured on.
    """
    requests = list(requests)
    if not requests:
        raise ValueError("requests is empty; pass at least one (ForgetRequest.sequence)")
    if method not in RUN_METHODS:
        raise ValueError(f"unknown method {method!r}; valid names: {', '.join(RUN_METHODS)}")
    for name, flag in (("keep_scale", keep_scale), ("remember", remember), ("hold", hold)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    remembers = remember and (method == ORACLE or METHODS[method]["adv"])
    if keep_scale:                         # a model without a Linear logit layer: fail now
        logit_layer(model, requests[0].x)
    configs = {"misclassify": config or resolve("default", "misclassify"),
               "relabel": relabel_config or resolve("default", "relabel")}
    seed = requests[0].seed - 1  # ForgetRequest.sequence gives request t the seed seed + t
    rows: list[dict] = []

    def record(t: int, res, scale: float = 1.0):
        r_idx = subsample(np.arange(len(data.train)) if t == 0 else requests[t - 1].retain_idx,
                          retain_max, seed=seed)
        splits = [("retain", Subset(data.train, r_idx.tolist())), ("test", data.test)]
        splits += [(f"forget_{j}", (q.x, q.y)) for j, q in enumerate(requests[:t], start=1)]
        splits += [(f"relabel_{j}", (q.x, q.new_labels))
                   for j, q in enumerate(requests[:t], start=1) if q.new_labels is not None]
        common = {"method": method, "seed": seed, "request": t,
                  "objective": None if t == 0 else requests[t - 1].objective,
                  "reached": None if res is None else res["reached"],
                  "steps": 0 if res is None else res["steps"],
                  "seconds": 0.0 if res is None else float(res["sec_total"]),
                  "scale": scale}
        for name, split in splits:
            rows.append({**common, "split": name, "accuracy": accuracy(model, split),
                         "n": len(split[0]) if isinstance(split, tuple) else len(split)})

    record(0, None)
    with progress(total=len(requests), desc=f"continual {method}", unit="request",
                  leave=False) as bar:
        for t, req in enumerate(requests, start=1):
            if keep_scale:
                views = scale_views(req.x, seed=req.seed)
                before = logits_of(model, views)
            after, res = unlearned(model, data, req, method=method,
                                   config=configs[req.objective], cache_dir=cache_dir,
                                   earlier=requests[:t - 1] if remembers else (),
                                   hold=[q for q in requests[:t - 1]
                                         if hold and q.objective == req.objective])
            model.load_state_dict(after.state_dict())
            record(t, res, restore_scale(model, views, before) if keep_scale else 1.0)
            bar.update()
    return pd.DataFrame(rows, columns=COLUMNS)


def continual_grid(base_model: torch.nn.Module, data: DataBundle, *,
                   methods=("neggrad", "adv", "adv+imp"), seeds=(0, 1, 2), k: int = 32,
                   n_requests: int = 5, disjoint: bool = True, relabel=(), **kw) -> pd.DataFrame:
    """`continual_unlearn` from a deep copy of base_model for every (method, seed).

    The request sequence depends on the seed only (`ForgetRequest.sequence(data, k=k,
    n_requests=n_requests, seed=seed, disjoint=disjoint, relabel=relabel)`), so all methods
    of one seed face the same requests. base_model is not modified. `kw` goes to
    continual_unlearn (config, relabel_config, retain_max, cache_dir, keep_scale, remember,
    hold).
    """
    tables = []
    with progress(total=len(seeds) * len(methods), desc="continual", unit="run") as bar:
        for seed in seeds:
            requests = ForgetRequest.sequence(data, k=k, n_requests=n_requests, seed=seed,
                                              disjoint=disjoint, relabel=relabel)
            for method in methods:
                tables.append(continual_unlearn(copy.deepcopy(base_model), data, requests,
                                                method=method, **kw))
                bar.update()
    if not tables:
        raise ValueError("continual_grid needs at least one method and one seed")
    return pd.concat(tables, ignore_index=True)
