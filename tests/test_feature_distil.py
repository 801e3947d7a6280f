"""feat_distil: the anchors' penultimate features held near the frozen model's (hand values,
the costs it adds, the contract, the effect it is for)."""
import copy

import pytest
import torch
from torch import nn

from kit.core.request import ForgetRequest
from kit.method.contract import augmentation_inputs, forget_only_violation
from kit.method.engine import unlearn
from kit.method.losses import FeatureDistil
from kit.method.recipes import resolve


def _two_layer():
    m = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1))
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(2))
    return m


def test_term_by_hand_and_only_the_student_gets_a_gradient():
    m = _two_layer()
    fd = FeatureDistil(m, 3.0, torch.zeros(1, 2))   # the frozen copy: features = x
    with torch.no_grad():
        m[0].weight.mul_(2.0)                  # the student's features: 2x
    logits, term = fd(m, torch.tensor([[1.0, 2.0]]))
    # f* = (1, 2), f = (2, 4): 3 * (1 + 4) / (1 + 4)
    assert float(term.detach()) == pytest.approx(3.0)
    torch.testing.assert_close(logits, m(torch.tensor([[1.0, 2.0]])))
    term.backward()
    assert m[0].weight.grad is not None and float(m[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in fd.teacher.parameters())
    assert fd.head == "1" and not m[1]._forward_hooks   # the logit layer; no hook left


def test_needs_a_linear_logit_layer(pretrained_cnn, monkeypatch):
    conv_head = nn.Sequential(nn.Conv2d(1, 10, 28), nn.Flatten())   # (N, 1, 28, 28) -> (N, 10)
    with pytest.raises(ValueError, match="feat_distil=0"):
        FeatureDistil(conv_head, 1.0, torch.zeros(1, 1, 28, 28))
    squashed = nn.Sequential(nn.Linear(2, 3), nn.Tanh())            # a Linear, not the logits
    with pytest.raises(ValueError, match="feat_distil=0"):
        FeatureDistil(squashed, 1.0, torch.zeros(1, 2))
    # the engine refuses it before any compute (no attack is made)
    import kit.method.engine as engine
    _, data = pretrained_cnn
    req = ForgetRequest.draw(data, 8, seed=0)
    monkeypatch.setattr(engine, "make_anchors", lambda *a, **kw: pytest.fail("attacked"))
    with pytest.raises(ValueError, match="feat_distil=0"):
        unlearn(conv_head, req.x, req.y, config=resolve("default", feat_distil=1.0))


def test_the_frozen_copy_forward_counts_a_third_of_a_pass_per_anchor(pretrained_cnn):
    # as test_machine_free_cost_by_hand: each step 8 forget images and 10 + 32 anchors, now
    # each anchor also a forward pass of the frozen copy (1/3)
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 8, seed=0)
    cfg = resolve("default", max_steps=2, lr=1e-9, per_instance=2, pgd_steps=3, adv_batch=10,
                  feat_distil=1.0)
    res = unlearn(copy.deepcopy(model), req.x, req.y, method="adv+imp", config=cfg)
    # (and one forward of one image that finds the logit layer)
    assert res.passes["update"] == pytest.approx(2 * (8 + (10 + 32) * 4 / 3) + 1 / 3)
    # a method without anchors has nothing to hold: the same run as without the option
    res = unlearn(copy.deepcopy(model), req.x, req.y, method="imp", config=cfg)
    assert res.passes["update"] == 2 * 8


def test_keeps_the_contract_and_holds_the_anchor_features(pretrained_cnn):
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 8, seed=0)
    cfg = resolve("default", pgd_steps=10, per_instance=4, max_steps=40, lr=1e-3)
    allowed = augmentation_inputs(req.x, cfg.aug_anchors, seed=0, transform=cfg.aug_transform)
    held = copy.deepcopy(model)
    dist = forget_only_violation(
        lambda: unlearn(held, req.x, req.y, config=cfg.replace(feat_distil=100.0), seed=0),
        held, req.x, allowed=allowed)
    assert dist <= cfg.eps + 1e-4               # the frozen copy sees the anchors only
    free = copy.deepcopy(model)
    unlearn(free, req.x, req.y, config=cfg, seed=0)
    # the features of the transformed forget images (anchors of both runs) drift less
    x = allowed[0][:256]
    drift = {}
    for name, m in (("held", held), ("free", free)):
        fd = FeatureDistil(model, 1.0, x)
        with torch.no_grad():
            drift[name] = float(fd(m.eval(), x)[1])
    assert drift["held"] < 0.5 * drift["free"], drift
