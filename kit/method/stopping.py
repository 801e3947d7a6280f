"""The stopping rule of the update loop: when the objective is met, when a run diverged,
and, for the batched check (`check_every` > 1), the step at which it was first met.

The batched check reads the device only every few steps, so the loop runs a few steps past
the first step at which every instance met the objective. `FirstMet` keeps the weights,
buffers and per-instance tensors of that step on the device (a select per step, no host
synchronisation) and puts them back, so the run ends exactly where the exact per-step
check ends."""
from __future__ import annotations

import math

import torch


class Diverged(FloatingPointError):
    """The loss or the weights became NaN or infinite during unlearning."""


def objective_met(pred, forget_y, new_labels, objective) -> torch.Tensor:
    """Per instance: misclassified ("misclassify") or given its new label ("relabel")."""
    return pred != forget_y if objective == "misclassify" else pred == new_labels


def check_finite(value: float, what: str, step: int) -> None:
    if not math.isfinite(value):
        raise Diverged(f"the {what} became {value} at step {step}: the run diverged; lower lr "
                       f"or lam (the model is left as it was at that step; nothing was written)")


class FirstMet:
    """The state at the first step at which `all_met` held, kept on the device.

    tracked: tensors of the loop (predictions, per-instance steps) kept with the model's
    parameters and buffers; `step` is -1 until then (a device tensor: reading it syncs)."""

    def __init__(self, model: torch.nn.Module, *tracked: torch.Tensor):
        self.live = [*model.parameters(), *model.buffers()]
        self.kept = [t.detach().clone() for t in (*self.live, *tracked)]
        self.step = torch.full((), -1, dtype=torch.long, device=self.kept[0].device)

    @torch.no_grad()
    def see(self, all_met: torch.Tensor, step: int, *tracked: torch.Tensor) -> None:
        first = all_met & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        for keep, cur in zip(self.kept, (*self.live, *tracked)):
            keep.copy_(torch.where(first, cur, keep))

    @torch.no_grad()
    def restore(self) -> list[torch.Tensor]:
        """Put the kept weights and buffers back; return the kept tracked tensors."""
        for keep, cur in zip(self.kept, self.live):
            cur.copy_(keep)
        return self.kept[len(self.live):]
