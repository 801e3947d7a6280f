"""Anchors mined during the run where the model under unlearning has drifted most.

The fixed anchors (adversarial, synthesised, transformed D_f) are chosen before the first
step; the test digits the robust objective loses are those near D_f that follow their
nearest forget image to its new class (docs/exploration.md). `with_mined(source, ...)`
adds, every `mine_every` steps, `mine_anchors` new images: fresh random transforms of D_f
(`kit.method.augment`, `aug_transform`, seed + MINE_SEED + round) moved by PGD, within L2
radius `mine_eps`, towards the largest disagreement KL(frozen || now) at temperature
`distil_t` between a frozen copy of the model (taken before the first step) and the model
being unlearned, in eval mode; they are labelled by the frozen copy like the other
transformed anchors (its softmax at distil_t, or its prediction) and `mine_batch` of the
latest round join every anchor batch. The idea is zero-shot knowledge transfer's
(Micaelli & Storkey, NeurIPS 2019: the student is trained where it disagrees with the
teacher), with transformed forget images as the only starting points.

Nothing but D_f, the seed and the two models goes in: every mined image lies within
mine_eps of a transformed forget image that `mining_starts` makes again from D_f and the
seed (`kit.method.contract`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..core.utils import eval_mode
from .attacks import run_pgd
from .augment import augment
from .config import UnlearnConfig

MINE_SEED = 1000      # round r starts from augment(D_f, n, seed=seed + MINE_SEED + r)
PICK_SEED = 777       # the mined images of each batch are drawn from seed + PICK_SEED


def disagreement(teacher_logits: torch.Tensor, logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher / t) || softmax(logits / t)) per row: (N,).

    >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> disagreement(z, z, 1.0).tolist()
    [0.0, 0.0]
    >>> bool(disagreement(z, z.flip(1), 1.0).min() > 0)
    True
    """
    return (F.softmax(teacher_logits / t, dim=1) * (F.log_softmax(teacher_logits / t, dim=1)
                                                     - F.log_softmax(logits / t, dim=1))).sum(dim=1)


def mine(model: torch.nn.Module, teacher: torch.nn.Module, start: torch.Tensor, *, eps: float,
         steps: int, t: float) -> torch.Tensor:
    """Images within L2 radius eps of `start` (and in [0, 1]) that raise the disagreement of
    `model` with `teacher`: the kit's PGD loop (`attacks.run_pgd`, ascending) for `steps`
    steps of 2.5 eps / steps, in eval mode; no parameter gets a gradient."""
    with eval_mode(model):
        return run_pgd(model, start.detach(), None, norm="l2", eps=eps,
                       step_size=2.5 * eps / steps, steps=steps, targeted=False,
                       objective=lambda x: disagreement(teacher(x), model(x), t).sum())


def _start(forget_x: torch.Tensor, n: int, *, seed: int, r: int, transform: str):
    return augment(forget_x, n, seed=seed + MINE_SEED + r, transform=transform)


def mining_starts(forget_x: torch.Tensor, n: int, *, seed: int, rounds: int,
                  transform: str = "affine") -> list[torch.Tensor]:
    """The starting images of the first `rounds` rounds (made again from D_f and the seed)."""
    return [_start(forget_x, n, seed=seed, r=r, transform=transform) for r in range(rounds)]


def with_mined(source, model: torch.nn.Module, forget_x: torch.Tensor, *, cfg: UnlearnConfig,
               seed: int, passes: dict, label):
    """`source` (an anchor source, () -> (x, y), or None) with cfg.mine_batch mined images
    appended to every batch; a new round of cfg.mine_anchors is mined before the first batch
    and then every cfg.mine_every batches (one batch a step). `model` is the model being
    unlearned, as it is now: the frozen copy is taken here; label(frozen copy, x) labels the
    mined images. The mining counts in the "attack" phase of `passes` (updated in place):
    each PGD step a forward+backward pass of both models per image, the labels one forward
    pass (its clock time falls in the update phase: the rounds run inside the steps)."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    device = forget_x.device
    pick = torch.Generator().manual_seed(seed + PICK_SEED)
    state = {"calls": 0, "round": 0, "x": None, "y": None}

    def new_round():
        start = _start(forget_x, cfg.mine_anchors, seed=seed, r=state["round"],
                       transform=cfg.aug_transform)
        x = mine(model, teacher, start.to(device), eps=cfg.mine_eps, steps=cfg.mine_steps,
                 t=cfg.distil_t)
        state.update(x=x, y=label(teacher, x), round=state["round"] + 1)
        passes["attack"] += cfg.mine_anchors * (2 * cfg.mine_steps + 1 / 3)

    def anchors():
        if state["calls"] % cfg.mine_every == 0:
            new_round()
        state["calls"] += 1
        i = torch.randint(len(state["x"]), (cfg.mine_batch,), generator=pick).to(device)
        if source is None:
            anchors.sizes = [len(i)]
            return state["x"][i], state["y"][i]
        ax, ay = source()
        anchors.sizes = [*getattr(source, "sizes", [len(ay)]), len(i)]
        return torch.cat([ax, state["x"][i]]), torch.cat([ay, state["y"][i]])
    anchors.release = getattr(source, "release", lambda pending: None)
    return anchors
