"""Tests for kit.baselines (CPU, seconds): the registry, the D_r-free contract, the masked
update, the stop rule, and the effect of the baselines on the pre-trained mnist5k CNN."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kit.baselines import (BASELINES, get_baseline, masked_step, perturbation_radius,
                           run_baseline, saliency_mask)
from kit.baselines._loop import DEFAULT_MAX_STEPS, stop_rule
from kit.core.models import create_model
from kit.core.predict import accuracy
from kit.core.request import ForgetRequest
from kit.experiments.cache import pretrained
from kit.method.contract import forget_only_violation

NEEDS_RETAIN = [n for n, b in BASELINES.items() if b.needs_retain]
RETAIN_FREE = [n for n, b in BASELINES.items() if not b.needs_retain]
# tiny settings so that every entry runs in a fraction of a second on 8 + 48 images; an entry
# added to the registry without one here runs with its defaults
FAST = {
    "retrain": dict(epochs=1, batch_size=16),
    "finetune": dict(batch_size=16),
    "neggrad_plus": dict(batch_size=16),
    "scrub": dict(batch_size=16),
    "salun": dict(batch_size=16),
    "random_labels": dict(epochs=3),
    "boundary_shrink": dict(epochs=3),
    "amun": dict(epochs=3, pgd_steps=5, max_doublings=1),
}
CHECKPOINTS = Path(__file__).resolve().parents[1] / "artifacts" / "checkpoints"


@pytest.fixture(scope="module")
def tiny(mnist5k):
    """A randomly initialised cnn, 8 forget and 48 remaining mnist5k images."""
    x, y = mnist5k.train.tensors
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=1, image_size=28).eval()
    return model, x[:8], y[:8], (x[8:56], y[8:56])


def _run(name, model, fx, fy, retain, **extra):
    kw = dict(retain=retain) if BASELINES[name].needs_retain else {}
    return run_baseline(name, model, fx, fy, **kw, **{**FAST.get(name, {}), **extra})


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    """Bit-identical state (weights and buffers) of two models."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- the registry
@pytest.mark.parametrize("name", list(BASELINES))
def test_entry_runs_and_changes_the_weights(tiny, name):
    base, fx, fy, retain = tiny
    model = copy.deepcopy(base)
    before = _weights(model)
    out = _run(name, model, fx, fy, retain)
    assert out["name"] == name and out["needs_retain"] == BASELINES[name].needs_retain
    assert out["steps"] > 0 and out["seconds"] > 0
    assert set(BASELINES[name].defaults) == set(out["config"])
    assert not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert out["reached"] is (accuracy(model, (fx, fy)) == 0.0)
    assert BASELINES[name].fn.__doc__ and BASELINES[name].reference


@pytest.mark.parametrize("name", NEEDS_RETAIN)
def test_entry_needing_retain_raises_without_it(tiny, name):
    base, fx, fy, _ = tiny
    with pytest.raises(ValueError, match="needs the remaining data"):
        run_baseline(name, copy.deepcopy(base), fx, fy)


@pytest.mark.parametrize("name", RETAIN_FREE)
def test_retain_free_entry_refuses_retain(tiny, name):
    base, fx, fy, retain = tiny
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match="does not accept retain"):
        run_baseline(name, model, fx, fy, retain=retain)
    with pytest.raises(TypeError):  # the function itself has no way to receive D_r
        BASELINES[name].fn(model, fx, fy, retain=retain, num_classes=10, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(base.parameters(), model.parameters()))


def test_unknown_names_list_the_valid_ones(tiny):
    base, fx, fy, _ = tiny
    with pytest.raises(ValueError, match="unknown baseline 'nope'; valid names: retrain"):
        run_baseline("nope", copy.deepcopy(base), fx, fy)
    with pytest.raises(ValueError) as err:
        get_baseline("Retrain")
    assert all(name in str(err.value) for name in BASELINES)
    with pytest.raises(ValueError, match="valid names"):
        perturbation_radius("nope", fx)
    with pytest.raises(TypeError, match="valid: bound"):
        run_baseline("boundary_shrink", copy.deepcopy(base), fx, fy, eps=1.0)


