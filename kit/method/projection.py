"""The objective's gradient kept off the anchors' where they conflict (A-GEM / PCGrad).

With `UnlearnConfig.project` set, a step takes the gradients of its two terms apart: g_o of
the objective (weighted as in the loss) and g_a of the anchor term. Where they conflict
(g_o . g_a < 0), g_o loses its component along g_a, so that to first order the objective's
part of the step leaves the anchors' loss as it is; the step then follows that plus g_a
(and the importance penalty's gradient). "global": one inner product over every weight
(A-GEM, Chaudhry et al., ICLR 2019); "tensor": one per weight tensor (PCGrad's surgery,
Yu et al., NeurIPS 2020, applied to the objective only). The two gradients come from the
two backward passes the joint loss would take anyway; nothing is read on the host.
"""
from __future__ import annotations

import torch

PROJECTIONS = ("off", "global", "tensor")


def project_off(grads, refs, *, per_tensor: bool = False) -> list[torch.Tensor]:
    """Each of `grads` less its component along `refs` where their inner product is negative.

    grads, refs: same-shaped tensors (one per weight). per_tensor: one test and projection
    per pair; else one over them all (as one flat vector).

    >>> g, r = [torch.tensor([1.0, -1.0])], [torch.tensor([0.0, 2.0])]
    >>> project_off(g, r)[0].tolist(), project_off(r, g)[0].tolist()
    ([1.0, 0.0], [1.0, 1.0])
    >>> project_off([torch.tensor([1.0, 1.0])], r)[0].tolist()     # no conflict: unchanged
    [1.0, 1.0]
    """
    def coef(dot, norm2):
        return torch.where(dot < 0, dot / norm2.clamp_min(torch.finfo(dot.dtype).tiny), 0.0)

    if per_tensor:
        return [g - coef((g * r).sum(), (r * r).sum()) * r for g, r in zip(grads, refs)]
    c = coef(sum((g * r).sum() for g, r in zip(grads, refs)),
             sum((r * r).sum() for r in refs))
    return [g - c * r for g, r in zip(grads, refs)]


def backward_projected(params, objective: torch.Tensor, anchor: torch.Tensor, mode: str,
                       penalty: torch.Tensor | None = None) -> None:
    """Set each parameter's .grad (cleared before: set_to_none) to the projected objective
    gradient plus the anchors', then accumulate the penalty's: what `(objective + anchor +
    penalty).backward()` would give, with `project_off` applied to the objective's part.
    mode: "global" or "tensor"."""
    def grads(term):
        got = torch.autograd.grad(term, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, got)]

    g_a = grads(anchor)
    for p, g, r in zip(params, project_off(grads(objective), g_a, per_tensor=mode == "tensor"),
                       g_a):
        p.grad = g + r
    if penalty is not None:
        penalty.backward()
