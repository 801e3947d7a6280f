"""What an unlearning run returns (`UnlearnResult`) and its machine-free cost counters."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class UnlearnResult:
    """What a run did.

    flip_step[i]: the first step after which instance i met the objective (0: met before
    any update; -1: never). settled_step[i]: the step after which it was last seen to meet
    the objective (-1 if it does not meet it at the end); an instance may flip back and
    forth (the engine re-checks done instances in one full pass before it stops), so
    settled_step >= flip_step. done[i]: whether it meets the objective at the end.
    """
    method: str
    objective: str
    reached: bool
    steps: int
    flip_step: np.ndarray
    settled_step: np.ndarray
    done: np.ndarray
    final_pred: np.ndarray
    new_labels: np.ndarray | None
    seconds: dict
    attack_success_rate: float
    n_adversarial: int
    config: dict
    passes: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        """A flat row for tables."""
        return {"method": self.method, "objective": self.objective, "reached": self.reached,
                "steps": self.steps, "attack_success": self.attack_success_rate,
                "n_adversarial": self.n_adversarial,
                **{f"sec_{k}": v for k, v in self.seconds.items()},
                **{f"passes_{k}": v for k, v in self.passes.items()}}


def new_passes() -> dict:
    """Machine-free cost counters per phase, in example-passes: a forward+backward pass of
    one example counts 1, a forward-only pass 1/3 (backward costs about twice a forward).
    Retraining costs epochs * |D_r| (+ its evaluation) in the same unit."""
    return {"attack": 0.0, "importance": 0.0, "update": 0.0, "evaluate": 0.0}


def finish_passes(passes: dict) -> dict:
    passes["total"] = sum(passes.values())
    return passes