def test_seeded_runs_are_identical_and_retain_may_be_a_tuple_or_dataset(tiny):
    base, fx, fy, (rx, ry) = tiny
    a, b, c = (copy.deepcopy(base) for _ in range(3))
    run_baseline("random_labels", a, fx, fy, seed=3, epochs=2)
    run_baseline("random_labels", b, fx, fy, seed=3, epochs=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    run_baseline("finetune", a, fx, fy, retain=(rx, ry), batch_size=16)
    run_baseline("finetune", b, fx, fy, retain=TensorDataset(rx, ry), batch_size=16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_retrain_does_not_depend_on_the_weights_it_is_given(tiny):
    base, fx, fy, retain = tiny
    other = copy.deepcopy(base)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    a, b = copy.deepcopy(base), other
    _run("retrain", a, fx, fy, retain, seed=5)
    _run("retrain", b, fx, fy, retain, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# --------------------------------------------------------------------------- D_r-free contract
@pytest.mark.parametrize("name", RETAIN_FREE)
def test_retain_free_entry_feeds_only_points_near_the_forget_set(tiny, name):
    base, fx, fy, (rx, _) = tiny
    hp = FAST.get(name, {})
    radius = perturbation_radius(name, fx, **hp)
    model = copy.deepcopy(base)
    seen = forget_only_violation(lambda: run_baseline(name, model, fx, fy, **hp), model, fx)
    assert seen <= radius + 1e-4
    if name == "random_labels":
        assert radius == 0.0
    # the same run plus one remaining image is caught: the check can fail
    model = copy.deepcopy(base)

    def cheat():
        model(rx[:1])
        run_baseline(name, model, fx, fy, **hp)

    assert forget_only_violation(cheat, model, fx) > radius + 1.0


def test_adversarial_entries_do_probe_around_the_forget_set(tiny):
    # the recorded inputs include the attacks' points, so the radius bound above is not vacuous
    base, fx, fy, _ = tiny
    for name in ("boundary_shrink", "amun"):
        model = copy.deepcopy(base)
        hp = FAST[name]
        seen = forget_only_violation(lambda: run_baseline(name, model, fx, fy, **hp), model, fx)
        assert 0.0 < seen <= perturbation_radius(name, fx, **hp) + 1e-4


def test_perturbation_radius_follows_the_hyper_parameters(tiny):
    _, fx, _, _ = tiny
    assert perturbation_radius("amun", fx, eps=0.25, max_doublings=3) == pytest.approx(2.0)
    assert perturbation_radius("boundary_shrink", fx, bound=0.1) == pytest.approx(
        (0.1 + 0.5 / 255) * 28)
    with pytest.raises(ValueError, match="remaining data"):
        perturbation_radius("finetune", fx)


# --------------------------------------------------------------------------- masked update
def _linear_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(6, 4)
    x, y = torch.randn(32, 6, generator=g), torch.randint(4, (32,), generator=g)
    masks = [torch.rand(p.shape, generator=g) < 0.5 for p in model.parameters()]
    return model, x, y, masks


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=5e-4),
], ids=["sgd-momentum-wd", "adam-wd"])
def test_masked_step_keeps_weights_outside_the_mask_bit_identical(make_opt):
    model, x, y, masks = _linear_problem()
    params = list(model.parameters())
    opt = make_opt(params)
    for _ in range(3):  # warm optimizer state (momentum, moments) built without any mask
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
    before = _weights(model)
    for _ in range(5):
        opt.zero_grad()
        _loss(model, x, y).backward()
        assert all(bool((p.grad[~m] != 0).all()) for p, m in zip(params, masks))
        masked_step(opt, params, masks)
    for p, m, old in zip(params, masks, before):
        assert torch.equal(p[~m], old[~m])
        assert bool((p[m] != old[m]).all())


