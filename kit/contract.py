"""The remaining-data-free contract: a method may feed the model only D_f and points near it.

`forget_only_violation(run, model, forget_x, radius=...)` runs `run()` while recording every
input batch the model sees and returns the largest L2 distance (in [0,1] pixel units)
between an input row and its nearest forget instance. A method that never touches the
remaining or test data scores at most its perturbation radius (0 for NegGrad, eps for
adversarial examples); one that sees a single remaining example scores far more.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def recorded_inputs(model: torch.nn.Module):
    """Record (a CPU copy of) the first positional input of every forward call of `model`."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().cpu()))
    try:
        yield seen
    finally:
        handle.remove()


def distance_to_forget(inputs: list[torch.Tensor], forget_x: torch.Tensor,
                       *, chunk: int = 4096) -> float:
    """Max over all recorded rows of the L2 distance to the nearest forget instance."""
    ref = forget_x.detach().cpu().flatten(1).double()           # (k, D)
    worst = 0.0
    for batch in inputs:
        rows = batch.flatten(1).double()
        for i in range(0, len(rows), chunk):
            d = torch.cdist(rows[i:i + chunk], ref).min(dim=1).values
            worst = max(worst, float(d.max()))
    return worst


def forget_only_violation(run, model: torch.nn.Module, forget_x: torch.Tensor) -> float:
    """Run `run()` (which unlearns `model`) and return `distance_to_forget` of what it fed it."""
    with recorded_inputs(model) as seen:
        run()
    return distance_to_forget(seen, forget_x)
