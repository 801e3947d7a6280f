"""Loss terms of instance-wise unlearning: the two objectives, ADV and the IMP penalty.

Cha et al., AAAI 2024: L = L_mc (or L_rl) + L_adv + lambda * L_imp, with
L_mc = -CE(f(x_f), y_f), L_rl = CE(f(x_f), y'), L_adv = CE(f(x_adv), y_adv) and
L_imp = sum_i w_i (theta_i - theta*_i)^2 / 2.
"""
import copy

import torch
import torch.nn.functional as F

from .scale import logit_layer


def _masked_mean_ce(logits, labels, active):
    # (N, K), (N,), (N,) bool. Exactly 0, still attached to the graph, when nothing is active.
    if not active.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[active], labels[active])


def misclassification_loss(logits, labels, *, active_only=False):
    """L_mc = -CE(logits, labels), mean over the batch (gradient ascent on D_f, NegGrad).

    logits: (N, K) raw scores; labels: (N,) long true labels.
    active_only: average only over instances still predicted as their label, so an
    instance stops being pushed once misclassified (0 when none is left).
    """
    active = logits.argmax(dim=1) == labels  # (N,) still predicted as the label
    if not active_only:
        active = torch.ones_like(active)
    return -_masked_mean_ce(logits, labels, active)


def relabel_loss(logits, new_labels, *, active_only=False):
    """L_rl = CE(logits, new_labels), mean over the batch (the paper's relabeling objective).

    new_labels: (N,) long requested labels y' != y. active_only: average only over instances
    not yet predicted as their new label (0 when all are).
    """
    active = logits.argmax(dim=1) != new_labels  # (N,) not yet predicted as the new label
    if not active_only:
        active = torch.ones_like(active)
    return _masked_mean_ce(logits, new_labels, active)


def adversarial_loss(logits, targets, *, temperature=1.0):
    """L_adv = CE(logits, targets), mean: keeps adversarial examples at their target class.

    targets: (N,) long labels, or (N, K) probabilities (distillation). With probabilities
    and temperature T != 1 the term is T^2 CE(logits / T, targets), the targets being the
    teacher's softmax at the same T (Hinton et al. 2015: T^2 keeps the gradient's scale).
    """
    if temperature != 1.0 and targets.is_floating_point():
        return temperature ** 2 * F.cross_entropy(logits / temperature, targets)
    return F.cross_entropy(logits, targets)


def anchor_term(model, ax, ay, *, temperature=1.0, feat=None, sizes=None):
    """(L_adv on the anchor batch (ax, ay), None) or, with `sizes` (images per kind of anchor,
    in batch order), (L_adv, [n_k / n * L_adv of kind k]): terms that sum to L_adv, each from
    its own forward pass (equal to the joint pass where BatchNorm is frozen, which
    UnlearnConfig asks of project "kinds"). feat: a FeatureDistil whose term is added.

    >>> m = torch.nn.Linear(2, 3)
    >>> x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    >>> whole, parts = anchor_term(m, x, y, sizes=[2, 0, 3])
    >>> len(parts), bool(torch.isclose(sum(parts), whole)), anchor_term(m, x, y)[1]
    (2, True, None)
    """
    if sizes is None:
        logits, l_feat = feat(model, ax) if feat else (model(ax), 0.0)
        return adversarial_loss(logits, ay, temperature=temperature) + l_feat, None
    parts, start, n = [], 0, len(ay)
    for size in sizes:
        if size:
            part = slice(start, start + size)
            parts.append(size / n * adversarial_loss(model(ax[part]), ay[part],
                                                     temperature=temperature))
        start += size
    return sum(parts), parts


