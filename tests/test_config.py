"""kit.method.config: one validated home for every hyper-parameter, recipes and the chain."""
import dataclasses
import math

import pytest

from kit.cli.parser import describe
from kit.method.config import FIELDS, UnlearnConfig
from kit.method.recipes import BRANCHES, CHAIN, EXTENSIONS, RECIPES, chain_configs, resolve


def test_official_recipe_matches_the_papers_code():
    o = RECIPES["official"]
    assert (o.lr, o.optimizer, o.momentum, o.weight_decay) == (1e-3, "sgd", 0.9, 1e-4)
    assert (o.forget_batch, o.adv_batch, o.weighting, o.bn_mode) == (32, 256, "share", "train")
    assert (o.eps, o.step_size, o.pgd_steps, o.per_instance, o.lam) == (4.0, 0.1, 100, 20, 1.0)
    assert (o.norm, o.adv_select, o.estimator, o.loss, o.active_only) == (
        "l2", "keep", "mas_official", "ce", False)
    assert (o.max_steps, o.budget_unit) == (1000, "passes")   # 1000 passes, as the code


def test_chain_ends_at_the_default_and_relabel_resolves():
    assert list(chain_configs(chain=CHAIN).values())[-1] == RECIPES["default"]
    rows = list(chain_configs().values())
    assert rows[len(CHAIN) - 1] == RECIPES["default"]
    assert len(rows) == len(CHAIN) + len(EXTENSIONS) + len(BRANCHES)
    for (name, change), cfg in zip(BRANCHES, rows[len(CHAIN) + len(EXTENSIONS):]):
        assert cfg == RECIPES["default"].replace(**change) != RECIPES["default"]   # alone
    # the default: "mix-k4" with 32 transformed images per step and their release from step
    # 2000; mix-k4: "mix-2048" with at least k / 4 per step (32 at k = 128);
    # mix-2048: "mix-1024" with 2048 transforms; mix-1024 is "aug-256" with 1024
    # transforms of two sizes, 16 per step, lr 3e-4 and 4000 steps; aug-256 adds 256 affine
    # transforms of D_f to "distil-t8" (distilling at temperature 8), which is "distil" at
    # T 8 and lr 2e-4; "fast": before it distilled
    d, a256, t8 = RECIPES["default"], RECIPES["aug-256"], RECIPES["distil-t8"]
    assert (d.adv_select, d.distil_t, d.lr, d.max_steps) == ("soft", 8.0, 3e-4, 4000)
    k4 = RECIPES["mix-k4"]
    assert d == k4.replace(aug_batch=32, aug_release_from=2000)
    assert [d.aug_batch_at(k) for k in (8, 32, 64, 128)] == [32, 32, 32, 32]
    assert k4 == RECIPES["mix-2048"].replace(aug_per_instance=0.25) and k4.aug_batch == 16
    assert [k4.aug_batch_at(k) for k in (8, 32, 64, 128)] == [16, 16, 16, 32]
    assert RECIPES["mix-2048"] == RECIPES["mix-1024"].replace(aug_anchors=2048)
    assert RECIPES["mix-1024"] == a256.replace(aug_transform="affine_mix", aug_anchors=1024,
                                               aug_batch=16, lr=3e-4, max_steps=4000)
    assert a256 == t8.replace(aug_anchors=256) and (a256.aug_batch, a256.aug_transform) == (8, "affine")
    assert t8.replace(distil_t=1.0, lr=1e-4) == RECIPES["distil"]
    assert RECIPES["distil"].replace(adv_select="predicted_all", lr=3e-4,
                                     max_steps=600) == RECIPES["fast"]
    # options that are off keep the cache keys of the runs made before they existed
    assert "distil_t" not in RECIPES["distil"].key() and "distil_t" in d.key()
    assert "update_share" not in d.key()
    # the robust recipe is the default without its release (which acts on the plain
    # objective only) with the objective on the views, averaged over the views still to
    # flip, half its transformed images and the large transforms only (32 per step, as the
    # default), synth's images, a third of its step and four times its budget (robust-16k);
    # robust: that with the objective's gradient off the anchors' and six times the budget
    r = RECIPES["robust-16k"]
    diff = {n for n, v in r.as_dict().items() if v != d.as_dict()[n]}
    assert diff == {"aug_release_from", "robust", "active_only", "aug_anchors", "aug_transform",
                    "synth_anchors", "synth_batch", "lr", "max_steps"}
    assert r.robust and r.active_only and r.aug_release_from == 0 and r.aug_batch_at(32) == 32
    assert (r.aug_anchors, r.aug_transform, r.synth_anchors, r.synth_batch) == \
        (1024, "affine", 256, 16)
    assert (r.lr, r.max_steps) == (1e-4, 4 * d.max_steps) and d.lr == 3e-4
    assert RECIPES["robust"] == r.replace(project="global", max_steps=6 * d.max_steps)
    assert RECIPES["synth"] == t8.replace(synth_anchors=256, synth_batch=16)
    # relabeling resolves to the default itself (32 transformed images per step, the
    # release); the recipe before it stays on fast
    assert resolve("default", "relabel") == RECIPES["default-relabel"] == d
    assert RECIPES["default-relabel"].aug_batch_at(128) == 32
    fr = RECIPES["fast-relabel"]
    assert (fr.lr, fr.adv_select, fr.adv_exclude_new_label, fr.max_steps) == \
        (RECIPES["fast"].lr, "keep", False, 1000)
    assert resolve("default", "misclassify", lr=1e-2).lr == 1e-2
    assert resolve(RECIPES["official"], "relabel") is RECIPES["official"]


