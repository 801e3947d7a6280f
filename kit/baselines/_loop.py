"""The loop pieces the baselines share: optimiser and step, batch cyclers, the masked
update, the fine-tune loop of the D_r-free baselines and the paper's stop rule.

Models are in train mode during updates (BatchNorm batch statistics, as in the baselines'
code) and in eval mode whenever the forget set is evaluated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..core.utils import eval_mode, progress

DEFAULT_MAX_STEPS = 600  # the step budget of the paper's method in the kit (CHAIN_BASE)


def masked_step(optimizer: torch.optim.Optimizer, params, masks) -> None:
    """`optimizer.step()` after which every weight outside its mask is bit-identical.

    params: the tensors the optimizer updates; masks: one bool tensor per parameter, same
    shape (True: the weight may move). Masking the gradient alone is not enough: SGD weight
    decay adds wd * theta to a zero gradient, and momentum (or Adam's moments) keeps moving
    a weight whose gradient is now zero. So the gradient is zeroed outside the mask (clean
    optimizer state), the frozen values are kept, the step is taken, and the frozen values
    are written back with their momentum buffer cleared: exact for any optimizer.
    """
    params, masks = list(params), list(masks)
    if len(params) != len(masks):
        raise ValueError(f"got {len(params)} parameters but {len(masks)} masks; pass one mask "
                         f"per parameter")
    for p, m in zip(params, masks):
        if m.shape != p.shape or m.dtype != torch.bool:
            raise ValueError(f"each mask must be a bool tensor of its parameter's shape; got "
                             f"{m.dtype} {tuple(m.shape)} for a parameter of {tuple(p.shape)}")
    with torch.no_grad():
        kept = []
        for p, m in zip(params, masks):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)
            kept.append(p.detach().clone())
        optimizer.step()
        for p, m, old in zip(params, masks, kept):
            p.copy_(torch.where(m, p, old))
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.masked_fill_(~m, 0.0)


def sgd(model, lr, momentum, weight_decay):
    """SGD over the model's trainable parameters."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                           momentum=momentum, weight_decay=weight_decay)


def step(opt, loss) -> None:
    """One optimiser step on `loss` (gradients cleared first)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def retain_batches(retain: Dataset, *, batch_size: int, gen: torch.Generator,
                   bar: bool = True):
    """One shuffled pass over D_r, in batches; a progress bar over the pass unless `bar`
    is False (`kit.core.utils.progress`, silenced by KIT_QUIET=1)."""
    loader = DataLoader(retain, batch_size=batch_size, shuffle=True, generator=gen)
    return progress(loader, disable=not bar, desc="D_r pass", unit="batch", leave=False)


def index_batches(n: int, *, batch_size: int, gen: torch.Generator):
    """One shuffled pass over the indices 0..n-1, in batches (the last may be smaller)."""
    return torch.randperm(n, generator=gen).split(batch_size)


def cycle_batches(n: int, *, batch_size: int, gen: torch.Generator):
    """Endless `index_batches` passes (reshuffled each pass); draws from `gen` only when a
    new pass starts, so its first passes equal the same number of `index_batches` calls."""
    while True:
        yield from index_batches(n, batch_size=batch_size, gen=gen)


def paired_batches(retain: Dataset, n_forget: int, *, epochs: int, batch_size: int,
                   forget_batch: int, gen: torch.Generator, device,
                   stop: StopRule | None = None, model=None):
    """`epochs` shuffled passes over D_r, each batch paired with the next batch of forget
    indices 0..n_forget-1 (cycled beside it, as Kurmanji et al.'s train_negrad): yields
    (x_r, y_r, forget index batch) on `device`.

    stop: a StopRule checked on `model` before every batch: passes go on (reshuffled) until
    it is met or its max_steps batches are out, `epochs` unused; a stopped run is a prefix
    of the run without the rule.
    """
    forget = cycle_batches(n_forget, batch_size=forget_batch, gen=gen)
    total = epochs * math.ceil(len(retain) / batch_size) if stop is None else stop.max_steps
    steps = 0
    with progress(total=total, desc="baseline", unit="step") as bar:  # closed on early stop
        while steps < total:
            for x, y in retain_batches(retain, batch_size=batch_size, gen=gen, bar=False):
                if steps >= total or (stop is not None and stop.met(model)):
                    return
                yield x.to(device), y.to(device), next(forget).to(device)
                steps += 1
                bar.update()


def objective_met(model, forget_x, forget_y) -> bool:
    """True when no forget instance is predicted as its label (D_f accuracy 0), in eval mode
    (each submodule's mode restored). Non-finite logits never count as forgotten."""
    with eval_mode(model), torch.no_grad():
        logits = model(forget_x)
    return bool(torch.isfinite(logits).all()) and not bool((logits.argmax(1) == forget_y).any())


@dataclass(frozen=True)
class StopRule:
    """The paper's stop rule (`kit.method.engine.run_updates`) for a D_r-free baseline:
    stop as soon as D_f accuracy is 0, evaluated in eval mode before the first and after
    every optimiser step, and never take more than `max_steps` (>= 1) steps."""
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    max_steps: int

    def met(self, model) -> bool:
        return objective_met(model, self.forget_x, self.forget_y)


def stop_rule(forget_x, forget_y, *, stop_at_objective: bool,
              max_steps: int | None) -> StopRule | None:
    """The StopRule asked for by a D_r-free baseline's hyper-parameters, or None.

    stop_at_objective: False keeps the baseline's fixed `epochs`; True stops as soon as D_f
    accuracy is 0 (eval mode, checked after every step), `epochs` unused. max_steps: the
    step budget (>= 1) of the rule, None for DEFAULT_MAX_STEPS; refused without the rule.
    Called before any compute, so bad values fail fast.
    """
    if not stop_at_objective:
        if max_steps is not None:
            raise ValueError(f"max_steps={max_steps} is the budget of the stop rule; pass "
                             f"stop_at_objective=True with it (or leave max_steps=None)")
        return None
    budget = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"max_steps must be a whole number >= 1 (or None for "
                         f"{DEFAULT_MAX_STEPS}), got {max_steps!r}")
    return StopRule(forget_x, forget_y, budget)


def fit(model, x, labels, *, epochs: int, batch_size: int, lr: float, momentum: float,
        weight_decay: float, gen: torch.Generator, stop: StopRule | None = None) -> int:
    """SGD with CE on (x, labels) in shuffled batches, train mode; returns the steps taken.

    The fine-tune loop of the D_r-free baselines (x: D_f, or D_f with adversarial points).
    stop None: `epochs` passes. A StopRule: passes go on (reshuffled) until it is met or
    its max_steps are taken, `epochs` unused; the batches are those of the fixed-epoch run,
    so a stopped run is a prefix of it.
    """
    opt = sgd(model, lr, momentum, weight_decay)
    batches = cycle_batches(len(x), batch_size=batch_size, gen=gen)
    budget = epochs * math.ceil(len(x) / batch_size) if stop is None else stop.max_steps
    model.train()
    steps = 0
    with progress(total=budget, desc="baseline", unit="step") as bar:
        while steps < budget and not (stop is not None and stop.met(model)):
            bi = next(batches).to(labels.device)
            step(opt, F.cross_entropy(model(x[bi]), labels[bi]))
            steps += 1
            bar.update()
    return steps
