"""project: the objective's gradient kept off the anchors' where they conflict (hand values,
the property it promises, that the engine uses it, determinism, the contract)."""
import copy

import pytest
import torch

import kit.method.engine as engine
import kit.method.projection as projection
from kit.core.request import ForgetRequest
from kit.method.contract import augmentation_inputs, forget_only_violation
from kit.method.projection import adam_metric, backward_projected, project_off
from kit.method.recipes import resolve


def test_backward_by_hand():
    w = torch.ones(2, requires_grad=True)
    u, v = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 2.0])
    # g_o = u, g_a = v conflict (u.v = -2): u - (-2 / 4) v = (1, 0); + v; + the penalty's w
    backward_projected([w], (w * u).sum(), (w * v).sum(), "global", (w * w).sum() / 2)
    assert w.grad.tolist() == [2.0, 3.0]
    w.grad = None
    backward_projected([w], (w * u).sum(), (w * -v).sum(), "tensor")   # no conflict: sum
    assert w.grad.tolist() == [1.0, -3.0]


@pytest.mark.parametrize("per_tensor", [False, True])
def test_projected_objective_never_points_against_the_anchors(per_tensor):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        grads = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        refs = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        out = project_off(grads, refs, per_tensor=per_tensor)
        dots = [float((a * r).sum()) for a, r in zip(out, refs)]
        before = [float((a * r).sum()) for a, r in zip(grads, refs)]
        if per_tensor:
            assert min(dots) >= -1e-5
            for a, b, d in zip(out, grads, before):          # no conflict: left as it was
                assert torch.equal(a, b) if d >= 0 else not torch.equal(a, b)
        else:
            assert sum(dots) >= -1e-5
            assert all(torch.equal(a, b) for a, b in zip(out, grads)) == (sum(before) >= 0)
        # only a component is taken away: never longer than it was
        assert sum(float((a * a).sum()) for a in out) <= sum(float((b * b).sum())
                                                             for b in grads) + 1e-5


def test_in_a_metric_the_projected_objective_never_points_against_the_anchors():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        refs = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        metric = [torch.rand(3, 4, generator=g) * 10 + 0.01, torch.rand(5, generator=g) + 0.01]
        out = project_off(grads, refs, metric=metric)
        before = sum(float((a * m * r).sum()) for a, m, r in zip(grads, metric, refs))
        after = sum(float((a * m * r).sum()) for a, m, r in zip(out, metric, refs))
        assert after >= -1e-4 * (1 + abs(before))
        if before >= 0:                          # no conflict in the metric: unchanged
            assert all(torch.equal(a, b) for a, b in zip(out, grads))
        else:                                    # on the boundary: M-orthogonal to refs
            assert abs(after) <= 1e-4 * abs(before)
    ones = [torch.ones(3, 4), torch.ones(5)]      # M = 1 is the plain projection
    for a, b in zip(project_off(grads, refs, metric=ones), project_off(grads, refs)):
        assert torch.allclose(a, b)


def test_adam_metric_by_hand():
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    assert adam_metric([w], opt) is None                 # before the first step: plain
    assert adam_metric([w], torch.optim.SGD([w], lr=0.1)) is None
    for grad in ([3.0, 4.0], [1.0, 0.0]):
        w.grad = torch.tensor(grad)
        opt.step()
    # v = 0.99 * 0.01 * g1^2 + 0.01 * g2^2, bias 1 - 0.99^2
    v = (0.99 * 0.01 * torch.tensor([9.0, 16.0]) + 0.01 * torch.tensor([1.0, 0.0])) / (1 - 0.99 ** 2)
    assert torch.allclose(adam_metric([w], opt)[0], 1 / (v.sqrt() + 1e-8))


def test_an_averaged_reference_is_the_moving_average_and_the_objective_never_points_against_it():
    torch.manual_seed(0)
    w = torch.zeros(5, requires_grad=True)
    proj, beta, avg = projection.Projector([w], "global", ema=0.8), 0.8, None
    for _ in range(20):
        a, o = torch.randn(5), torch.randn(5)
        w.grad = None
        proj(w @ o, w @ a)
        avg = a if avg is None else beta * avg + (1 - beta) * a
        assert torch.allclose(proj.ref[0], avg, atol=1e-6)
        g_o = w.grad - a                                     # the objective's part of the step
        assert g_o @ avg >= -1e-5                            # never against the reference
        if o @ avg >= 0:
            assert torch.allclose(g_o, o)                    # untouched without a conflict
    with pytest.raises(ValueError, match="ema must be in"):
        projection.Projector([w], "global", ema=1.0)


def test_the_engine_uses_it_deterministically_within_the_contract(pretrained_cnn, monkeypatch):
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 8, seed=0)
    cfg = resolve("default", pgd_steps=5, per_instance=2, max_steps=6, lr=1e-3)
    calls = []
    real = projection.backward_projected
    monkeypatch.setattr(projection, "backward_projected",
                        lambda *a, **kw: (calls.append(a[3]), real(*a, **kw)))

    def run(c, method="adv+imp"):
        m = copy.deepcopy(model)
        res = engine.unlearn(m, req.x, req.y, method=method, config=c, seed=0)
        return res, torch.cat([p.detach().flatten() for p in m.parameters()])

    res, off = run(cfg)
    assert not calls
    tensor = cfg.replace(project="tensor")
    res_a, a = run(tensor)
    assert calls == ["tensor"] * res_a.steps and res_a.steps > 0
    _, b = run(tensor)
    assert torch.equal(a, b)                    # seeded: the same weights twice
    assert not torch.equal(a, off)              # and not the run without it
    res_m, m = run(cfg.replace(project="adam"))          # in Adam's metric: another run
    res_g, g_ = run(cfg.replace(project="global"))
    with pytest.raises(ValueError, match="project='adam' takes Adam's metric"):
        cfg.replace(project="adam", optimizer="sgd")   # would be "global" unannounced
    assert res_m.steps > 1 and not torch.equal(m, g_)
    res_e, e = run(cfg.replace(project="global", project_ema=0.9))   # an averaged reference
    _, e2 = run(cfg.replace(project="global", project_ema=0.9))
    assert res_e.steps > 1 and torch.equal(e, e2) and not torch.equal(e, g_)
    with pytest.raises(ValueError, match="project_ema=0.9 averages the reference"):
        cfg.replace(project_ema=0.9)                  # the projection is off: would do nothing
    with pytest.raises(ValueError, match="project_ema must be <= 0.999"):
        cfg.replace(project="global", project_ema=1.0)   # a reference frozen at step 1
    calls.clear()
    run(tensor, method="imp")                   # no anchors: nothing to project against
    assert not calls
    allowed = augmentation_inputs(req.x, cfg.aug_anchors, seed=0, transform=cfg.aug_transform)
    held = copy.deepcopy(model)
    dist = forget_only_violation(
        lambda: engine.unlearn(held, req.x, req.y, config=cfg.replace(project="global"), seed=0),
        held, req.x, allowed=allowed)
    assert dist <= cfg.eps + 1e-4               # it sees no input the plain run does not
