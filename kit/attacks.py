"""Targeted PGD adversarial examples around the forget set (the ADV regulariser).

Cha et al., "Learning to Unlearn: Instance-wise Unlearning for Pre-trained Classifiers",
AAAI 2024, Sec. "Adversarial examples": R targeted adversarial examples per forget
instance, made against the frozen pre-trained model and kept labelled with their target
class, pin the decision boundary while the forget set is pushed across it.

All images live in [0, 1] pixel space (normalisation is the model's first layer).
"""
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

_TINY = 1e-12  # guards per-sample divisions by a zero norm


# --------------------------------------------------------------------------- targets
def draw_targets(labels, num_classes, *, generator=None, exclude=None):
    """Draw one target class per example, uniform over the classes other than its label.

    labels: (N,) long in [0, num_classes). num_classes: C >= 2 (>= 3 with `exclude`).
    generator: torch.Generator (any device) for reproducibility; the draw happens on its
    device (CPU when None, using the global RNG) and is moved to `labels.device`.
    exclude: optional (N,) long in [0, C), one extra class per example to avoid as well
    (e.g. a relabeling target); where exclude[i] == labels[i] only the label is avoided.
    Returns (N,) long, never equal to the label (nor to `exclude`).

    The official L2UL code drew from 0..9 whatever C was and replaced a hit on the label
    by C // 2 (which can be the label itself); this draws exactly uniformly instead.

    >>> t = draw_targets(torch.tensor([0, 1, 2]), 3, generator=torch.Generator().manual_seed(0))
    >>> bool((t != torch.tensor([0, 1, 2])).all())
    True
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    labels = labels.long()
    min_classes = 2 if exclude is None else 3
    if num_classes < min_classes:
        raise ValueError(f"need at least {min_classes} classes to draw a target different from "
                         f"the label{' and from exclude' if exclude is not None else ''}; "
                         f"got num_classes={num_classes}")
    _check_range(labels, num_classes, "labels")
    n = labels.numel()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    y = labels.to(gen_device)
    if exclude is None:
        lo = hi = y
    else:
        exclude = torch.as_tensor(exclude).long()
        if exclude.shape != labels.shape:
            raise ValueError(f"exclude must have the shape of labels {tuple(labels.shape)}, "
                             f"got {tuple(exclude.shape)}")
        _check_range(exclude, num_classes, "exclude")
        e = exclude.to(gen_device)
        lo, hi = torch.minimum(y, e), torch.maximum(y, e)
    n_allowed = num_classes - 1 - (hi != lo).long()  # (N,) number of admissible classes
    # r uniform in [0, n_allowed); then skip over lo and hi (a bijection onto the allowed set)
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    r = torch.minimum((u * n_allowed).floor().long(), n_allowed - 1)
    t = r + (r >= lo).long()
    t = t + ((t >= hi) & (hi != lo)).long()
    return t.to(labels.device)


def _check_range(t, num_classes, name):
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got min {int(t.min())} "
                         f"and max {int(t.max())}")


# --------------------------------------------------------------------------- norms
class Norm(NamedTuple):
    """The three norm-specific pieces of PGD: random start, step, projection of delta."""
    random_start: Callable  # (shape, eps, generator) -> delta on the generator's device
    step: Callable          # (grad (N,...), step_size) -> step to SUBTRACT (targeted attack)
    project: Callable       # (delta (N,...), eps) -> delta inside the eps-ball


def _l2_start(shape, eps, generator):
    # torchattacks PGDL2: Gaussian direction, radius uniform in [0, eps] (not in volume)
    dev = generator.device if generator is not None else torch.device("cpu")
    delta = torch.randn(shape, generator=generator, device=dev)  # (N, C, H, W)
    radius = torch.rand(shape[0], generator=generator, device=dev) * eps  # (N,)
    norms = delta.flatten(1).norm(dim=1).clamp_min(_TINY)
    return delta * (radius / norms).view(-1, *[1] * (len(shape) - 1))


def _l2_step(grad, step_size):
    norms = grad.flatten(1).norm(dim=1).clamp_min(_TINY)  # (N,) per-sample normalisation
    return step_size * grad / norms.view(-1, *[1] * (grad.dim() - 1))


def _l2_project(delta, eps):
    norms = delta.flatten(1).norm(dim=1)  # (N,)
    factor = (eps / norms.clamp_min(_TINY)).clamp(max=1.0)
    return delta * factor.view(-1, *[1] * (delta.dim() - 1))


def _linf_start(shape, eps, generator):
    dev = generator.device if generator is not None else torch.device("cpu")
    return (torch.rand(shape, generator=generator, device=dev) * 2 - 1) * eps


NORMS = {
    "l2": Norm(_l2_start, _l2_step, _l2_project),
    "linf": Norm(_linf_start, lambda g, a: a * g.sign(), lambda d, eps: d.clamp(-eps, eps)),
}


def _get_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {sorted(NORMS)}")
    return NORMS[norm]


# --------------------------------------------------------------------------- PGD
class _eval_mode:
    """Put every submodule in eval mode; restore each one's own flag on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        return False


