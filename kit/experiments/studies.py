"""The paper's analyses (Figs. 2-4) on unlearned models: data in, arrays/tables out.

Each study unlearns through `kit.experiments.cache.unlearned`, so it reuses the models that the
main table (notebook 01) cached for the same configuration and computes them otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from ..core.data import DataBundle, gather
from ..core.models import feature_layers
from ..core.predict import predict
from ..core.request import ForgetRequest
from ..evaluation.analysis import (average_confusion, cka_matrix, layer_features,
                                   prediction_confusion, tsne_embedding)
from ..method.config import UnlearnConfig
from ..method.recipes import resolve
from .cache import unlearned

METHOD_LABELS = {"neggrad": "NegGrad", "adv": "ADV", "imp": "IMP", "adv+imp": "ADV+IMP",
                 "before": "before"}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def confusion_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
                    seeds=(0,), normalize: str | None = "row", config: UnlearnConfig | None = None,
                    cache_dir="artifacts/checkpoints") -> dict:
    """Fig. 2: pre- vs post-unlearning predictions on D_f (and on D_test as a sanity check).

    Returns {method: {"forget": (C, C), "test": (C, C), "reached": bool}}, rows =
    prediction before, columns = prediction after, pooled over seeds and row-normalised (see
    average_confusion); "reached": every run met the objective (figures mark it otherwise).
    """
    out, reached = {}, {}
    config = resolve("default") if config is None else config
    test_before = predict(base, data.test)[0]
    for method in methods:
        mats_f, mats_t = [], []
        for seed in seeds:
            req = ForgetRequest.draw(data, k, seed=seed)
            model, run = unlearned(base, data, req, method=method, config=config,
                                   cache_dir=cache_dir)
            reached.setdefault(label(method), []).append(bool(run["reached"]))
            fx, fy = req.x, req.y
            before = predict(base, (fx, fy))[0]
            after = predict(model, (fx, fy))[0]
            mats_f.append(prediction_confusion(before, after, num_classes=data.num_classes))
            mats_t.append(prediction_confusion(test_before, predict(model, data.test)[0],
                                               num_classes=data.num_classes))
        out[method] = {"forget": average_confusion(mats_f, normalize=normalize),
                       "test": average_confusion(mats_t, normalize=normalize),
                       "reached": all(reached[label(method)])}
    return out


def tsne_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
               seed: int = 0, retain_sample: int = 800, layer: str | None = None,
               perplexity: float = 30.0, config: UnlearnConfig | None = None,
               cache_dir="artifacts/checkpoints") -> dict:
    """Fig. 3: penultimate features of D_f and a D_r sample, before and after each method,
    embedded by ONE joint t-SNE so that the panels are comparable.

    Returns {panel title: dict(xy, labels, is_forget)} for `kit.experiments.figures.plot_tsne`.
    """
    layer = layer or feature_layers(base)[-1]
    config = resolve("default") if config is None else config
    req = ForgetRequest.draw(data, k, seed=seed)
    models, reached = {"before": base}, {"before": True}
    for method in methods:
        models[method], run = unlearned(base, data, req, method=method, config=config,
                                        cache_dir=cache_dir)
        reached[method] = bool(run["reached"])
    r = req.retain_sample(retain_sample)
    fx, fy = req.x, req.y
    rx, ry = gather(data.train, r)
    x, y = torch.cat([fx, rx]), torch.cat([fy, ry])
    is_forget = np.r_[np.ones(len(fx), bool), np.zeros(len(rx), bool)]
    feats = [layer_features(m, (x, y), layers=[layer])[layer].numpy() for m in models.values()]
    xy = tsne_embedding(feats, seed=seed, perplexity=perplexity)
    return {label(name): {"xy": e, "labels": y.numpy(), "is_forget": is_forget,
                          "reached": reached[name]} for name, e in zip(models, xy)}


def cka_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
              seed: int = 0, retain_sample: int = 800, layers=None, debiased: bool = True,
              config: UnlearnConfig | None = None, cache_dir="artifacts/checkpoints") -> dict:
    """Fig. 4: layer-by-layer linear CKA between the model before (rows) and after (columns)
    unlearning, on D_f and on a D_r sample. Returns {method label: {"forget", "retain",
    "reached"}}.

    debiased: the unbiased HSIC estimator (default), so that D_f (k examples) and the D_r
    sample (retain_sample examples) are comparable; the biased one inflates at small N.
    """
    out = {}
    config = resolve("default") if config is None else config
    req = ForgetRequest.draw(data, k, seed=seed)
    fx, fy = req.x, req.y
    r = req.retain_sample(retain_sample)
    for method in methods:
        model, run = unlearned(base, data, req, method=method, config=config,
                               cache_dir=cache_dir)
        out[label(method)] = {"reached": bool(run["reached"]),
            "forget": cka_matrix(base, model, (fx, fy), layers=layers, debiased=debiased),
            "retain": cka_matrix(base, model, Subset(data.train, r), layers=layers,
                                 debiased=debiased)}
    return out


def confusion_summary(conf: dict) -> pd.DataFrame:
    """Per method: the share of D_f rows' mass on their most frequent new class (1: every
    forgotten instance of a class goes to one class; the paper's claim is no such pattern),
    the diagonal share on D_test (predictions unchanged) and whether the runs reached."""
    return pd.DataFrame([{
        "method": label(m), "reached": c["reached"],
        "top_target_share_Df": float(np.nanmean([r.max() / r.sum() for r in c["forget"]
                                                 if r.sum()])),
        "diagonal_share_Dtest": float(np.trace(c["test"]) / c["test"].sum())}
        for m, c in conf.items()])


def cka_diagonal(cka: dict) -> pd.DataFrame:
    """CKA of each layer with itself (before vs after), one column per (method, split)."""
    return pd.DataFrame({f"{m} · {split}": pd.Series(np.asarray(t).diagonal(), index=t.index)
                         for m, d in cka.items() for split, t in d.items()
                         if split in ("forget", "retain")}).reset_index(names="layer")
