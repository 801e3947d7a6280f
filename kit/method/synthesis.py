"""Anchors synthesised from the frozen model alone: model inversion from its BatchNorm
statistics (Yin et al., CVPR 2020, "Dreaming to Distill: Data-free Knowledge Transfer via
DeepInversion").

`synthesize(model, n, seed=...)` starts from seeded Gaussian noise and optimises n images,
class i mod C for image i, so that the model predicts their class and the batch statistics
at every BatchNorm layer match the running statistics the model kept from its training
data; a total-variation prior keeps them smooth. Nothing but the model and the seed goes
in: no data set is read, so the images keep the remaining-data-free contract
(`kit.method.contract`: a check can make them again from the same model and seed and find
every input bit for bit). The engine labels them like its adversarial anchors and mixes a
batch of them into every step (`UnlearnConfig.synth_anchors`). `synthesized` remembers the
last few results by the model's weights and the settings, so requests from one model with
one seed pay the inversion once per process (the runs' pass counts include it each time).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..core.utils import eval_mode, model_device, weights_hash


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None]


def check_invertible(model: nn.Module) -> None:
    """ValueError when `model` has no BatchNorm layer with running statistics to invert."""
    if not batchnorm_layers(model):
        raise ValueError("synth_anchors inverts the model's BatchNorm statistics, and this "
                         "model has no BatchNorm layer with running statistics; set "
                         "synth_anchors=0 (--synth-anchors 0) or use a recipe without it")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (rows and columns).

    >>> total_variation(torch.tensor([[[[0., 1.], [0., 1.]]]])).item()
    1.0
    """
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def synthesize(model: nn.Module, n: int, *, shape: tuple[int, ...], num_classes: int,
               seed: int = 0, iters: int = 200, lr: float = 0.2, bn_weight: float = 1.0,
               tv_weight: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, *shape) in [0, 1], their classes (n,)) inverted from `model` (eval mode,
    weights untouched; x = sigmoid(z), z from seeded noise, Adam on z for `iters` steps).

    Loss per step: CE(model(x), class) + bn_weight * sum over BatchNorm layers of
    ||mean - running_mean|| + ||var - running_var|| (the batch's statistics at that layer's
    input) + tv_weight * total_variation(x). The last forward pass, on the final images,
    checks the images are finite. Raises ValueError for a model without BatchNorm
    statistics (nothing to invert from).
    """
    bns = batchnorm_layers(model)
    if not bns:
        raise ValueError("synth_anchors needs a model with BatchNorm layers that keep running "
                         "statistics (the images are inverted from them); this model has "
                         "none: set synth_anchors=0")
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % num_classes).to(device)
    z = torch.randn((n, *shape), generator=gen).to(device).requires_grad_(True)
    gaps: list[torch.Tensor] = []

    def hook(m, args, out):
        x = args[0]
        dims = [0, *range(2, x.dim())]
        gaps.append(torch.norm(x.mean(dims) - m.running_mean, 2)
                    + torch.norm(x.var(dims, unbiased=False) - m.running_var, 2))

    frozen = [p for p in model.parameters() if p.requires_grad]
    handles = [m.register_forward_hook(hook) for m in bns]
    opt = torch.optim.Adam([z], lr=lr)
    try:
        for p in frozen:
            p.requires_grad_(False)
        with eval_mode(model):
            for _ in range(iters):
                gaps.clear()
                x = torch.sigmoid(z)
                loss = (F.cross_entropy(model(x), y) + bn_weight * torch.stack(gaps).sum()
                        + tv_weight * total_variation(x))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            gaps.clear()
            with torch.no_grad():
                x = torch.sigmoid(z)
                if not bool(torch.isfinite(model(x)).all()):
                    raise ValueError("model inversion gave non-finite logits; lower the "
                                     "synthesis step or set synth_anchors=0")
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    return x.detach(), y


MEMO_SIZE = 4   # results `synthesized` keeps (each n images)
_MEMO: OrderedDict = OrderedDict()


def _fingerprint(model: nn.Module) -> tuple:
    """What decides the inversion besides its settings: the weights and buffers bit for bit,
    their memory format, the thread count, the device."""
    cl = any(p.dim() == 4 and not p.is_contiguous()
             and p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters())
    return weights_hash(model, n=40), cl, torch.get_num_threads(), str(model_device(model))


def synthesized(model: nn.Module, n: int, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """`synthesize(model, n, **settings)`, or a copy of the same call's result made earlier
    in this process from a model with the same weights (bit for bit) and thread count."""
    key = (_fingerprint(model), n, tuple(sorted((k, str(v)) for k, v in settings.items())))
    if key not in _MEMO:
        _MEMO[key] = synthesize(model, n, **settings)
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    x, y = _MEMO[key]
    return x.clone(), y.clone()
