"""Neighbourhood forgetting: is D_f still recognised on views a person calls the same picture?

Reaching 0 % accuracy on the forget images themselves can be pixel-local: a one-pixel shift
may bring them back. The views are defined once, here, and recorded with every table:
- "shift": the image moved by one pixel up, down, left and right (edge pixels repeated);
- "noise": the image plus Gaussian noise scaled to L2 norm `NOISE_L2` in [0, 1] pixel
  units, `NOISE_DRAWS` seeded draws per image, clipped to [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.predict import accuracy

SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (rows, columns): up, down, left, right
NOISE_L2 = 1.0                                # L2 norm of the noise, [0, 1] pixel units
NOISE_DRAWS = 4                               # noisy views per image
NOISE_SEED = 0
SPEC = {"shift": {"pixels": 1, "directions": "up, down, left, right", "fill": "replicate"},
        "noise": {"l2": NOISE_L2, "draws": NOISE_DRAWS, "seed": NOISE_SEED, "clip": [0, 1]}}


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (N, C, H, W) moved by (dy, dx) pixels (|d| <= 1), repeating the edge pixels.

    >>> x = torch.arange(9.).view(1, 1, 3, 3)
    >>> shifted(x, 0, 1)[0, 0].tolist()
    [[0.0, 0.0, 1.0], [3.0, 3.0, 4.0], [6.0, 6.0, 7.0]]
    """
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")       # (N, C, H+2, W+2)
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def noisy(x: torch.Tensor, *, l2: float = NOISE_L2, draws: int = NOISE_DRAWS,
          seed: int = NOISE_SEED) -> torch.Tensor:
    """`draws` copies of x (N, C, H, W) plus noise of L2 norm `l2` each, clipped to [0, 1]:
    (draws * N, C, H, W), draw-major."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((draws, *x.shape), generator=gen).to(x.device)     # (D, N, C, H, W)
    noise = noise * (l2 / noise.flatten(2).norm(dim=2).clamp_min(1e-12))[..., None, None, None]
    return (x.unsqueeze(0) + noise).clamp(0, 1).flatten(0, 1)


def views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"shift": (4N, C, H, W), "noise": (NOISE_DRAWS * N, C, H, W)} views of x."""
    return {"shift": torch.cat([shifted(x, dy, dx) for dy, dx in SHIFTS]), "noise": noisy(x)}


def neighbourhood_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy in [0, 1] of `model` over each family of views of (x, y)."""
    out = {}
    for name, v in views(x).items():
        out[name] = accuracy(model, (v, y.repeat(len(v) // len(x))))
    return out
