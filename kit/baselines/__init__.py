"""Unlearning baselines of the field behind one call: `run_baseline(name, model, fx, fy)`.

Every entry of `BASELINES` modifies the model in place and returns a flat dict (name,
needs_retain, steps, seconds, reached, config, method-specific extras). Entries flagged
`needs_retain` are allowed to use the remaining data D_r and get it as `retain` (a Dataset
yielding (x, y) in [0, 1], or an (x, y) tuple); the others are D_r-free, like the paper's
method (`kit.method.engine`): their functions have no parameter through which D_r could
reach them, and `run_baseline` refuses a `retain` for them. The D_r oracle, the paper's
engine with D_r batches as anchors, is `kit.baselines.oracle.oracle_unlearn`.

Hyper-parameter defaults live in one place, each function's signature (one module per
method), with a comment naming the source. Where a paper's value is set for CIFAR-scale
runs (e.g. 10 epochs over 45,000 images) the default here is scaled down so that a run on
mnist5k with the "cnn" takes seconds on a CPU; the comment gives both. Models are in train
mode during updates (BatchNorm batch statistics, as in the baselines' code) and in eval
mode for attacks, for the forget-set checks and on return. The D_r-free entries can stop
as the paper's method does (`stop_at_objective=True`: D_f accuracy 0, within `max_steps`).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.data import Dataset, TensorDataset

from ..core.models import num_classes_of
from ..core.request import check_forget_tensors
from ..core.utils import as_channels_last, channels_last, check_name, model_device
from ._loop import masked_step, objective_met
from .amun import amun
from .boundary_shrink import boundary_shrink
from .finetune import finetune
from .neggrad_plus import neggrad_plus
from .random_labels import random_labels
from .retrain import retrain
from .salun import salun, saliency_mask
from .scrub import scrub

__all__ = ["BASELINES", "Baseline", "get_baseline", "masked_step", "perturbation_radius",
           "run_baseline", "saliency_mask"]

_CALL_ARGS = ("retain", "num_classes", "seed")  # given by run_baseline, not hyper-parameters


@dataclass
class Baseline:
    """One registry entry: the function, whether it may see D_r, the paper, its defaults.

    defaults: the hyper-parameters and their default values, read from `fn`'s signature
    (the single place they are written, each with a comment naming its source).
    radius: for D_r-free methods, (hyper-parameters, forget_x shape) -> the largest L2
    distance in [0,1] pixel units from D_f of any input the method feeds the model.
    """
    fn: Callable
    needs_retain: bool
    reference: str
    radius: Callable[[dict, tuple], float] | None = None
    defaults: dict = field(init=False)

    def __post_init__(self):
        sig = inspect.signature(self.fn)
        self.defaults = {n: p.default for n, p in sig.parameters.items()
                         if p.kind is p.KEYWORD_ONLY and n not in _CALL_ARGS}
        takes_retain = "retain" in sig.parameters
        if takes_retain != self.needs_retain:
            raise TypeError(f"{self.fn.__name__}: needs_retain={self.needs_retain} but its "
                            f"signature {'has' if takes_retain else 'lacks'} `retain`")
        if not self.needs_retain and self.radius is None:
            raise TypeError(f"{self.fn.__name__} is D_r-free and must state its input radius")


def _pixels(shape) -> int:
    return math.prod(shape[1:])


BASELINES: dict[str, Baseline] = {
    "retrain": Baseline(retrain, True, "retrain from scratch on D_r (exact unlearning)"),
    "finetune": Baseline(finetune, True, "Golatkar et al., CVPR 2020; Warnecke et al., NDSS 2023"),
    "neggrad_plus": Baseline(neggrad_plus, True, "Kurmanji et al., NeurIPS 2023 (NegGrad+)"),
    "scrub": Baseline(scrub, True, "Kurmanji et al., NeurIPS 2023 (SCRUB)"),
    "salun": Baseline(salun, True, "Fan et al., ICLR 2024 (SalUn)"),
    "random_labels": Baseline(random_labels, False, "Golatkar et al., CVPR 2020 (random labels)",
                              radius=lambda hp, shape: 0.0),
    "boundary_shrink": Baseline(
        boundary_shrink, False, "Chen et al., CVPR 2023 (Boundary Unlearning: Boundary Shrink)",
        # L-inf step `bound` plus half an 8-bit level of rounding, on every pixel
        radius=lambda hp, shape: (hp["bound"] + 0.5 / 255) * math.sqrt(_pixels(shape))),
    "amun": Baseline(amun, False, "Ebrahimpour-Boroojeny et al., 2025 (AMUN), without D_r",
                     radius=lambda hp, shape: hp["eps"] * 2 ** hp["max_doublings"]),
}


def get_baseline(name: str) -> Baseline:
    """The registry entry `name` (a key of BASELINES); the error lists the valid names."""
    return check_name(name, BASELINES, "baseline")


def _resolve(base: Baseline, name: str, hp: dict) -> dict:
    unknown = set(hp) - set(base.defaults)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)} for {name!r}; valid: "
                        f"{', '.join(base.defaults)}")
    return {**base.defaults, **hp}


def perturbation_radius(name: str, forget_x: torch.Tensor, **hp) -> float:
    """Largest L2 distance (in [0,1] pixel units) from D_f of any input that D_r-free
    baseline `name` feeds the model, under hyper-parameters `hp` (defaults otherwise)."""
    base = get_baseline(name)
    if base.needs_retain:
        raise ValueError(f"{name!r} uses the remaining data; it has no perturbation radius")
    return float(base.radius(_resolve(base, name, hp), tuple(forget_x.shape)))


def _as_dataset(retain) -> Dataset:
    if isinstance(retain, (tuple, list)):
        if len(retain) != 2:
            raise ValueError("retain as a tuple must be (x, y)")
        x, y = retain
        retain = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long())
    if len(retain) == 0:
        raise ValueError("retain is empty; pass the remaining data D_r")
    return retain


def run_baseline(name: str, model: torch.nn.Module, forget_x: torch.Tensor, forget_y, *,
                 retain=None, num_classes: int | None = None, seed: int = 0, **hp) -> dict:
    """Unlearn (forget_x in [0,1], forget_y) from `model` in place with baseline `name`.

    retain: the remaining data D_r (a Dataset yielding (x, y) in [0,1], or an (x, y)
    tuple); required by entries flagged needs_retain, refused by the D_r-free ones.
    num_classes: from model.config (or one forward pass) when None. hp: hyper-parameters
    of the entry (see BASELINES[name].defaults). Returns {"name", "needs_retain", "steps",
    "seconds", "reached" (D_f accuracy is 0 at the end, eval mode), "config", ...extras};
    the model is left in eval mode. The updates run in channels_last memory format (faster
    on a CPU; round-off only) and the model's layout is put back.

    >>> from kit.core.models import create_model
    >>> m = create_model("cnn"); x = torch.rand(4, 1, 28, 28); y = torch.tensor([0, 1, 2, 3])
    >>> out = run_baseline("random_labels", m, x, y, epochs=2)
    >>> out["steps"], type(out["reached"])
    (2, <class 'bool'>)
    >>> run_baseline("random_labels", m, x, y, stop_at_objective=True, max_steps=5)["steps"] <= 5
    True
    """
    base = get_baseline(name)
    config = _resolve(base, name, hp)
    if base.needs_retain and retain is None:
        raise ValueError(f"{name!r} needs the remaining data: pass retain=(x, y) or a Dataset "
                         f"of D_r")
    if not base.needs_retain and retain is not None:
        raise ValueError(f"{name!r} is D_r-free and does not accept retain; call it without "
                         f"the remaining data")
    device = model_device(model)
    forget_x = forget_x.detach().to(device, torch.float32)
    forget_y = torch.as_tensor(forget_y).to(device, torch.long)
    num_classes = num_classes or num_classes_of(model, forget_x)
    check_forget_tensors(forget_x, forget_y, num_classes=num_classes)
    kwargs = dict(num_classes=num_classes, seed=seed, **config)
    if base.needs_retain:
        kwargs["retain"] = _as_dataset(retain)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with channels_last(model):        # speed only, as the engine's default (channels_last)
        out = base.fn(model, as_channels_last(forget_x), forget_y, **kwargs)
    seconds = time.perf_counter() - start
    model.eval()
    return {"name": name, "needs_retain": base.needs_retain, "steps": out.pop("steps"),
            "seconds": seconds, "reached": objective_met(model, forget_x, forget_y),
            "config": config, **out}