def test_masking_the_gradient_alone_lets_frozen_weights_drift():
    # the classic bug masked_step exists for: weight decay and momentum move a zero-grad weight
    model, x, y, masks = _linear_problem()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = _weights(model)
    for _ in range(5):
        opt.zero_grad()
        _loss(model, x, y).backward()
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        opt.step()
    assert any(not torch.equal(p[~m], old[~m]) for p, m, old in zip(params, masks, before))


def test_masked_step_rejects_masks_that_do_not_fit():
    model, _, _, masks = _linear_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="one mask per parameter"):
        masked_step(opt, list(model.parameters()), masks[:1])
    with pytest.raises(ValueError, match="bool tensor"):
        masked_step(opt, list(model.parameters()), [m.float() for m in masks])


def test_saliency_mask_keeps_the_largest_gradients_over_all_weights():
    model, x, y, _ = _linear_problem(seed=1)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    masks = saliency_mask(model, x.view(32, 6), y, keep=0.5)
    flat_g = torch.cat([g.abs().flatten() for g in grads])
    flat_m = torch.cat([masks[n].flatten() for n, _ in model.named_parameters()])
    assert int(flat_m.sum()) == round(0.5 * flat_g.numel())
    assert float(flat_g[flat_m].min()) >= float(flat_g[~flat_m].max())
    assert all(p.grad is None for p in model.parameters())


def test_salun_moves_only_salient_weights(tiny):
    base, fx, fy, retain = tiny
    model = copy.deepcopy(base)
    masks = saliency_mask(model, fx, fy, keep=0.5)
    before = dict((n, p.detach().clone()) for n, p in model.named_parameters())
    out = _run("salun", model, fx, fy, retain)
    assert out["mask_share"] == pytest.approx(0.5, abs=1e-5)
    for n, p in model.named_parameters():
        assert torch.equal(p[~masks[n]], before[n][~masks[n]])
    assert any(not torch.equal(p[masks[n]], before[n][masks[n]])
               for n, p in model.named_parameters())


# --------------------------------------------------------------------------- pre-trained mnist5k
@pytest.fixture(scope="module")
def request32(mnist5k):
    model, data, _ = pretrained(data=mnist5k, cache_dir=CHECKPOINTS)
    req = ForgetRequest.draw(data, 32, seed=0)
    return model, data, req.retain_idx, req.x, req.y


@pytest.mark.parametrize("name", ["random_labels", "boundary_shrink"])
def test_forget_accuracy_drops_on_the_pretrained_cnn(request32, name):
    base, _, _, fx, fy = request32
    assert accuracy(base, (fx, fy)) > 0.9
    model = copy.deepcopy(base)
    run_baseline(name, model, fx, fy)
    assert accuracy(model, (fx, fy)) < 0.5


def test_retrain_on_the_remaining_data_gives_a_different_model(request32):
    base, data, r_idx, fx, fy = request32
    model = copy.deepcopy(base)
    out = run_baseline("retrain", model, fx, fy, retain=torch.utils.data.Subset(data.train, r_idx),
                       epochs=1)
    assert out["steps"] == len(r_idx) // 64
    dist = sum(float((p - q).detach().pow(2).sum())
               for p, q in zip(model.parameters(), base.parameters()))
    assert dist > 1.0
    assert accuracy(model, data.test) > 0.5  # one epoch from scratch already learns something


# --------------------------------------------------------------------------- the stop rule
def _no_epochs(name):
    return {k: v for k, v in FAST.get(name, {}).items() if k != "epochs"}


def _forget_checks(model, fx, fy):
    """Record D_f accuracy at every eval-mode forward pass of the whole forget set."""
    seen = []

    def hook(module, inputs, logits):
        if not module.training and torch.equal(inputs[0], fx):
            seen.append(float((logits.argmax(1) == fy).float().mean()))

    return seen, model.register_forward_hook(hook)