class FeatureDistil:
    """A second anchor term: the anchors' penultimate features (the input of the model's logit
    layer, `kit.method.scale.logit_layer`) kept near those of a frozen copy, weight *
    sum ||f - f*||^2 / sum ||f*||^2 over the batch (relative, so one weight serves any width).
    x: a few of the model's inputs (one finds the layer); each call is one forward pass of
    the frozen copy more (no gradient).

    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> fd = FeatureDistil(m, 2.0, torch.ones(1, 3))
    >>> logits, term = fd(m, torch.ones(5, 3))
    >>> tuple(logits.shape), float(term.detach()), fd.head
    ((5, 2), 0.0, '2')
    """

    def __init__(self, model: torch.nn.Module, weight: float, x: torch.Tensor):
        layer = logit_layer(model, x, fix="feat_distil=0")
        self.head = next(n for n, m in model.named_modules() if m is layer)
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.weight = weight

    def _run(self, model, x):
        seen = []
        hook = model.get_submodule(self.head).register_forward_hook(
            lambda mod, inp, out: seen.append(inp[0]))
        try:
            logits = model(x)
        finally:
            hook.remove()
        return logits, seen[-1].flatten(1)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor):
        """(model's logits on x, the term): `model` (the one unlearning, in its present mode)
        against the frozen copy."""
        with torch.no_grad():
            f_star = self._run(self.teacher, x)[1]
        logits, f = self._run(model, x)
        term = (f - f_star).pow(2).sum() / f_star.pow(2).sum().clamp_min(1e-12)
        return logits, self.weight * term


def snapshot(model):
    """{name: detached clone} of every parameter: the anchor theta* before unlearning."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def importance_penalty(model, anchor, weights, *, lam=1.0):
    """lam * sum_i w_i (theta_i - theta*_i)^2 / 2 over the parameters named in `weights`.

    anchor: {name: tensor} from `snapshot` before unlearning. weights: {name: tensor} of
    per-weight penalties in [0, 1] (e.g. `kit.method.importance.penalty_weights`); parameters not
    named in `weights` are not penalised. lam: lambda >= 0 (paper: 1). Returns a scalar.
    """
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params or n not in anchor]
    if missing:
        raise KeyError(f"weights name parameters absent from the model or the anchor: {missing}; "
                       f"model parameters: {list(params)}")
    total = next(model.parameters()).new_zeros(())
    for n, w in weights.items():
        p, a = params[n], anchor[n]
        if w.shape != p.shape or a.shape != p.shape:
            raise ValueError(f"shape mismatch for {n!r}: parameter {tuple(p.shape)}, "
                             f"weights {tuple(w.shape)}, anchor {tuple(a.shape)}")
        total = total + (w.to(p.device) * (p - a.to(p.device)).pow(2)).sum()
    return lam * total / 2


OBJECTIVES = {
    "misclassify": misclassification_loss,  # push D_f off its labels (L_mc)
    "relabel": relabel_loss,                # pull D_f onto given new labels (L_rl)
}


def get_objective(name):
    """The unlearning objective called `name` (a key of OBJECTIVES)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def _margin(logits, labels):
    # z_label - max_{j != label} z_j, per instance: (N,)
    z_lab = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return z_lab - others.max(dim=1).values


def _hinge_mean(hinge, active_only):
    # mean over the batch, or over the instances with a positive hinge (still pushed): then an
    # instance left alone keeps the full weight of the term; 0 when none is (no host sync)
    if not active_only:
        return hinge.mean()
    return hinge.sum() / (hinge > 0).sum().clamp_min(1)


def misclassification_margin_loss(logits, labels, *, margin=1.0, active_only=False):
    """mean(relu(z_y - max_{j!=y} z_j + margin)): a Carlini-Wagner-style alternative to -CE.

    Unlike -CE, its gradient does not vanish on confidently classified instances (softmax
    saturation), and it stops pushing an instance once its label trails another class by
    `margin` logits, so it never ascends without bound. Not in the paper; a kit option.
    active_only: average over the instances not yet past the margin only.
    """
    return _hinge_mean(torch.relu(_margin(logits, labels) + margin), active_only)


def relabel_margin_loss(logits, new_labels, *, margin=1.0, active_only=False):
    """mean(relu(max_{j!=y'} z_j - z_y' + margin)): hinge toward the new label (kit option).
    active_only: average over the instances not yet past the margin only."""
    return _hinge_mean(torch.relu(margin - _margin(logits, new_labels)), active_only)


# loss form of each objective: "ce" (the paper's) or "margin" (kit option)
OBJECTIVE_FORMS = {
    ("misclassify", "ce"): misclassification_loss,
    ("misclassify", "margin"): misclassification_margin_loss,
    ("relabel", "ce"): relabel_loss,
    ("relabel", "margin"): relabel_margin_loss,
}