def test_budget_steps_by_hand():
    c = RECIPES["official"].replace(max_steps=3, adv_batch=256, forget_batch=32)
    assert c.budget_steps(n_forget=16, n_adv=320) == 3 * 2          # ceil(320/256) = 2
    assert c.budget_steps(n_forget=100, n_adv=0) == 3 * 4           # ceil(100/32) = 4
    assert c.replace(budget_unit="steps").budget_steps(n_forget=16, n_adv=320) == 3


@pytest.mark.parametrize("name, bad", [
    ("adv_batch", 0), ("forget_batch", 0), ("pgd_steps", 0), ("max_steps", 0),
    ("per_instance", 0), ("eps", 0.0), ("eps", -1.0), ("step_size", -0.1), ("lr", 0.0),
    ("lr", math.inf), ("lr", math.nan), ("lam", math.nan), ("lam", -1.0), ("momentum", 1.5),
    ("lr", "0.1"), ("seed_typo", 1), ("pgd_steps", 2.5), ("active_only", 1), ("optimizer", "rmsprop"),
])
def test_every_bad_value_is_refused_with_its_name(name, bad):
    with pytest.raises(ValueError, match=name.split("_typo")[0]):
        resolve("default", **{name: bad})


@pytest.mark.parametrize("change, match", [
    (dict(active_from=4000, max_steps=4000), "budget ends, max_steps=4000"),
    (dict(active_from=10, active_only=True), "from the start"),
    (dict(active_from=-1), "active_from must be >= 0"),
])
def test_an_active_from_that_would_never_act_is_refused(change, match):
    with pytest.raises(ValueError, match=match):
        resolve("default", **change)
    assert resolve("default", active_from=3999).active_from == 3999
    # off (0) by default and then not in the cache key: earlier entries stay valid
    assert "active_from" not in resolve("default").key(32)


def test_frozen_and_documented():
    cfg = resolve("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    for name in FIELDS:
        assert describe(name) and FIELDS[name].metadata["help"]
    assert "one of sgd, adam" in describe("optimizer")
    assert describe("eps") == "attack radius ([0,1] pixel units; > 0)"
    with pytest.raises(ValueError, match="valid names"):
        describe("nope")
    with pytest.raises(ValueError, match="valid names"):
        resolve("nope")
    assert isinstance(UnlearnConfig(), UnlearnConfig)
