"""The named recipes of the engine: values of `kit.method.config.UnlearnConfig`.

The official recipe (the field defaults), the chain of single changes from it to the kit's
default (walked by notebook 08 on the calibration split), the recipes named along it and
beside it, and `resolve(recipe, objective, **overrides)`; callers resolve once.

>>> resolve("default", "misclassify", lr=1e-3).lr, resolve("default").optimizer
(0.001, 'adam')
>>> resolve("default", "relabel").adv_select, resolve("fast-relabel", "relabel").adv_select
('soft', 'keep')
"""
from __future__ import annotations

from ..core.utils import check_name
from .config import OBJECTIVES, UnlearnConfig

OFFICIAL = UnlearnConfig(budget_unit="passes")  # csm9493/L2UL on CIFAR: 1000 passes over ADV's set
# From the official recipe (under a budget of 600 optimiser steps) to the kit's default, one
# change at a time, each keeping those above it (notebook 08 walks it on the calibration split)
CHAIN_BASE = OFFICIAL.replace(max_steps=600, budget_unit="steps")
CHAIN: list[tuple[str, dict]] = [
    ("official (SGD 1e-3, -CE, train-mode BN, eps 4, R 20, 100 PGD steps), 600 steps", {}),
    ("cheaper attack: R 5, 30 PGD steps of 0.2",
     dict(per_instance=5, pgd_steps=30, step_size=0.2, adv_batch=64)),
    ("BatchNorm frozen (eval mode) during updates", dict(bn_mode="frozen")),
    ("margin loss (hinge on logits, margin 1)", dict(loss="margin")),
    ("Adam lr 1e-3, no weight decay", dict(optimizer="adam", weight_decay=0.0)),
    ("eps 2, anchors labelled with the model's prediction",
     dict(eps=2.0, adv_select="predicted_all")),
    ("lambda 0.1", dict(lam=0.1)),
    ("lr 3e-4, margin 0.1", dict(lr=3e-4, margin=0.1)),
    # k <= 32: the row above; chosen at k = 64, 128, where 0.1 stalls (lambda_by_k.yaml)
    ("lambda falls beyond k = 32: 0.1 (32 / k)^(5/3) (= recipe fast; at k = 32 the row above)",
     dict(lam_from_k=32)),
    # Distilled anchors, smaller step, more steps: +2.8/+3.4/+7.0 at k 32/64/128 (distil_by_k.yaml)
    ("anchors distil the frozen model's softmax", dict(adv_select="soft")),
    ("lr 1e-4, 1500 steps (= recipe distil)", dict(lr=1e-4, max_steps=1500)),
    # T^2 CE(z/T, softmax(z*/T)), a larger step: +0.0 / +1.8 / +4.3 at k = 8/32/128 (distil_t_lr)
    ("distillation temperature 8, lr 2e-4 (= recipe distil-t8)", dict(distil_t=8.0, lr=2e-4)),
    # Random affine transforms of D_f, frozen labels: +2.0 / +2.5 / +7.8 (augment_anchors.yaml)
    ("anchors: 256 affine transforms of D_f, 8 per step (= recipe aug-256)",
     dict(aug_anchors=256, aug_batch=8)),
    # Half of them small (about one pixel, six degrees): +0.2 / +1.2 / +6.2 (augment_mix.yaml)
    ("1024 transforms of two sizes, 16 per step, lr 3e-4, 4000 steps (= recipe mix-1024)",
     dict(aug_transform="affine_mix", aug_anchors=1024, aug_batch=16, lr=3e-4, max_steps=4000)),
    # Twice as many, 16 per step: +0.0 / +0.3 / +1.3 (augment_mix_count.yaml)
    ("2048 transforms of two sizes (= recipe mix-2048)", dict(aug_anchors=2048)),
    # A quarter of them per forget instance and step: 32 at k = 128, +2.3 there (aug_by_k.yaml)
    ("at least k / 4 of them per step (= recipe mix-k4; at k <= 64 the row above)",
     dict(aug_per_instance=0.25)),
    # -0.2 / -0.1 / +0.7 / +1.0 / -0.1 test points at k = 8 / 16 / 32 / 64 / 128, 15 of 15
    # requests reached against 14 (aug_release.yaml, aug_release_by_k.yaml, _mid_k.yaml)
    ("32 of them per step; from step 2000 the transforms of the instances still pending "
     "leave the anchors (= kit default)", dict(aug_batch=32, aug_release_from=2000)),
]
EXTENSIONS: list[tuple[str, dict]] = []   # beyond the default, cumulatively: none now

