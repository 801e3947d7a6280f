"""Views of an image that a person would call the same picture, defined once.

Used twice: `kit.evaluation.neighbourhood` measures whether D_f is still recognised on them
(fixed seed `NOISE_SEED`), and the robust variant of the engine (`robust=True`) makes the
objective hold on them too (its noise draws use `TRAIN_NOISE_SEED`, so the noisy views it
trains on are not the ones it is scored on).
- "shift": the image moved by one pixel up, down, left and right (edge pixels repeated);
- "noise": the image plus Gaussian noise scaled to L2 norm `NOISE_L2` in [0, 1] pixel
  units, `NOISE_DRAWS` seeded draws per image, clipped to [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (rows, columns): up, down, left, right
NOISE_L2 = 1.0                                # L2 norm of the noise, [0, 1] pixel units
NOISE_DRAWS = 4                               # noisy views per image
NOISE_SEED = 0                                # evaluation draws
TRAIN_NOISE_SEED = 1                          # the robust variant's draws (not evaluated on)
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


def views(x: torch.Tensor, *, seed: int = NOISE_SEED) -> dict[str, torch.Tensor]:
    """{"shift": (4N, C, H, W), "noise": (NOISE_DRAWS * N, C, H, W)} views of x; view j of
    image i is row j * N + i of its family."""
    return {"shift": torch.cat([shifted(x, dy, dx) for dy, dx in SHIFTS]),
            "noise": noisy(x, seed=seed)}


def with_views(x: torch.Tensor, *labels: torch.Tensor | None, seed: int = TRAIN_NOISE_SEED):
    """(x followed by all its views, each label tensor repeated to match (None stays None)).

    The first N rows are x itself, so `[:N]` of anything computed on the result is about
    the original images.

    >>> x, y = torch.rand(2, 1, 4, 4), torch.tensor([3, 5])
    >>> big, (yy, none) = with_views(x, y, None)
    >>> big.shape[0], yy.tolist()[:4], none, bool((big[:2] == x).all())
    (18, [3, 5, 3, 5], None, True)
    """
    v = torch.cat(list(views(x, seed=seed).values()))
    reps = 1 + len(v) // len(x)
    return torch.cat([x, v]), tuple(None if y is None else y.repeat(reps) for y in labels)
