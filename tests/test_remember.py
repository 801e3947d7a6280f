"""Continual unlearning that keeps earlier forget sets forgotten: their images join the
anchors of later requests (kit.method.anchors.with_earlier, unlearn(earlier_x=...),
continual_unlearn(remember=True)); which requests continual_unlearn holds (hold=True) is
checked here too, the hold itself in test_hold.py."""
import copy

import pytest
import torch

from kit.core.request import ForgetRequest
from kit.experiments import continual
from kit.experiments.continual import continual_unlearn
from kit.method.anchors import with_earlier
from kit.method.contract import augmentation_inputs, forget_only_violation
from kit.method.engine import soft_labels, unlearn
from kit.method.recipes import resolve

FAST = dict(pgd_steps=5, per_instance=2, max_steps=10)


def _linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


@pytest.mark.parametrize("recipe", ["default", "fast"])
def test_with_earlier_appends_the_earlier_images_labelled_by_the_model(recipe):
    net, cfg = _linear(), resolve(recipe)
    soft = cfg.adv_select == "soft"
    earlier = torch.rand(2 * cfg.aug_batch, 1, 2, 2)
    labels = soft_labels(net, earlier, temperature=cfg.distil_t if soft else 1.0)
    labels = labels if soft else labels.argmax(1)
    passes = {"attack": 0.0}
    src_y = torch.zeros(3, 3) if soft else torch.zeros(3, dtype=torch.long)
    source = with_earlier(lambda: (torch.zeros(3, 1, 2, 2), src_y), net, earlier,
                          cfg=cfg, seed=0, passes=passes)
    assert passes["attack"] == pytest.approx(len(earlier) / 3)       # labelling: one pass each
    seen = []
    for _ in range(2):                                   # one pass over the earlier images
        x, y = source()
        assert len(x) == len(y) == 3 + cfg.aug_batch
        assert torch.equal(x[:3], torch.zeros(3, 1, 2, 2))          # the source's batch first
        for xi, yi in zip(x[3:], y[3:]):
            i = int(((earlier - xi).flatten(1).abs().sum(1)).argmin())
            assert torch.equal(earlier[i], xi) and torch.equal(labels[i], yi)
            seen.append(i)
    assert sorted(seen) == list(range(len(earlier)))     # every earlier image once per pass
    alone = with_earlier(None, net, earlier, cfg=cfg, seed=0, passes=passes)
    assert len(alone()[0]) == cfg.aug_batch


def test_unlearn_feeds_the_earlier_images_and_nothing_else(pretrained_cnn):
    model, data = pretrained_cnn
    now, before = ForgetRequest.draw(data, 4, seed=0), ForgetRequest.draw(data, 4, seed=1)
    cfg = resolve("default", **FAST)
    allowed = augmentation_inputs(now.x, cfg.aug_anchors, seed=0, transform=cfg.aug_transform)
    m = copy.deepcopy(model)

    def run():
        unlearn(m, now.x, now.y, config=cfg, earlier_x=before.x)
    union = torch.cat([now.x, before.x])
    assert forget_only_violation(run, m, union, allowed=allowed) <= cfg.eps + 1e-4
    m = copy.deepcopy(model)                   # the earlier images were fed: far from D_f alone
    assert forget_only_violation(run, m, now.x, allowed=allowed) > 3.0


def test_unlearn_refuses_earlier_images_it_cannot_use(pretrained_cnn):
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 4, seed=0)
    m = copy.deepcopy(model)
    with pytest.raises(ValueError, match="has none"):
        unlearn(m, req.x, req.y, method="neggrad", earlier_x=req.x)
    with pytest.raises(ValueError, match="shaped like forget_x"):
        unlearn(m, req.x, req.y, earlier_x=req.x[:, :, :5])
    with pytest.raises(ValueError, match="shaped like forget_x"):
        unlearn(m, req.x, req.y, earlier_x=[1, 2])
    for bad in (req.x * 255, req.x.masked_fill(req.x > 0.5, float("nan"))):
        with pytest.raises(ValueError, match=r"earlier_x (must hold pixels in \[0, 1|holds NaN)"):
            unlearn(m, req.x, req.y, earlier_x=bad)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), model.parameters()))
    # no earlier image is the same run as none (same seed, same machine)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    cfg = resolve("default", **FAST)
    unlearn(a, req.x, req.y, config=cfg, earlier_x=req.x[:0])
    unlearn(b, req.x, req.y, config=cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("method, remember, hold, expect", [
    ("adv+imp", True, False, True), ("oracle", True, False, True),
    ("neggrad", True, False, False), ("adv+imp", False, False, False),
    ("adv+imp", True, True, True), ("neggrad", False, True, False)])
def test_continual_passes_each_request_the_earlier_ones(pretrained_cnn, monkeypatch, method,
                                                        remember, hold, expect):
    # remember: every earlier request, as anchors (methods with them); hold: the earlier
    # requests of the request's own objective, in the objective and the stop (any method)
    model, data = pretrained_cnn
    reqs = ForgetRequest.sequence(data, k=4, n_requests=3, seed=2, relabel=(2,))
    got = []

    def spy(m, d, req, *, earlier=(), hold=(), **kw):   # record, then stand in for the run
        got.append(([q.seed for q in earlier], [q.seed for q in hold]))
        return copy.deepcopy(m), {"reached": True, "steps": 0, "sec_total": 0.0}
    monkeypatch.setattr(continual, "unlearned", spy)
    monkeypatch.setattr(continual, "accuracy", lambda *a, **k: 0.5)
    continual_unlearn(copy.deepcopy(model), data, reqs, method=method, remember=remember,
                      hold=hold, keep_scale=False)
    s = [q.seed for q in reqs]                          # request 2 relabels: it holds none
    assert [e for e, _ in got] == ([[], s[:1], s[:2]] if expect else [[], [], []])
    assert [h for _, h in got] == ([[], [], s[:1]] if hold else [[], [], []])


@pytest.mark.parametrize("flag", ["remember", "hold"])
def test_continual_refuses_a_flag_that_is_not_a_bool(pretrained_cnn, flag):
    model, data = pretrained_cnn
    reqs = ForgetRequest.sequence(data, k=4, n_requests=1, seed=2)
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        continual_unlearn(copy.deepcopy(model), data, reqs, **{flag: "yes"})
