"""Targeted PGD adversarial examples around the forget set (the ADV regulariser), and the
kit's one PGD loop (`run_pgd`: targeted, untargeted, FGSM) that the baselines use too.

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

from ..core.request import draw_targets
from ..core.utils import check_name, eval_mode, progress

_TINY = 1e-12  # guards per-sample divisions by a zero norm


# --------------------------------------------------------------------------- norms
class Norm(NamedTuple):
    """The three norm-specific pieces of PGD: random start, step, projection of delta."""
    random_start: Callable  # (shape, eps, generator) -> delta on the generator's device
    step: Callable          # (grad (N,...), step_size) -> step along the gradient
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


# --------------------------------------------------------------------------- PGD
def _check_images(x):
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float batch (N, ...), got shape {tuple(x.shape)}, "
                         f"dtype {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"images must lie in [0, 1] (normalisation belongs inside the model); "
                         f"got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def run_pgd(model, x, labels, *, norm, eps, step_size, steps, targeted=True,
            start_delta=None, objective=None):
    """The one PGD loop of the kit: `steps` steps around x; the model is already in eval mode.

    x: (N, C, H, W) in [0, 1] on the model's device; labels: (N,) long. targeted: descend
    CE(model(x_adv), labels) towards the target labels (the ADV regulariser); else ascend CE
    of the true labels (Madry et al., ICLR 2018). norm: a key of NORMS; eps, step_size: in
    [0, 1] pixel units. start_delta: (N, C, H, W) random start (drawn by the caller, e.g.
    `NORMS[norm].random_start`) or None to start at x. Order of each step as in the official
    code: step, clip to [0,1], project onto the ball. Parameter .grad is not touched.
    objective: x_adv -> a scalar summed over the batch, descended (targeted) or ascended in
    place of CE (labels unused; e.g. `kit.method.mining`'s disagreement with a frozen copy).
    """
    nrm = check_name(norm, NORMS, "norm")
    x = x.detach()
    x_adv = (x if start_delta is None else (x + start_delta).clamp(0, 1)).detach()  # own leaf
    for _ in range(steps):
        x_adv.requires_grad_(True)
        # sum, not mean: each sample's gradient is independent of the batch it sits in
        loss = (F.cross_entropy(model(x_adv), labels, reduction="sum") if objective is None
                else objective(x_adv))
        (grad,) = torch.autograd.grad(loss, x_adv)  # input only: parameter .grad untouched
        move = nrm.step(grad, step_size)
        x_adv = (x_adv.detach() - move if targeted else x_adv.detach() + move).clamp(0, 1)
        x_adv = (x + nrm.project(x_adv - x, eps)).detach()  # stays in [0,1]: convex comb.
    return x_adv


def fgsm(model, x, labels, *, eps, targeted=False):
    """FGSM (Goodfellow et al., ICLR 2015): one L-inf sign step of size eps (pixel units),
    clipped to [0, 1]; untargeted unless `targeted`. `run_pgd` with one step, no random
    start; the model is already in eval mode.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
    >>> with torch.no_grad(): _ = m[1].weight.copy_(torch.tensor([[1., -2, .5, 0], [0, 0, 0, 0]]))
    >>> fgsm(m, torch.full((1, 1, 2, 2), 0.5), torch.tensor([0]), eps=0.25).flatten().tolist()
    [0.25, 0.75, 0.25, 0.5]
    """
    return run_pgd(model, x, labels, norm="linf", eps=eps, step_size=eps, steps=1,
                   targeted=targeted)


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
    nrm = check_name(norm, NORMS, "norm")
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"eps, step_size and steps must be >= 0, got {eps}, {step_size}, {steps}")
    device = next(model.parameters()).device
    x_dev = x.detach().to(device)
    targets = torch.as_tensor(targets).long().to(device)
    if targets.shape != x.shape[:1]:
        raise ValueError(f"targets must have shape ({x.shape[0]},), got {tuple(targets.shape)}")
    delta = nrm.random_start(x.shape, eps, generator).to(device) if random_start else None
    with eval_mode(model):
        x_adv = run_pgd(model, x_dev, targets, norm=norm, eps=eps, step_size=step_size,
                        steps=steps, start_delta=delta)
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
        return check_name(mode, SELECT_MODES, "select mode")(self)


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
    nrm = check_name(norm, NORMS, "norm")
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
    with eval_mode(model):
        for lo in progress(range(0, n, chunk_size), desc="attack", unit="chunk", leave=False,
                           disable=n <= chunk_size):
            idx = slice(lo, lo + chunk_size)
            x0 = x.detach()[source[idx].to(x.device)].to(device)  # (n_chunk, C, H, W)
            t = targets[idx].to(device)
            delta = start_delta[idx].to(device) if random_start else None
            x_adv = run_pgd(model, x0, t, norm=norm, eps=eps, step_size=step_size,
                            steps=steps, start_delta=delta)
            with torch.no_grad():
                predicted.append(model(x_adv).argmax(dim=1).cpu())
            images.append(x_adv.to(x.device))
    predicted = torch.cat(predicted)
    out = lambda t: t.to(x.device)  # noqa: E731
    return AdversarialSet(images=torch.cat(images), targets=out(targets), source=out(source),
                          source_labels=out(source_labels), predicted=out(predicted),
                          success=out(predicted == targets))
