"""The unlearning loop of Cha et al. (AAAI 2024): NegGrad, ADV, IMP and ADV+IMP.

`unlearn(model, forget_x, forget_y)` receives only the pre-trained model and the forget
set: there is no parameter through which remaining or test data could reach it. It
modifies the model in place and returns an `UnlearnResult`.

Per step: one forget batch (cycled in order; every instance enters the loss once per pass
over D_f, whatever k) and, with ADV, one batch of anchors (adversarial examples, cycled and
reshuffled, plus images inverted from the frozen model with `synth_anchors`, forget images
under random transforms with `aug_anchors`, images mined during the run with `mine_anchors`;
`kit.method.anchors`); loss = (n_f * L_obj + n_a * L_anchor) / (n_f + n_a) + lam * L_imp
(the official code weights the two terms by their share of the joint batch). After every
step the instances not yet done are checked in eval mode (one full pass confirms before the
run stops); the run stops as soon as the objective is reached (accuracy 0 % for
"misclassify", agreement 100 % with the new labels for "relabel"), after `polish_steps`
more, or when the step budget is spent.
With `robust=True` the objective covers the neighbourhood views of each forget image too;
with `hold` (continual unlearning) the forget images of earlier requests as well.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..core.models import num_classes_of  # noqa: F401 (also the engine's API)
from ..core.predict import soft_labels  # noqa: F401 (also the engine's API)
from ..core.request import check_forget_tensors
from ..core.utils import (as_channels_last, check_name, eval_mode, model_device, progress,
                          train_mode)
from ..core.views import with_views
from .anchors import (AnchorSource, BatchCycler, check_earlier,  # noqa: F401 (engine API)
                      check_hold, make_anchors, with_earlier)
from .config import METHODS, UnlearnConfig
from .importance import compute_importance, penalty_weights, update_masks
from .losses import OBJECTIVE_FORMS, FeatureDistil, anchor_term, importance_penalty, snapshot
from .projection import Projector
from .recipes import resolve
from .result import UnlearnResult, finish_passes, new_passes
from .scale import logit_layer
from .speed import speed_options
from .stopping import (Diverged, FirstMet, check_finite,  # noqa: F401 (Diverged: API)
                       history_rows, objective_met, polish)
from .synthesis import check_invertible


def run_updates(model: torch.nn.Module, forget_x, forget_y, *, objective: str,
                new_labels, cfg: UnlearnConfig, anchors: AnchorSource | None, n_anchors: int,
                importance: bool, seconds: dict, passes: dict, hold=None) -> dict:
    """The update loop shared by the engine and the D_r oracle (kit.baselines.oracle).

    anchors: () -> (x, y) batch for the regulariser term, or None (objective only).
    importance: add the IMP penalty measured on D_f at the current weights.
    seconds / passes: per-phase counters, updated in place (see `new_passes`).
    Returns {reached, steps, flip_step, settled_step, done, final_pred, history}; `steps` is
    the step whose state is returned (with polish_steps the costs count all). With cfg.robust
    the objective and the stop cover every view of each forget image (`kit.core.views`); the
    per-instance arrays are about the images themselves, `reached` covers the views too.
    hold: (images, targets) checked by `check_hold`, earlier forget images that must stay
    unlearned (misclassify: targets are their labels; relabel: their new labels): a batch of
    forget_batch of them joins every forget batch (their own cycle) and the stop covers them
    (`reached` too); not in the importance, the per-instance arrays or the release.
    """
    device, n_images = model_device(model), len(forget_x)
    if cfg.robust:                         # images first, then their views: [:n_images]
        forget_x, (forget_y, new_labels) = with_views(forget_x, forget_y, new_labels)
    loss_obj = OBJECTIVE_FORMS[(objective, cfg.loss)]
    obj_kw = dict(active_only=cfg.active_only, **({"margin": cfg.margin} if cfg.loss == "margin"
                                                  else {}))
    target = forget_y if objective == "misclassify" else new_labels
    tail_kw = {**obj_kw, "active_only": True}   # past cfg.active_from (if set)
    anchor = weights = masks = None
    feat = FeatureDistil(model, cfg.feat_distil, forget_x) if cfg.feat_distil and anchors else None
    passes["update"] += 1 / 3 if feat else 0   # its forward pass that finds the logit layer
    if importance or cfg.update_share < 1:
        t = time.perf_counter()
        imp = compute_importance(model, forget_x, y=forget_y, estimator=cfg.estimator,
                                 batch_size=cfg.importance_batch)
        if importance:
            weights, anchor = penalty_weights(imp), snapshot(model)
        if cfg.update_share < 1:           # only the weights most important for D_f move
            named = dict(model.named_parameters())
            masks = [(named[n], m) for n, m in update_masks(imp, cfg.update_share).items()]
        seconds["importance"] = time.perf_counter() - t
        passes["importance"] += len(forget_x)
    n_now, hold_batches = len(forget_x), None   # D_f (and its views), then the held images
    if hold is not None:
        forget_x = as_channels_last(torch.cat([forget_x, hold[0]]), cfg.channels_last)
        if objective == "misclassify":
            forget_y = target = torch.cat([forget_y, hold[1]])
        else:
            forget_y = torch.cat([forget_y, torch.full_like(hold[1], -1)])
            new_labels = target = torch.cat([new_labels, hold[1]])
        hold_batches = BatchCycler(len(hold[0]), cfg.forget_batch, None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay) if cfg.optimizer == "sgd"
           else torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    forget_batches = BatchCycler(n_now, cfg.forget_batch, None)
    budget = cfg.budget_steps(n_forget=n_now, n_adv=n_anchors)
    lam, k = cfg.lam_at(n_images), len(forget_x)   # lam falls with the forget images, if set
    project = Projector(params, cfg.project, opt, ema=cfg.project_ema)

    def update(done_steps: int) -> torch.Tensor:
        """One optimiser step after `done_steps`; returns the loss (on the device: no host
        synchronisation). Past cfg.active_from the objective averages over the pending
        instances only."""
        train_mode(model, cfg.bn_mode)
        fi = forget_batches.next().to(device)
        if hold_batches is not None:
            fi = torch.cat([fi, n_now + hold_batches.next().to(device)])
        logits = model(forget_x[fi])
        l_obj = loss_obj(logits, target[fi],
                         **(tail_kw if 0 < cfg.active_from <= done_steps else obj_kw))
        loss, n_f, parts = l_obj, len(fi), None
        passes["update"] += n_f
        if anchors is not None:
            if 0 < cfg.aug_release_from == done_steps and hasattr(anchors, "release"):
                anchors.release(~met_at(evaluate(done_steps))[:n_now])  # a pass, counted
            ax, ay = anchors()
            n_a, l_adv, kinds = len(ay), 0.0, None   # 0 once a release has left none
            if n_a:          # with feat_distil: + the features' term; a term per kind: kinds
                sizes = getattr(anchors, "sizes", [n_a])       # a source without kinds: one
                l_adv, kinds = anchor_term(model, ax, ay, temperature=cfg.distil_t, feat=feat,
                                           sizes=sizes if cfg.project == "kinds" else None)
            passes["update"] += n_a + (n_a / 3 if feat else 0)   # the frozen copy's forward
            loss = ((n_f * l_obj + n_a * l_adv) / (n_f + n_a) if cfg.weighting == "share"
                    else l_obj + l_adv)
            if n_a and cfg.project != "off":   # the terms apart (kit.method.projection)
                parts = ((n_f * l_obj / (n_f + n_a), n_a * l_adv / (n_f + n_a))
                         if cfg.weighting == "share" else (l_obj, l_adv))
                if kinds:                      # its share of the term, kind by kind
                    parts = (parts[0], [n_a * t / (n_f + n_a) if cfg.weighting == "share"
                                        else t for t in kinds])
        pen = None if weights is None else importance_penalty(model, anchor, weights, lam=lam)
        loss = loss if pen is None else loss + pen
        opt.zero_grad(set_to_none=True)
        if parts:
            project(*parts, pen)
        else:
            loss.backward()
        for p, m in masks or ():
            if p.grad is not None:
                p.grad.mul_(m)
        opt.step()
        return loss.detach()

    def logits_on(idx=None):
        """Logits on D_f (or on the instances `idx`), eval mode, timed and counted."""
        t = time.perf_counter()
        x = forget_x if idx is None else forget_x[idx]
        with eval_mode(model), torch.inference_mode():
            logits = model(x)
        seconds["evaluate"] += time.perf_counter() - t
        passes["evaluate"] += len(x) / 3
        return logits

    def evaluate(step, idx=None):
        """Predictions on D_f (or on `idx`), checked finite (one host synchronisation)."""
        logits = logits_on(idx)
        # NaN weights give NaN logits, whose argmax could pass for "forgotten"
        check_finite(float(logits.abs().max()), "forget-set logits", step)
        return logits.argmax(1)

    def met_at(pred, idx=slice(None)):
        new = None if new_labels is None else new_labels[idx]
        return objective_met(pred, forget_y[idx], new, objective)

    def all_met(met: torch.Tensor) -> torch.Tensor:
        """Done: every row meets the objective; with cfg.view_tolerance, all but that share
        of the robust views (rows n_images to n_now) do (a tensor: reading it syncs)."""
        if not cfg.view_tolerance:
            return met.all()
        left = (~met[n_images:n_now]).float().mean()
        return met[:n_images].all() & met[n_now:].all() & (left <= cfg.view_tolerance)

    every = cfg.check_every or (1 if device.type == "cpu" else 8)
    pred = evaluate(0)
    met = met_at(pred)
    flip_step = torch.where(met, 0, -1)
    settled = torch.where(met, 0, -1)
    history = [{"step": 0, "done": float(met.float().mean())}]
    step, last_full = 0, True
    # the bar (silenced by KIT_QUIET=1) is closed on errors too
    with progress(total=budget, desc="unlearn", unit="step", leave=False) as bar:
        if every == 1:
            met, flip_step, settled = met.cpu(), flip_step.cpu(), settled.cpu()
        while every == 1 and not bool(all_met(met)) and step < budget:
            t = time.perf_counter()
            loss_value = float(update(step))
            step += 1
            check_finite(loss_value, "loss", step)
            seconds["update"] += time.perf_counter() - t
            # only the instances not yet done, then one full pass to confirm (one may flip
            # back): the run stops exactly at the first step that meets the objective, cheaply
            pending = torch.nonzero(~met).squeeze(1)
            idx = pending.to(device)
            pred[idx] = evaluate(step, idx)
            newly = pending[met_at(pred[idx], idx).cpu()]
            flip_step[newly[flip_step[newly] < 0]] = step
            settled[newly] = step
            met[newly] = True
            last_full = len(pending) == k
            if bool(all_met(met)) and not last_full:
                pred = evaluate(step)
                met, last_full = met_at(pred).cpu(), True
            history.append({"step": step, "done": float(met.float().mean()),
                            "loss": loss_value})
            bar.update()
            bar.set_postfix(done=f"{history[-1]['done']:.0%}", loss=f"{loss_value:.3g}",
                            refresh=False)
        # every > 1: the whole D_f is predicted after each step and the per-instance steps are
        # kept on the device; the host reads them (stop? finite?) every `every` steps. The stop
        # stays exact: `first` keeps the state of the first step that met the objective and
        # puts it back (kit.method.stopping); later steps count in costs only
        losses, dones, shown = [], [], 0
        finite = torch.ones((), dtype=torch.bool, device=device)
        first = FirstMet(model, pred, flip_step, settled) if every > 1 else None
        while first is not None and not bool(all_met(met)) and int(first.step) < 0 \
                and step < budget:
            for _ in range(min(every, budget - step)):
                t = time.perf_counter()
                loss = update(step)
                step += 1
                seconds["update"] += time.perf_counter() - t
                logits = logits_on()
                # steps past the first that met the objective are undone: their values moot
                finite &= (first.step >= 0) | (torch.isfinite(loss) & torch.isfinite(logits).all())
                pred = logits.argmax(1)
                now = met_at(pred)
                flip_step = torch.where(now & (flip_step < 0), step, flip_step)
                settled = torch.where(now & ~met, step, settled)
                met = now
                first.see(all_met(now), step, pred, flip_step, settled)
                losses.append(loss)
                dones.append(now.float().mean())
            if not bool(finite):           # read with the stop test: once per `every` steps
                check_finite(float("nan"), f"loss or the forget-set logits (checked every "
                             f"{every} steps)", step)
            bar.update(len(losses) - shown)
            shown = len(losses)
        if first is not None and int(first.step) >= 0:   # back to that step
            step = int(first.step)
            pred, flip_step, settled = first.restore()
            met = met_at(pred)
            losses, dones = losses[:step], dones[:step]   # this path starts at step 0
        if losses:
            history += history_rows(0, losses, dones)
        met, flip_step, settled = met.cpu(), flip_step.cpu(), settled.cpu()
        if cfg.polish_steps and bool(all_met(met)):
            step, pred = polish(model, step, pred, cfg.polish_steps, history, seconds=seconds,
                                update=update, logits_on=logits_on, met_at=met_at,
                                all_met=all_met)
    if not last_full:                      # budget spent: the final state of every instance
        pred = evaluate(step)
        met = met_at(pred).cpu()
    settled[~met] = -1
    model.eval()
    per_image = slice(0, n_images)
    return dict(reached=bool(all_met(met)), steps=step, flip_step=flip_step[per_image].numpy(),
                settled_step=settled[per_image].numpy(), done=met[per_image].numpy(),
                final_pred=pred[per_image].cpu().numpy(), history=history)


def unlearn(model: torch.nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, *,
            objective: str = "misclassify", new_labels: torch.Tensor | None = None,
            method: str = "adv+imp", config: UnlearnConfig | None = None,
            seed: int = 0, earlier_x: torch.Tensor | None = None, hold=None) -> UnlearnResult:
    """Unlearn the forget set (forget_x in [0,1], forget_y labels) from `model`, in place.

    objective: "misclassify" (accuracy on D_f -> 0) or "relabel" (predict `new_labels`).
    method: "neggrad", "adv", "imp" or "adv+imp" (see METHODS).
    config: the resolved hyper-parameters (`kit.method.recipes.resolve`); None resolves the
        "default" recipe for `objective`.
    seed: seeds the attack's targets and starts, and the anchor order.
    earlier_x: continual unlearning: the forget images of earlier requests, to stay
        forgotten; with ADV they join every anchor batch, labelled by the model before this
        request (`kit.method.anchors.with_earlier`). Methods without ADV refuse them.
    hold: continual unlearning: (images, targets) of earlier requests that the objective and
        the stopping rule cover too (misclassify: targets are their labels, to stay
        misclassified; relabel: their new labels, to keep), any method (`run_updates`).
    Only the model and the forget set (and earlier forget sets) are used: no remaining or
    test data.
    Raises ValueError on bad input (before any compute) and `Diverged` when the loss or the
    weights stop being finite.
    """
    use = check_name(method, METHODS, "method")
    cfg = resolve("default", objective) if config is None else config
    if not isinstance(cfg, UnlearnConfig):
        raise ValueError(f"config must be an UnlearnConfig (kit.method.recipes.resolve), got "
                         f"{type(cfg).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    device = model_device(model)
    forget_y = forget_y if isinstance(forget_y, torch.Tensor) else torch.as_tensor(forget_y)
    if new_labels is not None and not isinstance(new_labels, torch.Tensor):
        new_labels = torch.as_tensor(new_labels)
    num_classes = num_classes_of(model, forget_x) if isinstance(forget_x, torch.Tensor) else 0
    check_forget_tensors(forget_x, forget_y, num_classes=num_classes, objective=objective,
                         new_labels=new_labels)
    if cfg.synth_anchors and use["adv"]:
        check_invertible(model)
    if cfg.feat_distil and use["adv"]:     # its input is the features feat_distil holds
        logit_layer(model, forget_x, fix="feat_distil=0")
    forget_x = forget_x.to(device, torch.float32)
    forget_y = forget_y.to(device, torch.long)
    earlier_x = check_earlier(earlier_x, forget_x, use_adv=use["adv"], method=method)
    hold = check_hold(hold, forget_x, num_classes=num_classes)
    if new_labels is not None:
        new_labels = new_labels.to(device, torch.long)
    seconds = {"attack": 0.0, "importance": 0.0, "update": 0.0, "evaluate": 0.0}
    passes = new_passes()
    torch.manual_seed(seed)

    with speed_options(cfg, model, device):
        forget_x = as_channels_last(forget_x, cfg.channels_last)
        if earlier_x is not None:
            earlier_x = as_channels_last(earlier_x, cfg.channels_last)
        return _unlearn(model, forget_x, forget_y, objective=objective, new_labels=new_labels,
                        method=method, use=use, cfg=cfg, seed=seed, num_classes=num_classes,
                        seconds=seconds, passes=passes, earlier_x=earlier_x, hold=hold)


def _unlearn(model, forget_x, forget_y, *, objective, new_labels, method, use, cfg, seed,
             num_classes, seconds, passes, earlier_x=None, hold=None) -> UnlearnResult:
    """`unlearn` after validation, inside its speed options: anchors, then the updates."""
    anchors, n_adv, success_rate = None, 0, float("nan")
    if use["adv"]:
        exclude = new_labels if objective == "relabel" and cfg.adv_exclude_new_label else None
        anchors, n_adv, success_rate = make_anchors(
            model, forget_x, forget_y, cfg=cfg, num_classes=num_classes, seed=seed,
            exclude=exclude, seconds=seconds, passes=passes)
        if earlier_x is not None:
            t = time.perf_counter()
            anchors = with_earlier(anchors, model, earlier_x, cfg=cfg, seed=seed,
                                   passes=passes)
            seconds["attack"] += time.perf_counter() - t

    out = run_updates(model, forget_x, forget_y, objective=objective, new_labels=new_labels,
                      cfg=cfg, anchors=anchors, n_anchors=n_adv, importance=use["imp"],
                      seconds=seconds, passes=passes, hold=hold)
    seconds["total"] = sum(seconds.values())
    history = out.pop("history")
    return UnlearnResult(
        method=method, objective=objective, seconds=seconds, attack_success_rate=success_rate,
        n_adversarial=n_adv, new_labels=None if new_labels is None else new_labels.cpu().numpy(),
        config={"method": method, "objective": objective, "seed": seed, **cfg.as_dict()},
        passes=finish_passes(passes), history=history, **out)

