"""The stopping rule of the update loop: when the objective is met, when a run diverged,
and, for the batched check (`check_every` > 1), the step at which it was first met.

The batched check reads the device only every few steps, so the loop runs a few steps past
the first step at which every instance met the objective. `FirstMet` keeps the weights,
buffers and per-instance tensors of that step on the device (a select per step, no host
synchronisation) and puts them back, so the run ends exactly where the exact per-step
check ends. `LastMet` does the same for the last such step of the polish phase that may
follow (`UnlearnConfig.polish_steps`)."""
from __future__ import annotations

import math
import time

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

    def _take(self, all_met: torch.Tensor) -> torch.Tensor:
        return all_met & (self.step < 0)

    @torch.no_grad()
    def see(self, all_met: torch.Tensor, step: int, *tracked: torch.Tensor) -> None:
        take = self._take(all_met)
        self.step = torch.where(take, step, self.step)
        for keep, cur in zip(self.kept, (*self.live, *tracked)):
            keep.copy_(torch.where(take, cur, keep))

    @torch.no_grad()
    def restore(self) -> list[torch.Tensor]:
        """Put the kept weights and buffers back; return the kept tracked tensors."""
        for keep, cur in zip(self.kept, self.live):
            cur.copy_(keep)
        return self.kept[len(self.live):]


class LastMet(FirstMet):
    """The state at the last step at which `all_met` held (the polish phase,
    `UnlearnConfig.polish_steps`); built at a step that met it, which it keeps until a later
    one does."""

    def __init__(self, model: torch.nn.Module, step: int, *tracked: torch.Tensor):
        super().__init__(model, *tracked)
        self.step.fill_(step)

    def _take(self, all_met: torch.Tensor) -> torch.Tensor:
        return all_met


def polish(model, step: int, pred, n_steps: int, history: list, *, seconds: dict, update,
           logits_on, met_at, all_met) -> tuple[int, torch.Tensor]:
    """`n_steps` more steps (`update(step)` -> loss) after `step`, the first that met the
    objective; back to the last step at which every instance met it (`logits_on()` after each
    step, kept on the device: `LastMet`). A step whose loss or logits are not finite is never
    kept. `all_met(met)`: whether a step meets the objective, the engine's stop rule (no
    default, so polish never judges by another). Appends the steps to `history`; returns the
    kept step and its predictions."""
    last, losses, dones = LastMet(model, step, pred), [], []
    for _ in range(n_steps):
        t = time.perf_counter()
        loss = update(step)
        step += 1
        seconds["update"] += time.perf_counter() - t
        logits = logits_on()
        pred = logits.argmax(1)
        now = met_at(pred)
        finite = torch.isfinite(loss) & torch.isfinite(logits).all()
        last.see(finite & all_met(now), step, pred)
        losses.append(loss)
        dones.append(now.float().mean())
    history += history_rows(step - n_steps, losses, dones, polish=True)
    kept = int(last.step)
    return kept, last.restore()[0]


def history_rows(before: int, losses: list, dones: list, **extra) -> list[dict]:
    """History entries of steps before+1, before+2, ... from per-step device tensors (the
    loss, the share of instances done), read from the device once."""
    return [{"step": before + i + 1, "done": float(d), "loss": float(v), **extra}
            for i, (v, d) in enumerate(zip(torch.stack(losses).tolist(),
                                           torch.stack(dones).tolist()))]
