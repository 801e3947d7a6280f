"""Representation analysis behind the paper's Figures 2-4: features, CKA, t-SNE, confusion.

Cha et al., AAAI 2024, compare a model before and after unlearning three ways:
- Fig. 2: confusion of D_f predictions, pre-unlearning (rows) vs post-unlearning (columns);
- Fig. 3: a t-SNE of D_f and D_r features before and after, fitted jointly;
- Fig. 4: layer-wise linear CKA between the two models' representations.
This module computes those quantities; `kit.experiments.figures` draws them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Subset

from ..core.models import feature_layers
from ..core.predict import Data, batches
from ..core.utils import eval_mode, model_device


# ---------------------------------------------------------------- features
def _subsample(data: Data, max_examples: int | None, seed: int) -> Data:
    """At most `max_examples` examples of `data`, drawn without replacement, in original order."""
    n = len(data[0]) if isinstance(data, (tuple, list)) else len(data)
    if max_examples is None or n <= max_examples:
        return data
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_examples].sort().values
    if isinstance(data, (tuple, list)):
        return tuple(v[idx] if isinstance(v, torch.Tensor) else np.asarray(v)[idx.numpy()]
                     for v in data)
    return Subset(data, idx.tolist())


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if layers is None:
        if not hasattr(model, "config"):
            raise ValueError("model is not a kit Classifier, so it has no default feature "
                             "layers; pass layers=[...] (names from model.named_modules())")
        layers = feature_layers(model)
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in modules]
    if unknown:
        some = [name for name in modules if name][:12]
        raise ValueError(f"unknown layer(s) {unknown}; valid names come from "
                         f"model.named_modules(), e.g. {some}")
    return {name: modules[name] for name in dict.fromkeys(layers)}  # dedupe, keep order


def layer_features(model: nn.Module, data: Data, *, layers: Sequence[str] | None = None,
                   batch_size: int = 256, max_examples: int | None = None, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules of `model` on `data`, each flattened to (N, D) float32 CPU.

    layers: module names from `model.named_modules()` (default `kit.core.models.feature_layers`).
    max_examples: keep a random subset of this many examples (seeded by `seed`, original order).
    The model runs in eval mode under inference_mode; its previous mode is restored and the
    forward hooks are always removed, even when the forward raises. A module that returns a
    tuple contributes its first element. A module called more than once per forward (a shared
    ReLU, say) is an error: its output would be ambiguous.

    >>> from kit.core.models import create_model
    >>> f = layer_features(create_model("cnn"), (torch.rand(3, 1, 28, 28), torch.zeros(3)))
    >>> {k: tuple(v.shape) for k, v in f.items()}
    {'net.block1': (3, 6272), 'net.block2': (3, 3136), 'net.relu': (3, 128)}
    """
    modules = _resolve_layers(model, layers)
    data = _subsample(data, max_examples, seed)
    device = model_device(model)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}   # this batch
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in modules}    # all batches

    def hook_for(name):
        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            # copy: the next module may modify the output in place (DenseNet's final ReLU does)
            outputs[name].append(output.detach().to("cpu", torch.float32, copy=True)
                                 .reshape(output.shape[0], -1))
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        with eval_mode(model), torch.inference_mode():
            for x, _ in batches(data, batch_size=batch_size):
                model(x.to(device))
                for name, out in outputs.items():
                    if len(out) != 1:
                        raise ValueError(f"layer {name!r} ran {len(out)} times in one forward "
                                         "pass (0: unused; >1: shared module); pick another layer")
                    chunks[name].append(out.pop())
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) if parts else torch.empty(0, 0) for name, parts in chunks.items()}


# ---------------------------------------------------------------- CKA
def _as_float64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (examples, features) matrix, got shape {x.shape}")
    return x