# Single changes to the default, each alone, beside the chain in notebook 08 (R 20: the paper's)
BRANCHES = [("kit default with R 20 (the paper's number of anchors per instance)",
             dict(per_instance=20))]


def chain_configs(base: UnlearnConfig = CHAIN_BASE, chain=None) -> dict[str, UnlearnConfig]:
    """{row name: config} with the changes of `chain` applied cumulatively to `base`; chain
    None: CHAIN, EXTENSIONS, then each of BRANCHES alone on the end of CHAIN (the default)."""
    out, cfg = {}, base
    for name, change in (CHAIN + EXTENSIONS if chain is None else chain):
        cfg = cfg.replace(**change)
        out[name] = cfg
    if chain is None:
        default = out[CHAIN[-1][0]]
        out.update({name: default.replace(**change) for name, change in BRANCHES})
    return out


_ROWS = chain_configs(chain=CHAIN)
RECIPES: dict[str, UnlearnConfig] = {
    "official": OFFICIAL,
    "default": _ROWS[CHAIN[-1][0]],    # chosen on the calibration split (notebook 08)
    "mix-k4": _ROWS[CHAIN[-2][0]],     # k / 4 transformed images per step, 16 at least
    "mix-2048": _ROWS[CHAIN[-3][0]],   # 16 transformed images per step at every k
    "mix-1024": _ROWS[CHAIN[-4][0]],   # 1024 transforms of two sizes, 16 per step, lr 3e-4
    "aug-256": _ROWS[CHAIN[-5][0]],    # 256 affine transforms, 8 per step, lr 2e-4, 1500 steps
    "distil-t8": _ROWS[CHAIN[-6][0]],  # before the transformed anchors (T 8, lr 2e-4)
    "distil": _ROWS[CHAIN[-7][0]],     # before the temperature (plain softmax, lr 1e-4)
    "fast": _ROWS[CHAIN[-9][0]],       # before it distilled (hard labels, lr 3e-4, 600 steps)
}
RECIPES["synth"] = RECIPES["distil-t8"].replace(synth_anchors=256, synth_batch=16)  # +0.7-2.8
# The robust variant (notebook 08): the default without its release (plain objective only), large
# transforms, synth's images (robust_aug.yaml), lr 1e-4 (robust_lr.yaml), 16000 steps (_per_step)
RECIPES["robust-16k"] = RECIPES["default"].replace(   # the robust recipe until 2026-12-01
    aug_release_from=0, robust=True, active_only=True, aug_anchors=1024, aug_transform="affine",
    synth_anchors=256, synth_batch=16, lr=1e-4, max_steps=16000)
# + the objective's gradient off the anchors' (A-GEM), 24000 steps: +2.5 / +1.0 on the two
# calibration models, +1.5 held out (robust_project*.yaml). One constraint per kind of anchor
# ("kinds") gained +1.1 held out on one machine and lost 0.9 on another: not kept
RECIPES["robust"] = RECIPES["robust-16k"].replace(project="global", max_steps=24000)
# Relabeling's default until 2026-11-29: anchors keep their target label, y' among the targets
RECIPES["fast-relabel"] = RECIPES["fast"].replace(adv_select="keep", adv_exclude_new_label=False,
                                                  max_steps=1000)
# Relabeling: the default too (+0.0 / +0.5 / +1.5 at k = 8 / 32 / 128: relabel_release.yaml)
RECIPES["default-relabel"] = RECIPES["default"]


def resolve(recipe: str | UnlearnConfig = "default", objective: str = "misclassify",
            **overrides) -> UnlearnConfig:
    """The config of `recipe` for `objective`, with single fields overridden and validated.

    recipe: a name in RECIPES ("default" resolves to "default-relabel" for objective
    "relabel") or an UnlearnConfig. overrides: field=value pairs (see FIELDS).
    """
    check_name(objective, dict.fromkeys(OBJECTIVES), "objective")
    if isinstance(recipe, UnlearnConfig):
        cfg = recipe
    else:
        name = "default-relabel" if recipe == "default" and objective == "relabel" else recipe
        cfg = check_name(name, RECIPES, "recipe")
    return cfg.replace(**overrides) if overrides else cfg
