"""The objective's gradient kept off the anchors' where they conflict (A-GEM / PCGrad).

With `UnlearnConfig.project` set, a step takes the gradients of its two terms apart: g_o of
the objective (weighted as in the loss) and g_a of the anchor term. Where they conflict
(g_o . g_a < 0), g_o loses its component along g_a, so that to first order the objective's
part of the step leaves the anchors' loss as it is; the step then follows that plus g_a
(and the importance penalty's gradient). "global": one inner product over every weight
(A-GEM, Chaudhry et al., ICLR 2019); "tensor": one per weight tensor (PCGrad's surgery,
Yu et al., NeurIPS 2020, applied to the objective only); "kinds": one anchor term per kind of
anchor (adversarial, synthesised, transformed, ...: the batch's `sizes`), and g_o becomes the
nearest vector to it that conflicts with none of their gradients (GEM's quadratic program,
Lopez-Paz and Ranzato, NeurIPS 2017, `project_cone`); "adam": as "global", with the inner
products taken in Adam's metric (P = 1 / (sqrt(v_hat) + eps), from the optimiser's second
moments of the steps before): Adam moves along P g, not g, so g_o . g_a >= 0 does not keep
the step off the anchors' loss, and P g_o . g_a >= 0 does (to first order, momentum aside).
Before Adam's first step P = 1 ("global"); `UnlearnConfig` refuses "adam" with another
optimiser. The two gradients come from the two backward passes the joint loss would take
anyway; nothing is read on the host. `Projector` keeps them step after step; with `ema` the
reference g_a is the moving average of the anchors' gradients of the steps so far (A-GEM's
reference over more anchors than one batch holds), while the step adds this batch's.
"""
from __future__ import annotations

import torch

PROJECTIONS = ("off", "global", "tensor", "adam", "kinds")


def project_off(grads, refs, *, per_tensor: bool = False, metric=None) -> list[torch.Tensor]:
    """Each of `grads` less its component along `refs` where their inner product is negative.

    grads, refs: same-shaped tensors (one per weight). per_tensor: one test and projection
    per pair; else one over them all (as one flat vector). metric: positive tensors like
    them, a diagonal metric M: the products are g . M r and r . M r (None: M = 1).

    >>> g, r = [torch.tensor([1.0, -1.0])], [torch.tensor([0.0, 2.0])]
    >>> project_off(g, r)[0].tolist(), project_off(r, g)[0].tolist()
    ([1.0, 0.0], [1.0, 1.0])
    >>> project_off([torch.tensor([1.0, 1.0])], r)[0].tolist()     # no conflict: unchanged
    [1.0, 1.0]
    >>> m = [torch.tensor([1.0, 3.0])]        # g . M r = -2, r . M r = 4: g + r / 2
    >>> project_off(g, [torch.tensor([1.0, 1.0])], metric=m)[0].tolist()
    [1.5, -0.5]
    """
    mr = refs if metric is None else [m * r for m, r in zip(metric, refs)]   # M r

    def coef(dot, norm2):
        return torch.where(dot < 0, dot / norm2.clamp_min(torch.finfo(dot.dtype).tiny), 0.0)

    if per_tensor:
        return [g - coef((g * q).sum(), (r * q).sum()) * r for g, r, q in zip(grads, refs, mr)]
    c = coef(sum((g * q).sum() for g, q in zip(grads, mr)),
             sum((r * q).sum() for r, q in zip(refs, mr)))
    return [g - c * r for g, r in zip(grads, refs)]