def _check_images(x):
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float batch (N, ...), got shape {tuple(x.shape)}, "
                         f"dtype {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0, 1] (normalisation belongs inside the model); "
                         f"got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def _pgd_steps(model, x, x_start, targets, *, norm, eps, step_size, steps):
    """Run `steps` targeted PGD steps from x_start around x; the model is already in eval mode."""
    nrm = _get_norm(norm)
    x_adv = x_start.detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        # sum, not mean: each sample's gradient is independent of the batch it sits in
        loss = F.cross_entropy(model(x_adv), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)  # input only: parameter .grad untouched
        x_adv = (x_adv.detach() - nrm.step(grad, step_size)).clamp(0, 1)  # descend CE to target
        x_adv = (x + nrm.project(x_adv - x, eps)).detach()  # stays in [0,1]: convex comb.
    return x_adv


def pgd(model, x, targets, *, norm="l2", eps=4.0, step_size=0.1, steps=100,
        random_start=True, generator=None):
    """Targeted PGD: minimise CE(model(x_adv), targets) with ||x_adv - x|| <= eps, x_adv in [0,1].

    model: classifier taking images in [0, 1]; put in eval mode for the attack and restored
    to its previous modes afterwards; weights and parameter .grad are not touched.
    x: (N, C, H, W) float in [0, 1]. targets: (N,) long.
    norm: "l2" or "linf" (see NORMS). eps: radius in [0, 1] pixel units (the paper: L2 4.0,
    2.0 on UTKFace). step_size: per-step length in the same units (L2: the per-sample
    normalised gradient is scaled to this length; linf: sign step). steps: fixed count, no
    early stop. random_start: start uniformly-in-radius inside the ball (torchattacks PGDL2).
    generator: torch.Generator for the random start (drawn on its device, CPU if None).
    Order of each step as in the official code: step, clip to [0,1], project onto the ball.
    Returns x_adv (N, C, H, W) on x's device.
    """
    _check_images(x)
    nrm = _get_norm(norm)
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"eps, step_size and steps must be >= 0, got {eps}, {step_size}, {steps}")
    device = next(model.parameters()).device
    x_dev = x.detach().to(device)
    targets = torch.as_tensor(targets).long().to(device)
    if targets.shape != x.shape[:1]:
        raise ValueError(f"targets must have shape ({x.shape[0]},), got {tuple(targets.shape)}")
    x_start = x_dev
    if random_start:
        x_start = (x_dev + nrm.random_start(x.shape, eps, generator).to(device)).clamp(0, 1)
    with _eval_mode(model):
        x_adv = _pgd_steps(model, x_dev, x_start, targets, norm=norm, eps=eps,
                           step_size=step_size, steps=steps)
    return x_adv.to(x.device)


# --------------------------------------------------------------------------- the set
def _select_keep(s):
    return s.images, s.targets


def _select_successful(s):
    return s.images[s.success], s.targets[s.success]


def _select_predicted(s):
    keep = s.predicted != s.source_labels  # predicted as the true label would fight forgetting
    return s.images[keep], s.predicted[keep]


def _select_predicted_all(s):
    return s.images, s.predicted


