"""Keep a model's logit scale from one unlearning request to the next (continual unlearning).

Every request shrinks the model's logits well beyond the forget set: over five requests of
k = 32 on the calibration model the median margin of the true class over the others on the
test set falls from 8.8 to 1.9, and each request then flips more test images than the one
before (in fewer steps), although no single request moved far (docs/exploration.md, "Continual unlearning:
the logit scale"). `restore_scale` multiplies the logit layer (the `Linear` whose output is
the model's output) by one factor c > 0, chosen so that the median top-2 gap on images
transformed from the request's forget set, counting those whose prediction the request did
not change, is what it was before the request. Multiplying the logits by c > 0 changes no
prediction: accuracy, forgetting and relabeling stay as they are; what changes is the scale
the next request starts from. Only D_f (under seeded transforms, `kit.method.augment`) and
the model go in, so the remaining-data-free contract holds.

>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> x = torch.rand(16, 1, 2, 2)
>>> before = logits_of(net, x)
>>> with torch.no_grad():
...     _ = net[1].weight.mul_(0.5), net[1].bias.mul_(0.5)
>>> round(restore_scale(net, x, before), 4), bool(torch.allclose(logits_of(net, x), before))
(2.0, True)
"""
from __future__ import annotations

import torch

from ..core.predict import predict_logits
from ..core.utils import eval_mode, model_device
from .augment import augment

VIEWS = 2048                # transformed forget images the scale is measured on
VIEW_TRANSFORM = "affine_mix"


def scale_views(forget_x: torch.Tensor, *, seed: int) -> torch.Tensor:
    """The VIEWS images (seeded transforms of D_f, `augment`) the scale is measured on."""
    return augment(forget_x, VIEWS, seed=seed, transform=VIEW_TRANSFORM)


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on x (`kit.core.predict.predict_logits`: eval mode, on the CPU)."""
    return predict_logits(model, (x, torch.zeros(len(x), dtype=torch.long)))[0]


def top2_gap(logits: torch.Tensor) -> torch.Tensor:
    """Per row: the largest logit minus the second largest (>= 0)."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def logit_layer(model: torch.nn.Module, x: torch.Tensor, *,
                fix: str = "keep_scale=False (notebook 06: keep_scale = False)") -> torch.nn.Linear:
    """The `Linear` module whose output is the model's output (one forward pass on x[:1]);
    ValueError naming `fix`, the setting that does without it, when there is none."""
    seen: list[tuple[torch.nn.Linear, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, _, out: seen.append((mod, out)))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x[:1].to(model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    for mod, o in reversed(seen):
        if o is out or (o.shape == out.shape and torch.equal(o, out)):
            return mod
    raise ValueError(f"{fix.split('=')[0]} needs a model whose logits are the output of a "
                     f"torch.nn.Linear layer, and this model's are not; pass {fix}")


def restore_scale(model: torch.nn.Module, x: torch.Tensor, before: torch.Tensor) -> float:
    """Multiply the logit layer's weight and bias by c so that the median top-2 gap on x,
    over the images whose prediction is that of `before` (the logits on x before the
    request), equals the median of `before`'s gaps on them; returns c (1.0, and nothing
    changed, when no image kept its prediction or the model's gap there is 0)."""
    layer = logit_layer(model, x)
    after = logits_of(model, x)
    kept = after.argmax(1) == before.argmax(1)
    if not bool(kept.any()):
        return 1.0
    now, then = float(top2_gap(after[kept]).median()), float(top2_gap(before[kept]).median())
    if not (now > 0 and then > 0) or not torch.isfinite(torch.tensor(then / now)):
        return 1.0
    c = then / now
    with torch.no_grad():
        layer.weight.mul_(c)
        if layer.bias is not None:
            layer.bias.mul_(c)
    return c