def _centered_gram(x: np.ndarray, *, debiased: bool) -> np.ndarray:
    """Linear Gram matrix of the rows of x (N, D), centred (debiased: U-centred), float64.

    U-centring (Szekely & Rizzo 2014) makes <K~, L~> / (N (N - 3)) the unbiased HSIC estimator
    of Song et al. (2012), as in the `debiased` option of Kornblith et al.'s CKA colab.
    """
    x = x - x.mean(0, keepdims=True)
    gram = x @ x.T  # (N, N), already double-centred because the columns are centred
    if not debiased:
        return gram
    n = gram.shape[0]
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def _check_pair(x, y, *, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_float64(x, "x"), _as_float64(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same examples (rows), got {x.shape[0]} and {y.shape[0]}")
    need = 4 if debiased else 2
    if x.shape[0] < need:
        raise ValueError(f"{'debiased ' if debiased else ''}HSIC needs at least {need} examples, "
                         f"got {x.shape[0]}")
    return x, y


def linear_hsic(x, y, *, debiased: bool = False) -> float:
    """HSIC with linear kernels between feature matrices x (N, D1) and y (N, D2).

    Biased: tr(K H L H) / (N - 1)^2 (Gretton et al. 2005). Debiased: the unbiased estimator of
    Song et al. (2012), zero in expectation for independent x and y; needs N >= 4.
    """
    x, y = _check_pair(x, y, debiased=debiased)
    n = x.shape[0]
    k, l = _centered_gram(x, debiased=debiased), _centered_gram(y, debiased=debiased)
    return float((k * l).sum() / (n * (n - 3) if debiased else (n - 1) ** 2))


def _gram_of(f, *, debiased: bool) -> np.ndarray:
    x = _check_pair(f, f[:, :0], debiased=debiased)[0]
    return _centered_gram(x, debiased=debiased)


def _cka_from_grams(k: np.ndarray, l: np.ndarray) -> float:
    return float((k * l).sum() / (np.linalg.norm(k) * np.linalg.norm(l)))


def linear_cka(x, y, *, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al., ICML 2019) between x (N, D1) and y (N, D2), in [0, 1].

    Rows are the same N examples; columns are centred; computed in float64. The feature form
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) is used when N >= D1, D2, the Gram (N x N) form
    otherwise (and always when debiased). debiased: HSIC by the unbiased estimator (Song et al. 2012; Nguyen et al., ICLR
    2021), which removes the upward bias of CKA at small N; it can then fall slightly below 0.
    Invariant to orthogonal transforms and isotropic scaling of either side, not to general
    invertible linear maps.

    >>> x = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(linear_cka(x, 3 * x), 6)
    1.0
    """
    x, y = _check_pair(x, y, debiased=debiased)
    if not debiased and x.shape[0] >= max(x.shape[1], y.shape[1]):
        x, y = x - x.mean(0), y - y.mean(0)
        cross = np.linalg.norm(y.T @ x) ** 2
        return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))
    return _cka_from_grams(_centered_gram(x, debiased=debiased), _centered_gram(y, debiased=debiased))


def cka_matrix(model_a: nn.Module, model_b: nn.Module, data: Data, *,
               layers: Sequence[str] | None = None, debiased: bool = False,
               batch_size: int = 256, max_examples: int | None = None, seed: int = 0
               ) -> pd.DataFrame:
    """Linear CKA between every layer of model_a ("before", rows) and model_b ("after", columns).

    Both models see the same inputs (one seeded subset when max_examples is set). layers:
    names used for both models (default: each model's `feature_layers`). Paper's Fig. 4.
    """
    data = _subsample(data, max_examples, seed)
    feats_a = layer_features(model_a, data, layers=layers, batch_size=batch_size)
    feats_b = layer_features(model_b, data, layers=layers, batch_size=batch_size)
    # each Gram matrix once: all of model_b's, then model_a's one at a time (memory ~ N^2 each)
    grams_b = {name: _gram_of(f, debiased=debiased) for name, f in feats_b.items()}
    rows = {}
    for name_a, f in feats_a.items():
        gram_a = _gram_of(f, debiased=debiased)
        rows[name_a] = {name_b: _cka_from_grams(gram_a, g) for name_b, g in grams_b.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")[list(feats_b)]
    frame.index.name, frame.columns.name = "before", "after"
    return frame


# ---------------------------------------------------------------- t-SNE
def tsne_embedding(features: Mapping[str, np.ndarray] | Sequence[np.ndarray], *, seed: int = 0,
                   perplexity: float = 30.0) -> list[np.ndarray]:
    """2-D t-SNE of several feature sets fitted jointly, split back: a list of (n_i, 2) arrays.

    One embedding for all sets (e.g. before and after unlearning) puts the panels of the paper's
    Fig. 3 in the same coordinates. sklearn TSNE, init="pca", random_state=seed; the
    perplexity is clamped below the number of points. Features with more than 2 dimensions
    are flattened per example.
    """
    parts = list(features.values()) if isinstance(features, Mapping) else list(features)
    if not parts:
        raise ValueError("tsne_embedding needs at least one feature array")
    arrays = []
    for a in parts:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        arrays.append(a.reshape(len(a), -1).astype(np.float32))
    if len({a.shape[1] for a in arrays}) != 1:
        raise ValueError(f"all feature arrays need the same width, got {[a.shape[1] for a in arrays]}")
    joint = np.concatenate(arrays)
    if len(joint) < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {len(joint)}")
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(float(perplexity), len(joint) - 1.0),
                init="pca", random_state=seed)
    xy = tsne.fit_transform(joint)
    return np.split(xy, np.cumsum([len(a) for a in arrays])[:-1])


# ---------------------------------------------------------------- confusion
def prediction_confusion(pred_before, pred_after, *, num_classes: int) -> np.ndarray:
    """Counts (C, C): rows = class predicted before unlearning, columns = class predicted after.

    Row c sums to the number of instances predicted c before unlearning. Paper's Fig. 2.

    >>> prediction_confusion([0, 0, 1], [1, 2, 1], num_classes=3)
    array([[0, 1, 1],
           [0, 1, 0],
           [0, 0, 0]])
    """
    from sklearn.metrics import confusion_matrix

    before, after = (np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p).ravel()
                     for p in (pred_before, pred_after))
    if before.shape != after.shape:
        raise ValueError(f"pred_before and pred_after differ in length: {len(before)} vs {len(after)}")
    for name, p in (("pred_before", before), ("pred_after", after)):
        if p.size and (p.min() < 0 or p.max() >= num_classes):
            raise ValueError(f"{name} holds classes outside [0, {num_classes}); check num_classes")
    return confusion_matrix(before, after, labels=list(range(num_classes)))


def average_confusion(matrices: Sequence[np.ndarray], *, normalize: str | None = "row") -> np.ndarray:
    """Average of several (C, C) confusion count matrices (e.g. over seeds).

    normalize: None gives the mean counts; "row" pools the counts and divides each row by its
    total, so row c is P(prediction after | prediction before = c); empty rows stay 0.
    """
    if normalize not in ("row", None):
        raise ValueError(f"normalize must be 'row' or None, got {normalize!r}")
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in matrices])  # (S, C, C)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2]:
        raise ValueError(f"expected square (C, C) matrices of one size, got {stack.shape[1:]}")
    mean = stack.mean(0)
    if normalize is None:
        return mean
    totals = mean.sum(1, keepdims=True)
    return np.divide(mean, totals, out=np.zeros_like(mean), where=totals > 0)
