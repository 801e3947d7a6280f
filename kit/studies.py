"""The paper's analyses (Figs. 2-4) on unlearned models: data in, arrays/tables out.

Each study unlearns through `kit.experiment.unlearned`, so it reuses the models that the
main table (notebook 01) cached for the same configuration and computes them otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset

from .analysis import average_confusion, cka_matrix, layer_features, prediction_confusion, tsne_embedding
from .data import DataBundle, gather
from .evaluate import predict
from .experiment import unlearned
from .models import feature_layers

METHOD_LABELS = {"neggrad": "NegGrad", "adv": "ADV", "imp": "IMP", "adv+imp": "ADV+IMP",
                 "before": "before"}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _retain_sample(data: DataBundle, retain_idx, n: int, seed: int):
    r = np.asarray(retain_idx)
    if len(r) > n:
        r = np.sort(np.random.default_rng(seed).choice(r, n, replace=False))
    return r


def confusion_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
                    seeds=(0,), normalize: str | None = "row", **unlearn_kw) -> dict:
    """Fig. 2: pre- vs post-unlearning predictions on D_f (and on D_test as a sanity check).

    Returns {method: {"forget": (C, C), "test": (C, C)}}, rows = prediction before,
    columns = prediction after, pooled over seeds and row-normalised (see average_confusion).
    """
    out = {}
    test_before = predict(base, data.test)[0]
    for method in methods:
        mats_f, mats_t = [], []
        for seed in seeds:
            model, run = unlearned(base, data, method=method, k=k, seed=seed, **unlearn_kw)
            fx, fy = gather(data.train, run["forget_idx"])
            before = predict(base, (fx, fy))[0]
            after = predict(model, (fx, fy))[0]
            mats_f.append(prediction_confusion(before, after, num_classes=data.num_classes))
            mats_t.append(prediction_confusion(test_before, predict(model, data.test)[0],
                                               num_classes=data.num_classes))
        out[method] = {"forget": average_confusion(mats_f, normalize=normalize),
                       "test": average_confusion(mats_t, normalize=normalize)}
    return out


def tsne_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
               seed: int = 0, retain_sample: int = 800, layer: str | None = None,
               perplexity: float = 30.0, **unlearn_kw) -> dict:
    """Fig. 3: penultimate features of D_f and a D_r sample, before and after each method,
    embedded by ONE joint t-SNE so that the panels are comparable.

    Returns {panel title: dict(xy, labels, is_forget)} for `kit.figures.plot_tsne`.
    """
    layer = layer or feature_layers(base)[-1]
    models = {"before": base}
    run = None
    for method in methods:
        models[method], run = unlearned(base, data, method=method, k=k, seed=seed, **unlearn_kw)
    if run is None:
        from .experiment import forget_request
        f_idx, r_idx, _, _ = forget_request(data, k=k, seed=seed)
    else:
        f_idx, r_idx = run["forget_idx"], run["retain_idx"]
    r = _retain_sample(data, r_idx, retain_sample, seed)
    fx, fy = gather(data.train, f_idx)
    rx, ry = gather(data.train, r)
    x, y = torch.cat([fx, rx]), torch.cat([fy, ry])
    is_forget = np.r_[np.ones(len(fx), bool), np.zeros(len(rx), bool)]
    feats = [layer_features(m, (x, y), layers=[layer])[layer].numpy() for m in models.values()]
    xy = tsne_embedding(feats, seed=seed, perplexity=perplexity)
    return {label(name): {"xy": e, "labels": y.numpy(), "is_forget": is_forget}
            for name, e in zip(models, xy)}


def cka_study(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"), k: int = 128,
              seed: int = 0, retain_sample: int = 800, layers=None, debiased: bool = False,
              **unlearn_kw) -> dict:
    """Fig. 4: layer-by-layer linear CKA between the model before (rows) and after (columns)
    unlearning, on D_f and on a D_r sample. Returns {method label: {"forget", "retain"}}."""
    out = {}
    for method in methods:
        model, run = unlearned(base, data, method=method, k=k, seed=seed, **unlearn_kw)
        fx, fy = gather(data.train, run["forget_idx"])
        r = _retain_sample(data, run["retain_idx"], retain_sample, seed)
        out[label(method)] = {
            "forget": cka_matrix(base, model, (fx, fy), layers=layers, debiased=debiased),
            "retain": cka_matrix(base, model, Subset(data.train, r), layers=layers,
                                 debiased=debiased)}
    return out