def test_stop_rule_stops_at_the_first_step_with_zero_forget_accuracy(request32):
    base, _, _, fx, fy = request32
    assert accuracy(base, (fx, fy)) > 0.9
    model = copy.deepcopy(base)
    seen, handle = _forget_checks(model, fx, fy)
    out = run_baseline("random_labels", model, fx, fy, stop_at_objective=True, max_steps=300)
    handle.remove()
    steps = out["steps"]
    assert out["reached"] and accuracy(model, (fx, fy)) == 0.0
    assert 1 <= steps <= 300
    # checked before the first and after every step, then once more for `reached`; it
    # stopped at the first check with accuracy 0
    assert len(seen) == steps + 2
    assert all(a > 0 for a in seen[:steps]) and seen[steps] == 0.0 == seen[-1]
    # the stopped run is the fixed-epoch run cut short (k = batch 32: one step per epoch),
    # and the fixed run evaluates D_f only once, for `reached`
    fixed = copy.deepcopy(base)
    seen, handle = _forget_checks(fixed, fx, fy)
    assert run_baseline("random_labels", fixed, fx, fy, epochs=steps)["steps"] == steps
    handle.remove()
    assert _same(model, fixed) and seen == [0.0]


@pytest.mark.parametrize("name", RETAIN_FREE)
def test_stop_rule_keeps_to_the_step_budget(request32, name):
    base, _, _, fx, fy = request32
    for budget in (1, 3):
        model = copy.deepcopy(base)
        out = run_baseline(name, model, fx, fy, stop_at_objective=True, max_steps=budget,
                           **_no_epochs(name))
        assert 1 <= out["steps"] <= budget
        assert out["reached"] is (accuracy(model, (fx, fy)) == 0.0)
        assert out["reached"] or out["steps"] == budget  # stops early only at the objective
        assert out["config"]["stop_at_objective"] and out["config"]["max_steps"] == budget
        assert not model.training


@pytest.mark.parametrize("name", RETAIN_FREE)
def test_stop_rule_takes_no_step_when_the_forget_set_is_already_misclassified(request32, name):
    base, _, _, fx, _ = request32
    base.eval()
    with torch.no_grad():
        wrong = (base(fx).argmax(1) + 1) % 10   # labels the model never predicts: accuracy 0
    model = copy.deepcopy(base)
    out = run_baseline(name, model, fx, wrong, stop_at_objective=True, **_no_epochs(name))
    assert out["steps"] == 0 and out["reached"]
    assert _same(model, base)


def test_stop_rule_arguments_are_checked(tiny):
    base, fx, fy, _ = tiny
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match="stop_at_objective=True"):
        run_baseline("amun", model, fx, fy, max_steps=10)
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match=">= 1"):
            run_baseline("random_labels", model, fx, fy, stop_at_objective=True, max_steps=bad)
    assert _same(model, base)  # refused before any compute
    assert stop_rule(fx, fy, stop_at_objective=True, max_steps=None).max_steps == 600
    assert DEFAULT_MAX_STEPS == 600
    assert stop_rule(fx, fy, stop_at_objective=False, max_steps=None) is None
    for name in RETAIN_FREE:
        defaults = BASELINES[name].defaults
        assert defaults["stop_at_objective"] is False and defaults["max_steps"] is None


@pytest.mark.parametrize("name", ["neggrad_plus", "salun"])
def test_retain_baselines_take_the_stop_rule_too(request32, name):
    base, data, r_idx, fx, fy = request32
    retain = torch.utils.data.Subset(data.train, r_idx[:512].tolist())
    for budget in (1, 40):
        model = copy.deepcopy(base)
        out = run_baseline(name, model, fx, fy, retain=retain, stop_at_objective=True,
                           max_steps=budget)
        assert 1 <= out["steps"] <= budget
        assert out["reached"] is (accuracy(model, (fx, fy)) == 0.0)
        assert out["reached"] or out["steps"] == budget  # stops early only at the objective
    # the budget can outrun the published epochs: the loop goes on over D_r
    model = copy.deepcopy(base)
    out = run_baseline(name, model, fx, fy, retain=torch.utils.data.Subset(data.train,
                       r_idx[:64].tolist()), stop_at_objective=True, max_steps=5, lr=1e-9)
    assert out["steps"] == 5 and not out["reached"]
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match="stop_at_objective=True"):
        run_baseline(name, model, fx, fy, retain=retain, max_steps=10)
