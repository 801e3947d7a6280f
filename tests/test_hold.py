"""Continual unlearning that holds earlier forget sets in the objective and the stopping rule:
unlearn(hold=(images, targets)), the oracle's too, and the cache key
(kit.method.engine.run_updates, kit.method.anchors.check_hold); which requests
continual_unlearn(hold=True) holds: test_remember.py."""
import copy

import pytest
import torch

from kit.baselines.oracle import oracle_unlearn
from kit.core.predict import accuracy
from kit.core.request import ForgetRequest
from kit.experiments.cache import unlearned
from kit.method.contract import forget_only_violation
from kit.method.engine import unlearn
from kit.method.recipes import resolve

FAST = dict(pgd_steps=5, per_instance=2)


@pytest.fixture(scope="module")
def forgot(pretrained_cnn):
    """(pre-trained model, data, model with request `a` unlearned, a, a later request b)."""
    model, data = pretrained_cnn
    a, b = ForgetRequest.sequence(data, k=4, n_requests=2, seed=3)
    m = copy.deepcopy(model)
    assert unlearn(m, a.x, a.y, config=resolve("fast", **FAST), seed=a.seed).reached
    return model, data, m, a, b


def test_hold_keeps_the_earlier_images_unlearned_when_the_request_is_reached(forgot):
    _, _, after_a, a, b = forgot
    cfg = resolve("fast", **FAST, max_steps=1000)
    for method in ("adv+imp", "neggrad"):            # any method: hold needs no anchors
        m = copy.deepcopy(after_a)
        res = unlearn(m, b.x, b.y, method=method, config=cfg, seed=b.seed, hold=(a.x, a.y))
        assert res.reached, method
        assert accuracy(m, (a.x, a.y)) == 0.0 and accuracy(m, (b.x, b.y)) == 0.0
        assert len(res.done) == len(res.final_pred) == b.k   # per instance: the request's own


def test_the_stop_waits_for_the_held_images(forgot):
    # the request's own images are already unlearned: without hold the run stops at step 0;
    # with a held set the model still classifies right, it cannot, and `reached` says so
    model, _, after_a, a, b = forgot
    cfg = resolve("fast", **FAST, max_steps=2)
    m = copy.deepcopy(after_a)
    plain = unlearn(m, a.x, a.y, config=cfg, seed=a.seed)
    assert plain.reached and plain.steps == 0
    assert accuracy(model, (b.x, b.y)) == 1.0
    m = copy.deepcopy(after_a)
    held = unlearn(m, a.x, a.y, config=cfg, seed=a.seed, hold=(b.x, b.y))
    assert held.steps >= 1
    assert held.reached == (accuracy(m, (b.x, b.y)) == 0.0 and accuracy(m, (a.x, a.y)) == 0.0)
    for every in (1, 2):                             # the batched check covers them too
        m = copy.deepcopy(after_a)
        res = unlearn(m, a.x, a.y, config=cfg.replace(check_every=every), seed=a.seed,
                      hold=(b.x, b.y))
        assert res.reached == (accuracy(m, (b.x, b.y)) == 0.0), every