SELECT_MODES = {
    "keep": _select_keep,              # official: every example, labelled with its target
    "successful": _select_successful,  # only examples the model classifies as their target
    "predicted": _select_predicted,    # every example labelled with the model's prediction,
                                       # minus those predicted as the source's true label
    "predicted_all": _select_predicted_all,  # every example with the model's prediction, also
                                             # the true label: anchors class y around x_f, so
                                             # unlearning must carve a hole no wider than eps
}


@dataclass
class AdversarialSet:
    """Adversarial examples around a forget set; row i was made from x[source[i]].

    images (N, C, H, W) in [0, 1]; targets (N,) long; source (N,) long index into the forget
    set; source_labels (N,) long true label of the source; predicted (N,) long model
    prediction on the final image (eval mode); success (N,) bool, predicted == target.
    """
    images: torch.Tensor
    targets: torch.Tensor
    source: torch.Tensor
    source_labels: torch.Tensor
    predicted: torch.Tensor
    success: torch.Tensor

    @property
    def success_rate(self):
        """Fraction in [0, 1] of examples classified as their target (nan for an empty set)."""
        return self.success.float().mean().item() if len(self) else float("nan")

    def __len__(self):
        return self.targets.numel()

    def select(self, mode="keep"):
        """(images, labels) for training; mode in SELECT_MODES ("keep" is the paper's)."""
        if mode not in SELECT_MODES:
            raise ValueError(f"unknown select mode {mode!r}; valid modes: {sorted(SELECT_MODES)}")
        return SELECT_MODES[mode](self)


def make_adversarial(model, x, y, *, num_classes, per_instance=20, norm="l2", eps=4.0,
                     step_size=0.1, steps=100, random_start=True, chunk_size=2048, seed=0,
                     exclude=None):
    """R targeted adversarial examples per forget instance against the frozen model (ADV).

    x: (k, C, H, W) forget images in [0, 1]; y: (k,) their labels. num_classes: C.
    per_instance: R (paper: 20 on CIFAR-10, 200 on CIFAR-100/ImageNet); the rows are
    instance-major (x[0] R times, then x[1], ...). Attack arguments as in `pgd`.
    chunk_size: examples attacked at once (bounds memory only; results do not depend on it).
    seed: targets and random starts are all drawn up front from one CPU generator, so the
    result is reproducible across chunk sizes and devices (up to float round-off).
    exclude: optional (k,) long, one extra class per instance never used as a target (e.g.
    the relabeling target y').
    Returns an AdversarialSet with tensors on x's device.
    """
    _check_images(x)
    if x.shape[0] == 0:
        raise ValueError("the forget set x is empty; pass at least one image")
    y = torch.as_tensor(y).long()
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if per_instance < 1 or chunk_size < 1:
        raise ValueError(f"per_instance and chunk_size must be >= 1, "
                         f"got {per_instance} and {chunk_size}")
    nrm = _get_norm(norm)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)

    source = torch.arange(x.shape[0]).repeat_interleave(per_instance)  # (N,)
    source_labels = y.cpu()[source]
    ex = None if exclude is None else torch.as_tensor(exclude).long().cpu()[source]
    targets = draw_targets(source_labels, num_classes, generator=gen, exclude=ex)  # (N,)
    n = source.numel()
    if random_start:
        start_delta = nrm.random_start((n, *x.shape[1:]), eps, gen)  # (N, C, H, W) on CPU
    images, predicted = [], []
    with _eval_mode(model):
        for lo in range(0, n, chunk_size):
            idx = slice(lo, lo + chunk_size)
            x0 = x.detach()[source[idx].to(x.device)].to(device)  # (n_chunk, C, H, W)
            t = targets[idx].to(device)
            x_start = (x0 + start_delta[idx].to(device)).clamp(0, 1) if random_start else x0
            x_adv = _pgd_steps(model, x0, x_start, t, norm=norm, eps=eps,
                               step_size=step_size, steps=steps)
            with torch.no_grad():
                predicted.append(model(x_adv).argmax(dim=1).cpu())
            images.append(x_adv.to(x.device))
    predicted = torch.cat(predicted)
    out = lambda t: t.to(x.device)  # noqa: E731
    return AdversarialSet(images=torch.cat(images), targets=out(targets), source=out(source),
                          source_labels=out(source_labels), predicted=out(predicted),
                          success=out(predicted == targets))
