"""Every hyper-parameter of an unlearning run, in one frozen and validated value.

`UnlearnConfig` is the single home of the engine's settings: each field's metadata carries
its help, unit and allowed values, checked by `__post_init__` before any compute. Its field
defaults are the official recipe; the named recipes, the chain from the official recipe to
the kit's default (walked by notebook 08) and `resolve(recipe, objective, **overrides)` are
in `kit.method.recipes`.

>>> UnlearnConfig(lr=1e-3).replace(optimizer="adam").optimizer
'adam'
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .augment import TRANSFORMS
from .projection import PROJECTIONS

METHODS: dict[str, dict] = {
    "neggrad": dict(adv=False, imp=False),   # objective only (gradient ascent for misclassify)
    "adv": dict(adv=True, imp=False),        # + targeted adversarial examples of D_f
    "imp": dict(adv=False, imp=True),        # + MAS weight-importance penalty
    "adv+imp": dict(adv=True, imp=True),     # the paper's full method
}
OBJECTIVES = ("misclassify", "relabel")


def _f(default, help: str, *, unit: str = "", choices: tuple = (), low=None, high=None,
       low_open: bool = False):
    """A dataclass field whose metadata documents and bounds it (see UnlearnConfig.check)."""
    return field(default=default, metadata=dict(help=help, unit=unit, choices=choices,
                                                low=low, high=high, low_open=low_open))


@dataclass(frozen=True)
class UnlearnConfig:
    """Hyper-parameters of one unlearning run; the field defaults are the official recipe.

    Distances (eps, step_size) are in [0, 1] pixel units (normalisation is the model's first
    layer). Build variants with `resolve` or `replace`; both validate.
    """
    lr: float = _f(1e-3, "learning rate of the unlearning optimiser", low=0, low_open=True)
    optimizer: str = _f("sgd", "unlearning optimiser", choices=("sgd", "adam"))
    momentum: float = _f(0.9, "SGD momentum", low=0, high=1)
    weight_decay: float = _f(1e-4, "weight decay applied by the optimiser", low=0)
    max_steps: int = _f(1000, "step budget, counted in `budget_unit`", low=1)
    budget_unit: str = _f("steps", "unit of max_steps: optimiser steps, or passes over the "
                          "longest loader (ADV's set, else D_f)", choices=("steps", "passes"))
    forget_batch: int = _f(32, "forget instances per step; every instance enters the loss "
                           "once per pass over D_f", low=1)
    adv_batch: int = _f(256, "adversarial examples per step (cycled, reshuffled)", low=1)
    weighting: str = _f("share", "how the objective and ADV terms combine: by batch share "
                        "(official) or plain sum", choices=("share", "sum"))
    bn_mode: str = _f("train", "BatchNorm during updates: train mode (official) or frozen "
                      "(eval mode)", choices=("train", "frozen"))
    active_only: bool = _f(False, "the objective averages over the instances not yet "
                           "unlearned only (ce: still predicted as y; margin: not yet past the "
                           "margin), so the last ones keep the term's full weight")
    active_from: int = _f(0, "from this step on the objective averages over the instances "
                          "still pushed, as active_only does from the start. 0: never", low=0)
    loss: str = _f("ce", "form of the objective: the paper's -CE/CE or a hinge on logits",
                   choices=("ce", "margin"))
    margin: float = _f(1.0, "margin loss: logit gap past the boundary", unit="logits", low=0)
    per_instance: int = _f(20, "R, adversarial examples per forget instance", low=1)
    norm: str = _f("l2", "norm of the attack ball", choices=("l2", "linf"))
    eps: float = _f(4.0, "attack radius", unit="[0,1] pixel units", low=0, low_open=True)
    step_size: float = _f(0.1, "PGD step length", unit="[0,1] pixel units", low=0,
                          low_open=True)
    pgd_steps: int = _f(100, "PGD iterations per adversarial example", low=1)
    adv_select: str = _f("keep", "which adversarial examples anchor and with which label: "
                         "keep (all, target label; the paper), successful, predicted, "
                         "predicted_all (all, the model's prediction), soft (all, the frozen "
                         "model's softmax: distillation)",
                         choices=("keep", "successful", "predicted", "predicted_all", "soft"))
    adv_exclude_new_label: bool = _f(True, "relabel: never use the new label as an attack "
                                     "target")
    distil_t: float = _f(1.0, "temperature of distilled anchors (adv_select soft): the anchor "
                         "term is T^2 CE(z/T, softmax(z*/T)) with z* the frozen model's logits "
                         "(Hinton et al. 2015); 1: its plain softmax", low=0, low_open=True)
    update_share: float = _f(1.0, "share of each weight tensor the updates may change: those "
                             "most important for D_f (IMP's importance; never one D_f does not "
                             "use), the others stay. 1: all", low=0, low_open=True, high=1)
    synth_anchors: int = _f(0, "ADV: this many anchors more, inverted from the frozen model's "
                            "BatchNorm statistics (seeded noise, class i mod C; kit.method."
                            "synthesis), labelled like the adversarial ones. 0: none", low=0)
    synth_iters: int = _f(200, "optimisation steps of the synthesis (each a forward+backward "
                          "pass of every synthesised image)", low=1)
    synth_batch: int = _f(64, "synthesised anchors per step, beside adv_batch adversarial ones "
                          "(cycled, reshuffled)", low=1)
    aug_anchors: int = _f(0, "ADV: this many anchors more, forget instance i mod k under a "
                          "random affine transform (kit.method.augment), labelled by the frozen "
                          "model (its softmax with soft anchors, else its prediction)", low=0)
    aug_transform: str = _f("affine", "transforms of aug_anchors (augment.TRANSFORMS)",
                            choices=tuple(TRANSFORMS))
    aug_batch: int = _f(8, "transformed forget images per step (cycled, reshuffled)", low=1)
    aug_per_instance: float = _f(0.0, "at least this many transformed images per forget instance "
                                 "and step (aug_batch_at); 0: aug_batch at every k", low=0)
    aug_release_from: int = _f(0, "from this step on the transformed images of the instances still "
                               "pending leave the anchors (they can hold them). 0: never", low=0)
    release_adv: bool = _f(False, "at aug_release_from, the adversarial anchors of the instances "
                           "still pending leave too (needs adv_select keep, predicted_all or soft)")
    adv_label_share: float = _f(1.0, "soft adversarial anchors: the share of their forget image's "
                                "label in the frozen softmax, times this (renormalised)", low=0)
    feat_distil: float = _f(0.0, "weight of an anchor term that holds the anchors' penultimate "
                            "features near the frozen model's (losses.FeatureDistil); 0: off", low=0)
    mine_anchors: int = _f(0, "ADV: images mined every mine_every steps where the model being "
                           "unlearned disagrees most with the frozen one (kit.method.mining: PGD "
                           "from new transforms of D_f), labelled by the frozen model. 0: none", low=0)
    mine_batch: int = _f(4, "mined images in every step's anchor batch (of the latest round)", low=1)
    mine_every: int = _f(200, "steps between two rounds of mining", low=1)
    mine_eps: float = _f(2.0, "L2 radius of the mining around its transformed forget image",
                         unit="[0,1] pixel units", low=0, low_open=True)
    mine_steps: int = _f(10, "PGD steps of a round of mining (each a forward+backward pass of the "
                         "model and of its frozen copy per image)", low=1)
    attack_chunk: int = _f(0, "examples attacked at once (memory and speed only); 0: auto, "
                           "256 on a CPU, 4096 on an accelerator", low=0)
    project: str = _f("off", "the objective's gradient loses its component along the anchor "
                      "term's where they conflict: over all weights (global, A-GEM) or per "
                      "weight tensor (tensor), or over all in Adam's metric (adam), or off "
                      "each kind of anchor's term at once (kinds, GEM); "
                      "kit.method.projection", choices=PROJECTIONS)
    project_ema: float = _f(0.0, "project: the reference is the moving average of the anchor "
                            "term's gradients (this weight on the one before), not this step's "
                            "alone; 0: this step's (kit.method.projection.Projector)", low=0,
                            high=0.999)
    robust: bool = _f(False, "the objective holds on each forget image's 8 neighbourhood views "
                      "too (kit.core.views): D_f counts 9x in the loss and the stopping rule")
    view_tolerance: float = _f(0.0, "robust: the stop allows this share of the views still "
                               "unmet (the images all meet it); 0: every view", low=0, high=1)
    amp: str = _f("off", "mixed precision of the attack: off (float32) or bf16 autocast; the "
                  "updates stay float32 (speed.attack_precision)", choices=("off", "bf16"))
    channels_last: bool = _f(True, "run the model in channels_last memory format (speed only: "
                             "float round-off changes, results do not; benchmarks/README.md)")
    polish_steps: int = _f(0, "steps of the same loss past the first that meets the objective, "
                           "back to the last that met it (all count in the costs)", low=0)
    check_every: int = _f(0, "read the stopping rule on the host every this many steps; the "
                          "result is that of the first step that met it (weights put back, later "
                          "steps counted in the costs). 0: 1 on a CPU, 8 on an accelerator", low=0)
    deterministic: bool = _f(False, "torch's deterministic algorithms during the run (an op "
                             "without a deterministic kernel then raises)")
    estimator: str = _f("mas_official", "weight-importance estimator",
                        choices=("mas_official", "mas", "fisher"))
    lam: float = _f(1.0, "lambda, weight of the importance penalty", low=0)
    lam_from_k: int = _f(0, "beyond this many forget instances lambda falls with k: lam * "
                         "(lam_from_k / k) ** lam_power (lam_at); 0: lambda is fixed", low=0)
    lam_power: float = _f(5 / 3, "how fast lambda falls beyond lam_from_k", low=0)
    importance_batch: int = _f(32, "instances per importance batch", low=1)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the field, the bad value and what is allowed."""
        for f in dataclasses.fields(self):
            v, md, want = getattr(self, f.name), f.metadata, type(f.default)
            ok_type = (isinstance(v, bool) if want is bool else
                       isinstance(v, int) and not isinstance(v, bool) if want is int else
                       isinstance(v, (int, float)) and not isinstance(v, bool) if want is float
                       else isinstance(v, str))
            if not ok_type:
                raise ValueError(f"{f.name} must be a {want.__name__}, got {v!r} "
                                 f"({type(v).__name__})")
            if md["choices"] and v not in md["choices"]:
                raise ValueError(f"{f.name}={v!r} is not allowed; choose one of "
                                 f"{', '.join(md['choices'])}")
            if want in (int, float):
                if not math.isfinite(v):
                    raise ValueError(f"{f.name} must be finite, got {v}")
                lo, hi = md["low"], md["high"]
                if lo is not None and (v < lo or (md["low_open"] and v == lo)):
                    rel = ">" if md["low_open"] else ">="
                    raise ValueError(f"{f.name} must be {rel} {lo}, got {v}")
                if hi is not None and v > hi:
                    raise ValueError(f"{f.name} must be <= {hi}, got {v}")

        late = self.budget_unit == "steps" and self.active_from >= self.max_steps
        if self.active_from and (self.active_only or late):
            why = "active_only acts from the start" if self.active_only else "budget ends"
            raise ValueError(f"active_from={self.active_from} never acts ({why}, max_steps="
                             f"{self.max_steps}); set 0, or below max_steps, active_only off")
        if self.project == "adam" and self.optimizer != "adam":
            raise ValueError(f"project='adam' takes Adam's metric, but optimizer="
                             f"{self.optimizer!r}; set optimizer adam, or project global")
        clash = [f"bn_mode={self.bn_mode!r} (each kind takes its own forward pass, the same "
                 f"as one joint pass only with bn_mode frozen)"] * (self.bn_mode != "frozen")
        clash += ["feat_distil (no features' term per kind)"] * bool(self.feat_distil)
        clash += ["project_ema (no averaged reference per kind)"] * bool(self.project_ema)
        if self.project == "kinds" and clash:
            raise ValueError(f"project='kinds' does not go with {'; '.join(clash)}; set "
                             f"bn_mode frozen, feat_distil 0 and project_ema 0, or project global")
        if self.project_ema and self.project == "off":
            raise ValueError(f"project_ema={self.project_ema} averages the reference of the "
                             f"projection, which is off; set project global, tensor or adam")
        if self.view_tolerance and not self.robust:
            raise ValueError(f"view_tolerance={self.view_tolerance} needs robust true")
        if self.aug_release_from and self.robust:
            raise ValueError(f"aug_release_from={self.aug_release_from} acts on the plain "
                             f"objective, not on robust=True's views; set 0 or robust false")
        if self.release_adv and (self.adv_select in ("successful", "predicted")
                                 or not self.aug_release_from):
            raise ValueError(f"release_adv needs aug_release_from > 0 (now "
                             f"{self.aug_release_from}) and adv_select keep, predicted_all or "
                             f"soft (now {self.adv_select})")
        if self.adv_label_share != 1 and self.adv_select != "soft":
            raise ValueError(f"adv_label_share needs adv_select soft, got {self.adv_select!r}")
        if self.update_share < 1 and self.weight_decay > 0:
            raise ValueError(f"update_share={self.update_share} freezes weights, but "
                             f"weight_decay={self.weight_decay} would still shrink them; set "
                             f"weight_decay=0 with update_share < 1")

    def replace(self, **changes) -> "UnlearnConfig":
        """A copy with some fields changed; unknown names and bad values raise."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)}; valid: "
                             f"{', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self, k: int | None = None, *, anchors: bool = True) -> dict:
        """as_dict() without the fields of `KEYED_WHEN_SET` left at their default: the cache
        key (an option added off keeps earlier entries valid). With k (the forget set's size),
        options that change nothing at that k are left out too (lam_from_k, lam_power,
        aug_per_instance), and with anchors=False (neggrad, imp, the oracle make no ADV
        anchors) the `ANCHOR_OPTIONS`: such a run shares the entry of the run without them.

        >>> cfg = UnlearnConfig(lam=0.1, lam_from_k=32)
        >>> "lam_from_k" in cfg.key(k=32), "lam_from_k" in cfg.key(k=128)
        (False, True)
        """
        same_lam = k is not None and self.lam_at(k) == self.lam
        same_aug = k is not None and self.aug_batch_at(k) == self.aug_batch
        return {n: v for n, v in self.as_dict().items()
                if not (n in KEYED_WHEN_SET and v == FIELDS[n].default)
                and not (same_lam and n in ("lam_from_k", "lam_power"))
                and not (same_aug and n == "aug_per_instance")
                and (anchors or n not in ANCHOR_OPTIONS)}

    def lam_at(self, k: int) -> float:
        """lambda for a forget set of k instances (falls beyond lam_from_k, if set).

        >>> UnlearnConfig(lam=0.1, lam_from_k=32).lam_at(8), UnlearnConfig(lam=0.1).lam_at(128)
        (0.1, 0.1)
        >>> round(UnlearnConfig(lam=0.1, lam_from_k=32).lam_at(128), 4)
        0.0099
        """
        if not self.lam_from_k or k <= self.lam_from_k:
            return self.lam
        return self.lam * (self.lam_from_k / k) ** self.lam_power

    def aug_batch_at(self, k: int) -> int:
        """Transformed forget images per step for k forget instances (grows with k, if set).

        >>> [UnlearnConfig(aug_batch=16, aug_per_instance=0.25).aug_batch_at(k) for k in (8, 128)]
        [16, 32]
        """
        return max(self.aug_batch, math.ceil(self.aug_per_instance * k))

    def budget_steps(self, *, n_forget: int, n_adv: int) -> int:
        """max_steps as optimiser steps: passes are counted over the longest loader."""
        if self.budget_unit == "steps":
            return self.max_steps
        longest = max(math.ceil(n_forget / self.forget_batch),
                      math.ceil(n_adv / self.adv_batch) if n_adv else 0)
        return self.max_steps * longest


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(UnlearnConfig)}
# options that only add ADV anchors (not keyed for a method that makes none: key(anchors=))
ANCHOR_OPTIONS = ("synth_anchors", "synth_iters", "synth_batch", "aug_anchors", "aug_transform",
                  "aug_batch", "aug_per_instance", "aug_release_from", "release_adv",
                  "adv_label_share", "mine_anchors", "mine_batch", "mine_every", "mine_eps",
                  "mine_steps")
# options added after the first cached results: keyed only when set (see key()); not
# channels_last, whose default changed (and with it the round-off of every cached result)
KEYED_WHEN_SET = ("robust", "view_tolerance", "amp", "deterministic", "check_every", "lam_from_k",
                  "lam_power", "active_from", "distil_t", "update_share", "polish_steps",
                  "feat_distil", "project", "project_ema", *ANCHOR_OPTIONS)