def test_relabel_hold_counts_in_the_stop(pretrained_cnn):
    """Relabeling with held images: a request already relabelled stops at step 0 alone, and
    not while held images lack their new labels; `reached` covers both. (Whether a later
    request flips every image within a budget depends on the CPU's round-off: on one
    machine one of four stays, its new label pulling against a held image; so the test
    asserts the rule, not that trajectory.)"""
    model, data = pretrained_cnn
    a, b = ForgetRequest.sequence(data, k=4, n_requests=2, seed=5, relabel=(1, 2))
    cfg = resolve("fast-relabel", "relabel", **FAST, max_steps=1000)
    after_a = copy.deepcopy(model)
    assert unlearn(after_a, a.x, a.y, objective="relabel", new_labels=a.new_labels,
                   config=cfg, seed=a.seed).reached
    assert accuracy(after_a, (b.x, b.new_labels)) < 1.0
    for hold in (None, (b.x, b.new_labels)):
        m = copy.deepcopy(after_a)
        res = unlearn(m, a.x, a.y, objective="relabel", new_labels=a.new_labels,
                      config=cfg.replace(max_steps=30), seed=a.seed, hold=hold)
        own, held = accuracy(m, (a.x, a.new_labels)), accuracy(m, (b.x, b.new_labels))
        assert (res.steps == 0) if hold is None else (res.steps >= 1)
        assert res.reached == (own == 1.0 and (hold is None or held == 1.0))
    m = copy.deepcopy(after_a)
    res = unlearn(m, b.x, b.y, objective="relabel", new_labels=b.new_labels, config=cfg,
                  seed=b.seed, hold=(a.x, a.new_labels))
    kept, own = accuracy(m, (a.x, a.new_labels)), accuracy(m, (b.x, b.new_labels))
    assert res.reached == (kept == 1.0 and own == 1.0)
    assert len(res.done) == b.k and res.done.sum() == round(own * b.k)


def test_the_oracle_holds_too(forgot):
    _, data, after_a, a, b = forgot
    m = copy.deepcopy(after_a)
    res = oracle_unlearn(m, b.x, b.y, retain=torch.utils.data.Subset(data.train, range(256)),
                         config=resolve("fast", max_steps=1000), seed=b.seed, hold=(a.x, a.y))
    assert res.reached and accuracy(m, (a.x, a.y)) == 0.0


def test_hold_feeds_forget_images_only(forgot):
    model, _, _, a, b = forgot
    cfg = resolve("fast", **FAST, max_steps=20)
    m = copy.deepcopy(model)
    run = lambda: unlearn(m, b.x, b.y, config=cfg, hold=(a.x, a.y))  # noqa: E731
    assert forget_only_violation(run, m, torch.cat([a.x, b.x])) <= cfg.eps + 1e-4
    m = copy.deepcopy(model)                      # the held images were fed: far from b alone
    assert forget_only_violation(run, m, b.x) > 3.0


def test_hold_refuses_what_it_cannot_hold(forgot):
    model, _, _, a, b = forgot
    m = copy.deepcopy(model)
    bad = [((a.x[:, :, :5], a.y), "shaped like forget_x"), ([a.x], "a pair"),
           ((a.x * 255, a.y), r"hold .*pixels in \[0, 1\]"),
           ((a.x, a.y[:2]), r"hold .*shape \(4,\)"), ((a.x, a.y + 10), "hold .*out of range"),
           ((a.x, a.y.float()), "hold .*integer")]
    for hold, match in bad:
        with pytest.raises(ValueError, match=match):
            unlearn(m, b.x, b.y, hold=hold)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), model.parameters()))
    # nothing to hold is the same run as no hold (same seed, same machine)
    x, y = copy.deepcopy(model), copy.deepcopy(model)
    cfg = resolve("fast", **FAST, max_steps=10)
    unlearn(x, b.x, b.y, config=cfg, hold=(a.x[:0], a.y[:0]))
    unlearn(y, b.x, b.y, config=cfg)
    assert all(torch.equal(p, q) for p, q in zip(x.parameters(), y.parameters()))


def test_the_cache_keys_the_held_requests_and_refuses_another_objective(pretrained_cnn,
                                                                       tmp_path):
    model, data = pretrained_cnn
    a, b = ForgetRequest.sequence(data, k=4, n_requests=2, seed=7)
    cfg = resolve("fast", **FAST, max_steps=3)
    unlearned(model, data, b, method="neggrad", config=cfg, cache_dir=tmp_path)
    unlearned(model, data, b, method="neggrad", config=cfg, cache_dir=tmp_path, hold=[a])
    assert len(list(tmp_path.glob("*.pt"))) == 2     # one entry each: hold is in the key
    r = ForgetRequest.sequence(data, k=4, n_requests=2, seed=7, relabel=(2,))[1]
    with pytest.raises(ValueError, match="hold takes earlier requests of this request's"):
        unlearned(model, data, r, method="neggrad", config=cfg, cache_dir=tmp_path, hold=[a])
