"""The unlearning engine on the embedded default: objectives reached, contract, determinism."""
import copy
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from kit.attacks import make_adversarial
from kit.contract import forget_only_violation
from kit.experiment import forget_request, split_accuracies
from kit.unlearn import METHODS, RECIPES, UnlearnConfig, draw_new_labels, unlearn


@pytest.fixture(scope="module")
def request8(pretrained_cnn):
    model, data = pretrained_cnn
    return forget_request(data, k=8, seed=0)


def test_official_recipe_matches_the_papers_code():
    o = RECIPES["official"]
    assert (o.lr, o.optimizer, o.momentum, o.weight_decay) == (1e-3, "sgd", 0.9, 1e-4)
    assert (o.forget_batch, o.adv_batch, o.weighting, o.bn_mode) == (32, 256, "share", "train")
    assert (o.eps, o.step_size, o.pgd_steps, o.per_instance, o.lam) == (4.0, 0.1, 100, 20, 1.0)
    assert (o.norm, o.adv_select, o.estimator, o.loss, o.active_only) == (
        "l2", "keep", "mas_official", "ce", False)


def test_signature_admits_no_remaining_data():
    # only the model, the forget tensors and scalar settings can reach the method
    params = inspect.signature(unlearn).parameters
    assert list(params)[:3] == ["model", "forget_x", "forget_y"]
    scalar_fields = {f.name for f in dataclasses.fields(UnlearnConfig)}
    allowed = {"objective", "new_labels", "method", "recipe", "seed", "overrides"}
    assert set(list(params)[3:]) == allowed
    assert all(isinstance(getattr(RECIPES["default"], n), (int, float, str, bool))
               for n in scalar_fields)


@pytest.mark.parametrize("method", list(METHODS))
def test_contract_model_sees_only_forget_set_and_its_neighbourhood(pretrained_cnn, request8, method):
    model, data = pretrained_cnn
    _, _, fx, fy = request8
    m = copy.deepcopy(model)
    cfg = RECIPES["default"]
    dist = forget_only_violation(lambda: unlearn(m, fx, fy, method=method, seed=0, pgd_steps=10,
                                                 per_instance=4, max_steps=20), m, fx)
    radius = cfg.eps if METHODS[method]["adv"] else 0.0
    assert dist <= radius + 1e-4
    # the check itself can fail: one remaining example fed to the model is far from D_f
    other = data.train[0][0][None] if 0 not in request8[0] else data.train[1][0][None]
    assert forget_only_violation(lambda: m(other), m, fx) > 3.0


@pytest.mark.parametrize("method", ["adv+imp", "adv"])
def test_default_recipe_reaches_misclassification(pretrained_cnn, request8, method):
    model, data = pretrained_cnn
    f_idx, r_idx, fx, fy = request8
    m = copy.deepcopy(model)
    res = unlearn(m, fx, fy, method=method, seed=0)
    acc = split_accuracies(m, data, f_idx, r_idx)
    assert res.reached and acc["forget"] == 0.0
    assert res.flip_step.max() == res.steps          # stopped at the first step that reached it
    assert (res.flip_step > 0).all() and res.done.all()
    assert set(res.seconds) == {"attack", "importance", "update", "evaluate", "total"}
    # the model is still a classifier, far above chance on the test set
    assert acc["test"] > 0.8


def test_relabel_reaches_full_agreement(pretrained_cnn, request8):
    model, data = pretrained_cnn
    _, _, fx, fy = request8
    new = draw_new_labels(fy, 10, seed=0)
    assert (new != fy).all()
    m = copy.deepcopy(model)
    res = unlearn(m, fx, fy, objective="relabel", new_labels=new, method="adv+imp", seed=0)
    with torch.inference_mode():
        pred = m(fx).argmax(1)
    assert res.reached and bool((pred == new).all())


def test_determinism_under_a_seed(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    _, _, fx, fy = request8
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        res = unlearn(m, fx, fy, method="adv+imp", seed=3, pgd_steps=10, max_steps=15)
        runs.append((res, torch.cat([p.flatten() for p in m.parameters()])))
    assert torch.equal(runs[0][1], runs[1][1])
    assert np.array_equal(runs[0][0].flip_step, runs[1][0].flip_step)


def test_step_budget_is_respected_and_failure_reported(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    _, _, fx, fy = request8
    res = unlearn(copy.deepcopy(model), fx, fy, method="neggrad", max_steps=1, lr=1e-6)
    assert res.steps == 1 and not res.reached and (res.flip_step == -1).any()


@pytest.mark.parametrize("recipe, threshold", [("official", 0.9), ("default", 0.3)])
def test_attack_succeeds_on_the_pretrained_default(pretrained_cnn, request8, recipe, threshold):
    # The official attack (L2 eps 4, 100 steps) moves nearly every example of this model to
    # its target (measured 96 % at k = 32). The default's smaller ball (eps 2, 30 steps)
    # succeeds on about half (measured 47-58 %); its failed examples are labelled with the
    # model's own prediction (adv_select="predicted_all"), so a low rate cannot turn ADV
    # into training on near-copies of D_f with wrong labels (the eps = 1 failure mode).
    model, _ = pretrained_cnn
    _, _, fx, fy = request8
    cfg = RECIPES[recipe]
    adv = make_adversarial(model, fx, fy, num_classes=10, per_instance=5, eps=cfg.eps,
                           step_size=cfg.step_size, steps=cfg.pgd_steps, seed=0)
    assert adv.success_rate > threshold
    assert bool((adv.targets != adv.source_labels).all())


@pytest.mark.parametrize("bad, match", [
    (dict(method="nope"), "valid names"),
    (dict(recipe="nope"), "valid names"),
    (dict(objective="nope"), "valid"),
    (dict(lr_typo=1.0), "unknown hyper-parameter"),
    (dict(bn_mode="nope"), "bn_mode"),
    (dict(objective="relabel"), "needs new_labels"),
])
def test_bad_arguments_raise_clear_errors(pretrained_cnn, request8, bad, match):
    model, _ = pretrained_cnn
    _, _, fx, fy = request8
    with pytest.raises((ValueError, TypeError), match=match):
        unlearn(copy.deepcopy(model), fx, fy, **bad)


def test_bad_labels_raise(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    _, _, fx, fy = request8
    with pytest.raises(ValueError, match="out of range"):
        unlearn(copy.deepcopy(model), fx, fy + 10)
    with pytest.raises(ValueError, match="equal the true label"):
        unlearn(copy.deepcopy(model), fx, fy, objective="relabel", new_labels=fy)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        unlearn(copy.deepcopy(model), fx * 255, fy)
