"""The remaining-data-free contract: a method may feed the model only D_f and points near it.

`forget_only_violation(run, model, forget_x)` runs `run()` while
- recording the input of every top-level forward call of `model`,
- watching every submodule: one called directly (outside a forward of the whole model)
  counts as a violation, since its input cannot be checked,
- making the kit's data access fail (`load_dataset`, `gather`, torch DataLoader
  iteration), so remaining data cannot reach the method without a forward pass either,
and returns the largest L2 distance (in [0,1] pixel units) between a recorded input row
and its nearest forget instance (inf on any violation). A method that never touches the
remaining or test data scores at most its perturbation radius (0 for NegGrad, eps for
adversarial examples); one that sees a single remaining example scores far more.

Inputs made from D_f by random transforms (`kit.method.augment`) pass the same way: as
`allowed` rows made again from D_f and the seed (`augmentation_inputs`), so that real data
passed off as transformed forget images still fail.

Inputs made from the model alone (images inverted from its BatchNorm statistics,
`kit.method.synthesis`) are far from D_f. They pass only as `allowed` rows: the inputs of
the same synthesis, made again from the same model and seed under the same watch
(`synthesis_inputs`) and matched bit for bit, so a method that feeds real data under that
name still fails.

Inputs mined during the run (`kit.method.mining`) move each a transformed forget image by at
most `mine_eps`; the check takes D_f together with those starting images, made again from D_f
and the seed (`mining.mining_starts`), as its reference set, so a mined image scores at most
mine_eps, and one mined from real data scores far more (`tests/test_mining.py`).
"""
from __future__ import annotations

import contextlib
import math

import torch


class ContractViolation(RuntimeError):
    """The method under test reached for data outside the forget set."""


@contextlib.contextmanager
def recorded_inputs(model: torch.nn.Module):
    """Record (a CPU copy of) the first input of every top-level forward call of `model`;
    `seen.direct` lists submodules called outside such a call."""
    seen: list[torch.Tensor] = []
    direct: list[str] = []
    depth = [0]

    def enter(m, args):
        seen.append(args[0].detach().cpu())
        depth[0] += 1

    def leave(m, args, out):
        depth[0] -= 1

    def watch(name):
        def hook(m, args):
            if depth[0] == 0:
                direct.append(name)
        return hook

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    handles += [m.register_forward_pre_hook(watch(n)) for n, m in model.named_modules() if n]
    try:
        yield seen, direct
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def no_data_access():
    """Make the kit's data loaders and torch DataLoader iteration raise ContractViolation."""
    from ..core import data as kit_data

    def refuse(*_, **__):
        raise ContractViolation("the method reached for a data set; only D_f may be used")

    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(_patch())
        mp(kit_data, "load_dataset", refuse)
        mp(kit_data, "gather", refuse)
        mp(torch.utils.data.DataLoader, "__iter__", refuse)
        yield


@contextlib.contextmanager
def _patch():
    undo = []

    def setattr_(obj, name, value):
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    try:
        yield setattr_
    finally:
        for obj, name, old in reversed(undo):
            setattr(obj, name, old)


def _row_keys(rows: torch.Tensor) -> list[bytes]:
    rows = rows.detach().cpu().float().flatten(1).contiguous().numpy()
    return [r.tobytes() for r in rows]


def distance_to_forget(inputs: list[torch.Tensor], forget_x: torch.Tensor,
                       *, chunk: int = 4096, allowed: set[bytes] | None = None) -> float:
    """Max over all recorded rows of the L2 distance to the nearest forget instance; rows
    equal bit for bit to one in `allowed` (`_row_keys`) count 0."""
    ref = forget_x.detach().cpu().flatten(1).double()           # (k, D)
    worst = 0.0
    for batch in inputs:
        if batch[0].numel() != ref.shape[1]:
            return math.inf                                     # not an image like D_f
        if allowed:
            keep = torch.tensor([key not in allowed for key in _row_keys(batch)])
            batch = batch[keep]
            if not len(batch):
                continue
        rows = batch.flatten(1).double()
        for i in range(0, len(rows), chunk):
            d = torch.cdist(rows[i:i + chunk], ref).min(dim=1).values
            worst = max(worst, float(d.max()))
    return worst


def forget_only_violation(run, model: torch.nn.Module, forget_x: torch.Tensor, *,
                          allowed: list[torch.Tensor] | None = None) -> float:
    """Run `run()` (which unlearns `model`) under the contract's watch; return the distance
    of what it fed the model to D_f, or inf if it called a submodule directly or reached for
    a data set. allowed: inputs that count 0 when fed bit for bit (`synthesis_inputs`)."""
    keys = {key for rows in allowed or () for key in _row_keys(rows)}
    with recorded_inputs(model) as (seen, direct), no_data_access():
        try:
            run()
        except ContractViolation:
            return math.inf
    return math.inf if direct else distance_to_forget(seen, forget_x, allowed=keys)


def synthesis_inputs(model: torch.nn.Module, n: int, *, shape, num_classes: int, seed: int,
                     iters: int) -> list[torch.Tensor]:
    """Every input that `kit.method.synthesis.synthesize` feeds a copy of `model` (same
    weights, same seed and settings), made under the contract's watch (no data set can be
    reached): the `allowed` rows of a run with synth_anchors=n."""
    import copy

    from .synthesis import synthesize

    twin = copy.deepcopy(model)
    with recorded_inputs(twin) as (seen, _), no_data_access():
        synthesize(twin, n, shape=shape, num_classes=num_classes, seed=seed, iters=iters)
    return seen


def augmentation_inputs(forget_x: torch.Tensor, n: int, *, seed: int,
                        transform: str = "affine") -> list[torch.Tensor]:
    """The images `kit.method.augment.augment` makes from D_f with this seed, made again
    under the contract's watch (no data set can be reached): the `allowed` rows of a run
    with aug_anchors=n."""
    from .augment import augment

    with no_data_access():
        return [augment(forget_x, n, seed=seed, transform=transform)]
