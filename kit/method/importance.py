"""Per-parameter importance on the forget set, and the penalty weights built from it (IMP).

Cha et al., AAAI 2024, Sec. "Weight importance": Omega measured on D_f only, min-max
normalised per tensor, and w = 1 - Omega_norm used as the per-weight penalty
lambda * sum_i w_i (theta_i - theta*_i)^2 / 2, so weights that matter for D_f move freely
and the others stay anchored.

Estimators (named exactly, see ESTIMATORS):
- "mas_official": the L2UL code's MAS variant (`estimate_parameter_importance`): train
  mode, per batch the L2 norm (not squared) of the logits averaged over the batch,
  |gradient of that batch loss| times the batch size, summed and divided by the number of
  samples (the code divides by whole batches; a global scale that min-max removes). Buffers (BatchNorm running stats) are restored afterwards.
- "mas": textbook MAS (Aljundi et al., "Memory Aware Synapses", ECCV 2018): eval mode,
  per-sample |d ||f(x)||_2^2 / d theta|, averaged over samples.
- "fisher": diagonal empirical Fisher as in EWC (Kirkpatrick et al., PNAS 2017): eval mode,
  per-sample (d log p(y|x) / d theta)^2 at the given labels, averaged over samples.
"""
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..core.utils import check_name, eval_mode


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _mas_official(model, x, y, *, batch_size):
    params = _trainable(model)
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    # train mode as in the official code: BatchNorm uses batch statistics (and would update
    # its running stats, which _mode restores)
    with eval_mode(model, training=True, restore_buffers=True):
        for lo in range(0, x.shape[0], batch_size):
            logits = model(x[lo:lo + batch_size])  # (B, K)
            loss = logits.norm(p=2, dim=1).mean()  # L2 norm, not squared, batch mean
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, p), g in zip(params.items(), grads):
                if g is not None:
                    # abs of the batch gradient (not per sample), weighted by the batch's
                    # size as the official code does (a short last batch counts less)
                    imp[n] += g.abs() * len(logits)
    return {n: v / x.shape[0] for n, v in imp.items()}


def _per_sample_mean(model, x, y, *, batch_size, loss_fn, reduce):
    """mean over samples of reduce(d loss_fn(f(x_i), y_i) / d theta), via torch.func.vmap."""
    params = {n: p.detach() for n, p in _trainable(model).items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss_one(prm, xi, yi):
        out = functional_call(model, (prm, frozen, buffers), (xi.unsqueeze(0),))  # (1, K)
        return loss_fn(out[0], yi)

    per_sample_grad = vmap(grad(loss_one), in_dims=(None, 0, 0))
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    with eval_mode(model):
        for lo in range(0, x.shape[0], batch_size):
            xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]  # (B, C, H, W), (B,)
            g = per_sample_grad(params, xb, yb)  # {name: (B, *param.shape)}
            for n in imp:
                imp[n] += reduce(g[n]).sum(dim=0)
    return {n: v / x.shape[0] for n, v in imp.items()}


def _mas(model, x, y, *, batch_size):
    dummy = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return _per_sample_mean(model, x, dummy, batch_size=batch_size,
                            loss_fn=lambda out, _: out.pow(2).sum(), reduce=torch.abs)


def _fisher(model, x, y, *, batch_size):
    if y is None:
        raise ValueError("estimator 'fisher' needs the labels y of the forget set")
    def log_p(out, yi):  # out (K,), yi () long; gather, not out[yi]: vmap-safe indexing
        return F.log_softmax(out, dim=-1).gather(0, yi.view(1))[0]

    return _per_sample_mean(model, x, y, batch_size=batch_size, loss_fn=log_p, reduce=torch.square)


ESTIMATORS = {
    "mas_official": _mas_official,  # L2UL code: ||f||_2 batch mean, |batch grad|, train mode
    "mas": _mas,                    # Aljundi et al. 2018: per-sample |grad ||f||_2^2|, eval
    "fisher": _fisher,              # EWC empirical Fisher: per-sample grad log p(y|x) squared
}


def compute_importance(model, x, *, y=None, estimator="mas_official", batch_size=32):
    """Per-parameter importance on the forget set: {name: tensor shaped like the parameter}.

    model: classifier on [0, 1] images; left unchanged (weights, buffers, train/eval modes,
    parameter .grad). x: (k, C, H, W) forget images in [0, 1]. y: (k,) long labels, required
    by "fisher" only. estimator: a key of ESTIMATORS. batch_size: samples per batch (for
    "mas_official" it changes the value: |batch gradient| is taken per batch).
    Covers the parameters with requires_grad, in model.named_parameters() order; values >= 0.

    >>> m = torch.nn.Linear(2, 2)
    >>> sorted(compute_importance(m, torch.rand(4, 2), estimator="mas"))
    ['bias', 'weight']
    """
    fn = check_name(estimator, ESTIMATORS, "estimator")
    if x.shape[0] == 0:
        raise ValueError("the forget set x is empty; importance needs at least one image")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    x = x.detach().to(device)
    if y is not None:
        y = torch.as_tensor(y).long().to(device)
        if y.shape != x.shape[:1]:
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    return fn(model, x, y, batch_size=batch_size)


def normalize_importance(imp):
    """Min-max normalise each tensor to [0, 1]; a constant tensor maps to zeros (never NaN).

    The official code divides by (max - min) unguarded and yields NaN for a constant tensor.
    """
    out = {}
    for n, v in imp.items():
        lo, hi = v.min(), v.max()
        out[n] = (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)
    return out


def penalty_weights(imp):
    """w = 1 - normalize_importance(imp), in [0, 1]: 1 anchors a weight, 0 lets it move."""
    return {n: 1.0 - v for n, v in normalize_importance(imp).items()}


def update_masks(imp, share):
    """{name: 0/1 mask}: in each tensor, the `share` (0 < share <= 1) of its weights with the
    highest importance (ties at the threshold are kept), and never a weight of importance 0
    (D_f does not use it, e.g. behind units that no forget image activates).

    >>> m = update_masks({"w": torch.tensor([[0.1, 0.4], [0.3, 0.0]])}, 0.5)
    >>> m["w"].tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    >>> update_masks({"w": torch.tensor([0.0, 0.0, 0.2, 0.0])}, 0.5)["w"].tolist()
    [0.0, 0.0, 1.0, 0.0]
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    out = {}
    for n, v in imp.items():
        flat = v.detach().flatten()
        keep = max(1, math.ceil(share * flat.numel()))
        threshold = flat.kthvalue(flat.numel() - keep + 1).values
        out[n] = ((v >= threshold) & (v > 0)).to(v.dtype)
    return out
