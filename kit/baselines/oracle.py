"""The D_r oracle: the engine's loss and optimiser with real remaining data as anchors.

It is the ceiling a remaining-data-free method can hope for: the same objective, the same
IMP penalty, the same optimiser, batch sizes, stopping rule and budget as
`kit.method.engine.unlearn` with ADV+IMP, except that each step's anchor batch is a batch
of D_r with its true labels instead of adversarial examples of D_f. Anchors carry their true
labels, or the frozen model's softmax when the recipe distils (adv_select="soft"). It needs
D_r and is flagged needs_retain in every table.
"""
from __future__ import annotations

import copy
import time

import torch
from torch.utils.data import DataLoader, Dataset

from ..core.models import num_classes_of
from ..core.request import check_forget_tensors
from ..core.utils import as_channels_last, model_device
from ..method.config import UnlearnConfig
from ..method.engine import (UnlearnResult, check_earlier, check_hold, finish_passes, new_passes,
                             run_updates, soft_labels, with_earlier)
from ..method.recipes import resolve
from ..method.speed import speed_options


def _endless(retain: Dataset, *, batch: int, seed: int, device, teacher=None,
             temperature: float = 1.0):
    """Endless shuffled D_r batches (x, y); y is the teacher's softmax (at `temperature`)
    when one is given."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(retain, batch_size=min(batch, len(retain)), shuffle=True,
                        generator=gen, drop_last=True)
    while True:
        for x, y in loader:
            x = x.to(device)
            yield x, (torch.as_tensor(y).to(device) if teacher is None
                      else soft_labels(teacher, x, temperature=temperature))


def oracle_unlearn(model: torch.nn.Module, forget_x, forget_y, *, retain: Dataset,
                   objective: str = "misclassify", new_labels=None,
                   config: UnlearnConfig | None = None, seed: int = 0,
                   earlier_x: torch.Tensor | None = None, hold=None) -> UnlearnResult:
    """Unlearn (forget_x, forget_y) from `model` in place with D_r batches as anchors.

    retain: D_r, a Dataset yielding (x in [0, 1], y). config: the resolved recipe (default:
    "default" for `objective`); its adv_batch is the anchor batch size, and the step budget
    counts the anchors an ADV run would have had (per_instance * k), so the two stop alike.
    earlier_x: continual unlearning: earlier forget images that join every anchor batch, as
    in `kit.method.engine.unlearn` (`kit.method.anchors.with_earlier`). hold: earlier forget
    images and targets that the objective and the stop cover too, as in `unlearn`.
    """
    cfg = resolve("default", objective) if config is None else config
    if len(retain) == 0:
        raise ValueError("retain is empty; the oracle needs the remaining data D_r")
    device = model_device(model)
    num_classes = num_classes_of(model, forget_x)
    check_forget_tensors(forget_x, forget_y, num_classes=num_classes, objective=objective,
                         new_labels=new_labels)
    forget_x, forget_y = forget_x.to(device, torch.float32), forget_y.to(device, torch.long)
    earlier_x = check_earlier(earlier_x, forget_x, use_adv=True, method="oracle")
    hold = check_hold(hold, forget_x, num_classes=num_classes)
    new_labels = None if new_labels is None else new_labels.to(device, torch.long)
    torch.manual_seed(seed)
    seconds = {"attack": 0.0, "importance": 0.0, "update": 0.0, "evaluate": 0.0}
    passes = new_passes()
    # anchors are labelled as the method labels its own: true labels, or, when the recipe
    # distils (adv_select="soft"), the softmax of the model as it was before unlearning
    teacher = copy.deepcopy(model).eval() if cfg.adv_select == "soft" else None
    stream = _endless(retain, batch=cfg.adv_batch, seed=seed, device=device, teacher=teacher,
                      temperature=cfg.distil_t)
    t = time.perf_counter()
    with speed_options(cfg, model, device):
        forget_x = as_channels_last(forget_x, cfg.channels_last)
        anchors = lambda: next(stream)  # noqa: E731
        if earlier_x is not None:
            anchors = with_earlier(anchors, model, as_channels_last(earlier_x, cfg.channels_last),
                                   cfg=cfg, seed=seed, passes=passes)
        out = run_updates(model, forget_x, forget_y, objective=objective, new_labels=new_labels,
                          cfg=cfg, anchors=anchors,
                          n_anchors=cfg.per_instance * len(forget_x), importance=True,
                          seconds=seconds, passes=passes, hold=hold)
    seconds["total"] = time.perf_counter() - t
    history = out.pop("history")
    return UnlearnResult(method="oracle", objective=objective, seconds=seconds,
                         attack_success_rate=float("nan"), n_adversarial=0,
                         new_labels=None if new_labels is None else new_labels.cpu().numpy(),
                         config={"method": "oracle", "objective": objective, "seed": seed,
                                 **cfg.as_dict()}, passes=finish_passes(passes),
                         history=history, **out)
