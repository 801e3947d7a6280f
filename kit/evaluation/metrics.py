"""Measures of an unlearned model: split accuracies, and closeness to a retrained reference.

Later unlearning work (e.g. Jia et al., NeurIPS 2023, "Model sparsity can simplify machine
unlearning"; the NeurIPS 2023 Machine Unlearning challenge) measures how close an unlearned
model is to the model retrained without D_f: accuracy on each split beside the reference's,
the share of examples on which the two predict the same class, and the KL divergence of the
two predictive distributions. Cha et al. (AAAI 2024) report accuracy only; these are the
"beyond this paper" measures of docs/method.md.
"""
from __future__ import annotations

import numpy as np
import torch

from torch.utils.data import Subset

from ..core.predict import Data, accuracy, predict_proba
from .neighbourhood import neighbourhood_accuracy


def _check_pair(p: np.ndarray, q: np.ndarray, names: str) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"{names} must be two (N, C) arrays of the same shape; "
                         f"got {p.shape} and {q.shape}")
    if len(p) == 0:
        raise ValueError(f"{names} are empty; pass at least one example")
    return p, q


def agreement(p: np.ndarray, q: np.ndarray) -> float:
    """Share of examples, in [0, 1], on which argmax p == argmax q.

    p, q: (N, C) probabilities (or logits: only the argmax matters) of two models on the
    same N examples, in the same order.

    >>> agreement(np.array([[.9, .1], [.2, .8]]), np.array([[.6, .4], [.7, .3]]))
    0.5
    """
    p, q = _check_pair(p, q, "p and q")
    return float((p.argmax(1) == q.argmax(1)).mean())


def mean_kl(p_ref: np.ndarray, p: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean over examples of KL(p_ref || p) = sum_c p_ref,c (log p_ref,c - log p_c), in nats.

    p_ref: (N, C) probabilities of the reference (retrained) model; p: (N, C) of the model
    judged. Both logs are taken of max(., eps), so a class that p gives probability 0 costs
    at most log(1/eps) (27.6 nats for eps=1e-12) instead of inf; classes with p_ref,c = 0
    contribute 0. Exactly 0 when p == p_ref.

    >>> round(mean_kl(np.array([[.5, .5]]), np.array([[.9, .1]])), 6)
    0.510826
    """
    p_ref, p = _check_pair(p_ref, p, "p_ref and p")
    kl = (p_ref * (np.log(np.maximum(p_ref, eps)) - np.log(np.maximum(p, eps)))).sum(1)
    return float(kl.mean())


def compare_to_reference(model: torch.nn.Module, reference: torch.nn.Module, *,
                         splits: dict[str, Data], batch_size: int = 0):
    """One row per split: accuracy of `model` and of `reference`, their gap, agreement, KL.

    model: the unlearned model; reference: a model retrained from scratch on D_r.
    splits: name -> data (a Dataset yielding (x, y), x in [0, 1], or a tuple (x, y)),
        e.g. {"forget": D_f, "retain": D_r, "test": D_test}.
    Returns a pandas DataFrame with columns split, n, acc, acc_ref, gap = |acc - acc_ref|
    (accuracies in [0, 1]), agreement (share of equal argmax, in [0, 1]) and
    kl = mean KL(reference || model) in nats (see `mean_kl`).
    """
    import pandas as pd

    if not splits:
        raise ValueError("splits is empty; pass e.g. {'forget': D_f, 'retain': D_r, 'test': D_test}")
    rows = []
    for name, data in splits.items():
        p, labels = predict_proba(model, data, batch_size=batch_size)
        p_ref, labels_ref = predict_proba(reference, data, batch_size=batch_size)
        if not np.array_equal(labels, labels_ref):
            raise ValueError(f"split {name!r} yielded different labels on two passes; "
                             "pass data with a fixed order (no shuffling or random transforms)")
        acc, acc_ref = float((p.argmax(1) == labels).mean()), float((p_ref.argmax(1) == labels).mean())
        rows.append({"split": name, "n": len(labels), "acc": acc, "acc_ref": acc_ref,
                     "gap": abs(acc - acc_ref), "agreement": agreement(p, p_ref),
                     "kl": mean_kl(p_ref, p)})
    return pd.DataFrame(rows)


def split_accuracies(model: torch.nn.Module, data, request, *, retain_max: int | None = None,
                     neighbourhood: bool = True) -> dict:
    """Accuracy in [0, 1] on D_f, D_r and D_test for one request, plus relabel agreement
    (relabel requests) and D_f accuracy over its neighbourhood views (see
    `kit.evaluation.neighbourhood`).

    data: the DataBundle of the request. request: a `kit.core.request.ForgetRequest`.
    retain_max: evaluate D_r on a seeded sample of at most this many instances (None: all).
    """
    r = request.retain_sample(retain_max)
    out = {"forget": accuracy(model, (request.x, request.y)),
           "retain": accuracy(model, Subset(data.train, r.tolist())),
           "test": accuracy(model, data.test)}
    if request.new_labels is not None:
        out["relabel"] = accuracy(model, (request.x, request.new_labels))
    if neighbourhood:
        out.update({f"forget_{name}": v for name, v in
                    neighbourhood_accuracy(model, request.x, request.y).items()})
    return out
