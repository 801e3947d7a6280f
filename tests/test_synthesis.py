"""Anchors synthesised from the frozen model alone (kit.method.synthesis): deterministic,
in range, class-conditional, the model untouched; the engine mixes them in (the contract
for them, and its failure when real data pose as them: tests/test_augment.py)."""
import copy

import pytest
import torch

from kit.core.request import ForgetRequest
from kit.method.engine import unlearn
from kit.method.recipes import resolve
from kit.method.synthesis import synthesize, synthesized, total_variation

FAST = dict(pgd_steps=10, per_instance=4, max_steps=20, channels_last=False)
SYN = dict(synth_anchors=20, synth_iters=30, synth_batch=8)


@pytest.fixture(scope="module")
def request8(pretrained_cnn):
    return ForgetRequest.draw(pretrained_cnn[1], 8, seed=0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_synthesis_is_seeded_in_range_class_conditional_and_leaves_the_model(pretrained_cnn):
    model, _ = pretrained_cnn
    m = copy.deepcopy(model).train()
    before = _state(m)
    x, y = synthesize(m, 20, shape=(1, 28, 28), num_classes=10, seed=3, iters=30)
    again, _ = synthesize(m, 20, shape=(1, 28, 28), num_classes=10, seed=3, iters=30)
    other, _ = synthesize(m, 20, shape=(1, 28, 28), num_classes=10, seed=4, iters=30)
    assert torch.equal(x, again) and not torch.equal(x, other)
    assert x.shape == (20, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.tolist() == [i % 10 for i in range(20)]
    with torch.no_grad():
        hit = (m.eval()(x).argmax(1) == y).float().mean()
    assert hit >= 0.9                          # the model sees the class each was made for
    m.train()
    assert m.training and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert all(p.requires_grad for p in m.parameters())


def test_synthesis_needs_batchnorm_statistics():
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="BatchNorm.*synth_anchors=0"):
        synthesize(plain, 3, shape=(1, 2, 2), num_classes=3)


def test_engine_refuses_synth_anchors_on_a_model_without_batchnorm(request8, monkeypatch):
    import kit.method.anchors as anchors
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    monkeypatch.setattr(anchors, "make_adversarial", lambda *a, **k: 1 / 0)   # no compute
    with pytest.raises(ValueError, match="synth_anchors=0"):
        unlearn(plain, request8.x, request8.y, config=resolve("synth"))


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]])
    # rows: |0-0|, |0-1|, |1-1| -> mean 1/3; columns: 1, 0, 0, 1 -> mean 1/2
    assert total_variation(x).item() == pytest.approx(1 / 3 + 1 / 2)


def test_engine_mixes_synthesised_anchors_and_counts_their_cost(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    m = copy.deepcopy(model)
    cfg = resolve("distil-t8", **FAST, **SYN)
    res = unlearn(m, request8.x, request8.y, config=cfg)
    plain = unlearn(copy.deepcopy(model), request8.x, request8.y,
                    config=resolve("distil-t8", **FAST))
    # the attack phase pays the inversion: 20 images x (30 steps + final check + labels)
    extra = res.passes["attack"] - plain.passes["attack"]
    assert extra == pytest.approx(20 * (30 + 2 / 3))
    # each step's anchor batch: 32 adversarial (8 x 4, at most adv_batch) + 8 synthesised
    steps = res.steps
    assert res.passes["update"] == pytest.approx(steps * (8 + 32 + 8))


def test_synthesized_remembers_by_weights_and_settings(pretrained_cnn, monkeypatch):
    import kit.method.synthesis as syn
    model, _ = pretrained_cnn
    calls = []
    real = syn.synthesize
    monkeypatch.setattr(syn, "synthesize", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    monkeypatch.setattr(syn, "_MEMO", type(syn._MEMO)())
    kw = dict(shape=(1, 28, 28), num_classes=10, seed=0, iters=5)
    a, _ = synthesized(copy.deepcopy(model), 10, **kw)
    b, _ = synthesized(copy.deepcopy(model), 10, **kw)          # same weights: remembered
    a.zero_()                                                    # callers get copies
    c, _ = synthesized(model, 10, **{**kw, "seed": 1})           # another seed: made
    moved = copy.deepcopy(model)
    with torch.no_grad():
        next(moved.parameters()).add_(1e-3)
    synthesized(moved, 10, **kw)                                 # other weights: made
    assert len(calls) == 3 and torch.equal(b, synthesized(model, 10, **kw)[0])
    assert float(b.abs().sum()) > 0 and not torch.equal(b, c)