def project_cone(grads, refs_list, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """The nearest vector g to `grads` with g . r >= 0 for each r in `refs_list` (all weights
    as one flat vector): g = grads + sum_j lam_j r_j with lam >= 0 solving the dual
    min_lam 1/2 lam^T K lam + b^T lam (K_ij = r_i . r_j, b_j = grads . r_j; GEM). The dual is
    solved exactly over every set of active constraints at once (2^m small linear systems,
    m = len(refs_list), on the device in `dtype`: None is float64, or float32 on Apple's MPS,
    which has no float64; the one whose solution meets all conditions is taken): nothing is
    read on the host. One reference: `project_off`.

    >>> g = [torch.tensor([-1.0, -1.0, 1.0])]       # against both references: off both
    >>> rs = [[torch.tensor([1.0, 0.0, 0.0])], [torch.tensor([0.0, 1.0, 0.0])]]
    >>> project_cone(g, rs)[0].tolist()
    [0.0, 0.0, 1.0]
    >>> g = [torch.tensor([-1.0, 1.0, 1.0])]        # against the first only
    >>> rs = [[torch.tensor([1.0, 0.0, 0.0])], [torch.tensor([1.0, 1.0, 0.0])]]
    >>> project_cone(g, rs)[0].tolist(), project_off(g, rs[0])[0].tolist()
    ([0.0, 1.0, 1.0], [0.0, 1.0, 1.0])
    """
    m = len(refs_list)
    if dtype is None:
        dtype = torch.float32 if grads[0].device.type == "mps" else torch.float64

    def dot(a, b):
        return sum((x.to(dtype) * y.to(dtype)).sum() for x, y in zip(a, b))
    K = torch.stack([torch.stack([dot(ri, rj) for rj in refs_list]) for ri in refs_list])
    b = torch.stack([dot(grads, r) for r in refs_list])
    sets = torch.tensor([[(s >> j) & 1 for j in range(m)] for s in range(2 ** m)],
                        dtype=torch.bool, device=b.device)                 # (2^m, m)
    on = (sets[:, :, None] & sets[:, None, :]).to(dtype)
    tiny = 1e-12 if dtype == torch.float64 else 1e-6
    ridge = tiny * K.diagonal().sum().clamp_min(1e-30)        # a zero reference: lam 0
    A = K * on + torch.diag_embed((~sets).to(dtype)) + ridge * torch.eye(m, dtype=K.dtype,
                                                                           device=K.device)
    lam = torch.linalg.solve(A, (-b * sets)[..., None])[..., 0] * sets      # (2^m, m)
    broken = (-lam).clamp_min(0).sum(1) + (-(lam @ K + b)).clamp_min(0).sum(1)
    best = lam[broken.argmin()]                              # meets lam >= 0, g . r >= 0
    return [g + sum(best[j].to(g.dtype) * r[i] for j, r in enumerate(refs_list))
            for i, g in enumerate(grads)]


def adam_metric(params, opt) -> list | None:
    """1 / (sqrt(v_hat) + eps) per parameter from torch.optim.Adam's state (the steps taken so
    far; betas and eps of its first parameter group, the engine's only one); None before its
    first step or for another optimiser."""
    if not isinstance(opt, torch.optim.Adam) or not all(opt.state.get(p) for p in params):
        return None
    group = opt.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    out = []
    for p in params:
        st = opt.state[p]
        bias = 1 - beta2 ** float(st["step"])
        out.append(1 / ((st["exp_avg_sq"] / bias).sqrt() + eps))
    return out


def backward_projected(params, objective: torch.Tensor, anchor: torch.Tensor, mode: str,
                       penalty: torch.Tensor | None = None, opt=None, reference=None) -> None:
    """Set each parameter's .grad (cleared before: set_to_none) to the projected objective
    gradient plus the anchors', then accumulate the penalty's: what `(objective + anchor +
    penalty).backward()` would give, with `project_off` applied to the objective's part.
    mode: "global", "tensor" or "adam" (the metric of `opt`, see `adam_metric`); "kinds":
    anchor is a list of terms (one per kind of anchor, summing to the anchor term), and
    the objective's gradient is kept off each (`project_cone`).
    reference: g_a -> the gradients to keep the objective's off (None: g_a itself)."""
    def grads(term):
        got = torch.autograd.grad(term, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]

    if mode == "kinds":
        g_kinds = [grads(term) for term in anchor]
        for p, g, *rs in zip(params, project_cone(grads(objective), g_kinds), *g_kinds):
            p.grad = g + sum(rs)
        if penalty is not None:
            penalty.backward()
        return
    g_a = grads(anchor)
    ref = g_a if reference is None else reference(g_a)
    metric = adam_metric(params, opt) if mode == "adam" else None
    for p, g, r in zip(params, project_off(grads(objective), ref, per_tensor=mode == "tensor",
                                           metric=metric), g_a):
        p.grad = g + r
    if penalty is not None:
        penalty.backward()


class Projector:
    """`backward_projected` for one run, step after step: (objective, anchor, penalty) -> None.

    ema in [0, 1): the reference is ema * (the reference before) + (1 - ema) * g_a, starting
    from the first step's g_a (0: g_a itself, as `backward_projected`).

    >>> w = torch.zeros(2, requires_grad=True)
    >>> proj = Projector([w], "global", ema=0.5)
    >>> proj(w @ torch.tensor([1.0, 0.0]), w @ torch.tensor([-4.0, 0.0]))
    >>> w.grad.tolist()       # g_o = (1, 0) against g_a = (-4, 0): its part along g_a goes
    [-4.0, 0.0]
    >>> w.grad = None         # next: g_o = (1, 1), g_a = (2, 0), no conflict between them,
    >>> proj(w @ torch.tensor([1.0, 1.0]), w @ torch.tensor([2.0, 0.0]))
    >>> proj.ref[0].tolist(), w.grad.tolist()   # but with the reference (-1, 0): g_o -> (0, 1)
    ([-1.0, 0.0], [2.0, 1.0])
    """

    def __init__(self, params, mode: str, opt=None, *, ema: float = 0.0):
        if not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        self.params, self.mode, self.opt, self.ema, self.ref = list(params), mode, opt, ema, None

    def _reference(self, g_a):
        if self.ref is None:
            self.ref = [g.detach().clone() for g in g_a]
        else:
            for r, g in zip(self.ref, g_a):
                r.mul_(self.ema).add_(g, alpha=1 - self.ema)
        return self.ref

    def __call__(self, objective: torch.Tensor, anchor: torch.Tensor,
                 penalty: torch.Tensor | None = None) -> None:
        backward_projected(self.params, objective, anchor, self.mode, penalty, self.opt,
                           self._reference if self.ema else None)
