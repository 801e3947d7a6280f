"""Neighbourhood forgetting: is D_f still recognised on views a person calls the same picture?

Reaching 0 % accuracy on the forget images themselves can be pixel-local: a one-pixel shift
may bring them back. The views (one-pixel shifts in four directions, Gaussian noise of a
fixed L2 norm) are defined once, in `kit.core.views`, and recorded with every table
(`SPEC`); this module scores a model on them.
"""
from __future__ import annotations

import torch

from ..core.predict import accuracy
from ..core.views import NOISE_DRAWS, NOISE_L2, NOISE_SEED, SHIFTS, SPEC, noisy, shifted, views

__all__ = ["NOISE_DRAWS", "NOISE_L2", "NOISE_SEED", "SHIFTS", "SPEC", "neighbourhood_accuracy",
           "noisy", "shifted", "views"]


def neighbourhood_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy in [0, 1] of `model` over each family of views of (x, y)."""
    out = {}
    for name, v in views(x).items():
        out[name] = accuracy(model, (v, y.repeat(len(v) // len(x))))
    return out
