"""Tests for kit.method.attacks: targets, the PGD core (targeted, untargeted, FGSM), the
adversarial set (CPU, seconds)."""
import pytest
import torch
from torch import nn

from kit.core.request import draw_targets
from kit.core.utils import eval_mode
from kit.method.attacks import (NORMS, SELECT_MODES, AdversarialSet, fgsm, make_adversarial, pgd,
                                run_pgd)

C = 4  # classes of the toy problem


class ModeProbe(nn.Module):
    """Identity that records the train flag it saw on each forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def _toy_data(n=200, seed=0):
    # class c brightens quadrant c of a 1x4x4 image
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(C, (n,), generator=g)
    x = torch.rand(n, 1, 4, 4, generator=g) * 0.3
    for c in range(C):
        r, s = divmod(c, 2)
        x[y == c, :, 2 * r:2 * r + 2, 2 * s:2 * s + 2] += 0.6
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(ModeProbe(), nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, C))
    x, y = _toy_data()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.95, acc
    return model, x[:6], y[:6]


# --------------------------------------------------------------------------- draw_targets
def test_targets_never_label_and_never_exclude():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(5, (5000,), generator=g)
    t = draw_targets(y, 5, generator=g)
    assert t.dtype == torch.long and ((t >= 0) & (t < 5)).all() and (t != y).all()
    ex = (y + torch.randint(1, 5, (5000,), generator=g)) % 5
    ex[:100] = y[:100]  # exclude == label: only the label is avoided
    t = draw_targets(y, 5, generator=g, exclude=ex)
    assert (t != y).all() and (t != ex).all()
    # the official fallback bug (C // 2 = own label) must not appear for class C // 2
    y2 = torch.full((2000,), 2)
    assert (draw_targets(y2, 5, generator=g) != 2).all()


@pytest.mark.parametrize("use_exclude", [False, True])
def test_targets_uniform_over_other_classes(use_exclude):
    n, k = 40000, 6
    y = torch.full((n,), 2)
    ex = torch.full((n,), 4) if use_exclude else None
    t = draw_targets(y, k, generator=torch.Generator().manual_seed(3), exclude=ex)
    counts = torch.bincount(t, minlength=k).double()
    allowed = [c for c in range(k) if c != 2 and not (use_exclude and c == 4)]
    assert counts[[c for c in range(k) if c not in allowed]].sum() == 0
    expected = n / len(allowed)
    chi2 = ((counts[allowed] - expected) ** 2 / expected).sum().item()
    assert chi2 < 25, chi2  # dof <= 4: p ~ 1e-4


def test_targets_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        draw_targets(torch.zeros(3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="at least 3"):
        draw_targets(torch.zeros(3, dtype=torch.long), 2, exclude=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        draw_targets(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="exclude"):
        draw_targets(torch.tensor([0, 1]), 3, exclude=torch.tensor([0, 5]))


# --------------------------------------------------------------------------- pgd
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_pgd_stays_in_ball_and_box(trained, norm):
    model, x, y = trained
    eps = 0.5 if norm == "l2" else 0.1
    t = draw_targets(y, C, generator=torch.Generator().manual_seed(0))
    x_adv = pgd(model, x, t, norm=norm, eps=eps, step_size=0.2, steps=15,
                generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
    assert (size <= eps + 1e-5).all(), size
    assert size.max() > 0.5 * eps  # the constraint is actually reached


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_pgd_random_start_only_stays_in_ball(norm):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, C))
    x = torch.rand(50, 1, 4, 4)
    x_adv = pgd(model, x, torch.zeros(50, dtype=torch.long), norm=norm, eps=0.3, steps=0,
                generator=torch.Generator().manual_seed(0))
    d = (x_adv - x).flatten(1)
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
    assert (size <= 0.3 + 1e-6).all() and (size > 0).any()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_decreases_target_ce_and_leaves_model_alone(trained):
    model, x, y = trained
    probe = model[0]
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t = draw_targets(y, C, generator=torch.Generator().manual_seed(0))
    probe.seen.clear()
    x_adv = pgd(model, x, t, eps=2.0, step_size=0.1, steps=40,
                generator=torch.Generator().manual_seed(0))
    assert probe.seen and not any(probe.seen)  # eval mode during the attack
    assert model.training and probe.training   # restored afterwards
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None, n
    model.eval()
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        clean = ce(model(x), t, reduction="none")
        adv = ce(model(x_adv), t, reduction="none")
    assert (adv < clean).all(), (clean, adv)
    assert (model(x_adv).argmax(1) == t).float().mean() >= 0.5


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_pgd_one_step_is_normalised_descent(trained, norm):
    model, _, y = trained
    model.eval()
    x = torch.full((6, 1, 4, 4), 0.5)  # interior: no clipping after one small step
    t = (y + 1) % C
    x_adv = pgd(model, x, t, norm=norm, eps=4.0, step_size=0.05, steps=1, random_start=False)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), t, reduction="sum"), xg)
    if norm == "l2":  # per-sample unit gradient times step_size, whatever the gradient scale
        expected = x - 0.05 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        expected = x - 0.05 * g.sign()
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def test_pgd_rejects_bad_input(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, x * 300 - 1, y)
    with pytest.raises(ValueError, match="l2"):
        pgd(model, x, y, norm="l1")


# --------------------------------------------------------------------------- make_adversarial
def _make(model, x, y, **kw):
    args = dict(num_classes=C, per_instance=5, eps=1.5, step_size=0.1, steps=20, seed=0)
    args.update(kw)
    return make_adversarial(model, x, y, **args)


def test_make_adversarial_structure(trained):
    model, x, y = trained
    s = _make(model, x, y)
    assert isinstance(s, AdversarialSet) and len(s) == 30
    assert s.images.shape == (30, 1, 4, 4) and s.images.min() >= 0 and s.images.max() <= 1
    assert torch.equal(s.source, torch.arange(6).repeat_interleave(5))
    assert torch.equal(s.source_labels, y[s.source])
    assert (s.targets != s.source_labels).all()
    assert ((s.images - x[s.source]).flatten(1).norm(dim=1) <= 1.5 + 1e-5).all()
    with torch.no_grad():
        assert torch.equal(s.predicted, model.eval()(s.images).argmax(1))
    assert torch.equal(s.success, s.predicted == s.targets)
    assert s.success_rate == pytest.approx(s.success.float().mean().item())
    assert 0.3 < s.success_rate <= 1.0


def test_make_adversarial_exclude(trained):
    model, x, y = trained
    ex = (y + 1) % C
    s = _make(model, x, y, exclude=ex, steps=1)
    assert (s.targets != ex[s.source]).all() and (s.targets != y[s.source]).all()


def test_make_adversarial_deterministic_and_chunk_invariant(trained):
    model, x, y = trained
    a = _make(model, x, y, chunk_size=2048)
    b = _make(model, x, y, chunk_size=2048)
    c = _make(model, x, y, chunk_size=7)
    d = _make(model, x, y, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.targets, c.targets)
    torch.testing.assert_close(a.images, c.images, atol=1e-5, rtol=0)
    assert not torch.equal(a.targets, d.targets) or not torch.allclose(a.images, d.images)


def test_make_adversarial_restores_mode(trained):
    model, x, y = trained
    model.train()
    _make(model, x, y, steps=2)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    _make(model, x, y, steps=2)
    assert not any(m.training for m in model.modules())


def _fake_set():
    # 4 examples from 2 sources with labels (0, 1): hand-set predictions
    return AdversarialSet(
        images=torch.arange(4.0).view(4, 1, 1, 1), targets=torch.tensor([1, 2, 0, 2]),
        source=torch.tensor([0, 0, 1, 1]), source_labels=torch.tensor([0, 0, 1, 1]),
        predicted=torch.tensor([1, 0, 0, 3]), success=torch.tensor([True, False, True, False]))


def test_select_modes():
    s = _fake_set()
    assert s.success_rate == 0.5
    im, lab = s.select("keep")
    assert torch.equal(lab, s.targets) and len(im) == 4
    im, lab = s.select("successful")
    assert torch.equal(im.flatten(), torch.tensor([0.0, 2.0])) and torch.equal(lab, torch.tensor([1, 0]))
    im, lab = s.select("predicted")  # drops example 1 (predicted as its source label 0)
    assert torch.equal(im.flatten(), torch.tensor([0.0, 2.0, 3.0]))
    assert torch.equal(lab, torch.tensor([1, 0, 3]))
    im, lab = s.select("predicted_all")  # every example, labelled with the model's prediction
    assert torch.equal(im, s.images) and torch.equal(lab, s.predicted)
    assert set(SELECT_MODES) == {"keep", "successful", "predicted", "predicted_all"}


def test_unknown_names_list_valid_ones(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="unknown select mode 'all'; valid names: keep, succ"):
        _fake_set().select("all")
    with pytest.raises(ValueError, match="unknown norm 'l3'; valid names: l2, linf"):
        _make(model, x, y, norm="l3")
    with pytest.raises(ValueError, match="valid names: l2, linf"):
        run_pgd(model, x, y, norm="L2", eps=1.0, step_size=0.1, steps=1)


# --------------------------------------------------------------------------- the PGD core
def _size(d, norm):
    d = d.flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("random_start", [False, True])
def test_untargeted_pgd_raises_the_true_label_ce_within_ball_and_box(trained, norm, random_start):
    model, x, y = trained
    eps = 1.0 if norm == "l2" else 0.15
    delta = (NORMS[norm].random_start(x.shape, eps, torch.Generator().manual_seed(0))
             if random_start else None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with eval_mode(model):
        x_adv = run_pgd(model, x, y, norm=norm, eps=eps, step_size=eps / 4, steps=20,
                        targeted=False, start_delta=delta)
        with torch.no_grad():
            ce = nn.functional.cross_entropy
            clean, adv = ce(model(x), y, reduction="none"), ce(model(x_adv), y, reduction="none")
    assert (adv > clean).all(), (clean, adv)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (_size(x_adv - x, norm) <= eps + 1e-5).all()
    assert _size(x_adv - x, norm).max() > 0.5 * eps
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n


def test_targeted_core_is_what_pgd_runs(trained):
    model, x, y = trained
    t = (y + 1) % C
    for norm in sorted(NORMS):
        got = pgd(model, x, t, norm=norm, eps=0.5, step_size=0.1, steps=5,
                  generator=torch.Generator().manual_seed(4))
        delta = NORMS[norm].random_start(x.shape, 0.5, torch.Generator().manual_seed(4))
        with eval_mode(model):
            core = run_pgd(model, x, t, norm=norm, eps=0.5, step_size=0.1, steps=5,
                           start_delta=delta)
        assert torch.equal(got, core)


def _linear_model():
    # logits (w . x, 0) on a flattened 1x2x2 image: the CE gradient of either label has the
    # sign pattern of +-w, so one FGSM step is known by hand
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    return model.eval()


def test_fgsm_is_one_sign_step_of_the_given_size():
    model = _linear_model()
    x = torch.tensor([0.5, 0.5, 0.97, 0.5]).view(1, 1, 2, 2)
    # untargeted on label 0: ascend CE(0), i.e. lower w . x: x - eps * sign(w); the zero
    # weight gets a zero gradient (no move); label 1 moves the other way, clipped at 1
    for label, expected in ((0, [0.4, 0.6, 0.87, 0.5]), (1, [0.6, 0.4, 1.0, 0.5])):
        got = fgsm(model, x, torch.tensor([label]), eps=0.1)
        torch.testing.assert_close(got.flatten(), torch.tensor(expected), atol=1e-7, rtol=0)
    # targeted towards class 1 descends CE(1): the same direction as ascending CE(0)
    torch.testing.assert_close(fgsm(model, x, torch.tensor([1]), eps=0.1, targeted=True),
                               fgsm(model, x, torch.tensor([0]), eps=0.1))
    assert torch.equal(fgsm(model, x, torch.tensor([0]), eps=0.0), x)


def test_fgsm_matches_the_sign_formula_on_a_trained_model(trained):
    model, x, y = trained
    with eval_mode(model):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
        expected = (x + 0.1 * g.sign()).clamp(0, 1)
        assert torch.equal(fgsm(model, x, y, eps=0.1), expected)
