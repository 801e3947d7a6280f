"""Anchors mined during the run (kit.method.mining): the disagreement by hand, the PGD stays
in its ball and raises it without touching the weights, the rounds come when they should
and are counted, and the engine keeps the remaining-data-free contract, which fails when
real images pose as the mining's starting points."""
import copy
import math

import pytest
import torch

import kit.method.mining as mining_mod
from kit.core.request import ForgetRequest
from kit.method.config import FIELDS
from kit.method.contract import augmentation_inputs, forget_only_violation
from kit.method.engine import unlearn
from kit.method.mining import disagreement, mine, mining_starts, with_mined
from kit.method.recipes import resolve

FAST = dict(pgd_steps=10, per_instance=4, max_steps=20, channels_last=False)
MINE = dict(mine_anchors=12, mine_batch=3, mine_every=8, mine_steps=4)


@pytest.fixture(scope="module")
def request8(pretrained_cnn):
    return ForgetRequest.draw(pretrained_cnn[1], 8, seed=0)


def _drifted(model, scale=0.05):
    """A copy of model with its weights moved a little (seeded): a student that disagrees."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return out


def augment_of(x, n, seed=0):
    return mining_starts(x, n, seed=seed, rounds=1)[0]


def test_disagreement_is_the_kl_of_the_tempered_softmaxes_by_hand():
    # p = softmax([0, 0]) = (1/2, 1/2), q = softmax([ln 3, 0]) = (3/4, 1/4):
    # KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    t = torch.tensor([[0.0, 0.0]])
    z = torch.tensor([[math.log(3.0), 0.0]])
    assert float(disagreement(t, z, 1.0)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    # at temperature 2 the same logits doubled give the same value
    assert float(disagreement(2 * t, 2 * z, 2.0)) == pytest.approx(0.5 * math.log(4 / 3),
                                                                   abs=1e-6)
    assert float(disagreement(z, z, 3.0)) == pytest.approx(0.0, abs=1e-7)


def test_mining_stays_in_its_ball_raises_the_disagreement_and_leaves_the_weights(
        pretrained_cnn, request8):
    teacher = copy.deepcopy(pretrained_cnn[0])   # the session's model, without any .grad
    teacher.zero_grad(set_to_none=True)          # an earlier test in this process left
    student = _drifted(teacher).train()
    start = augment_of(request8.x, 16)
    x = mine(student, teacher, start, eps=1.5, steps=5, t=8.0)
    assert x.shape == start.shape and float(x.min()) >= 0 and float(x.max()) <= 1
    assert student.training                              # its mode is put back
    dist = (x - start).flatten(1).norm(dim=1)
    assert float(dist.max()) <= 1.5 + 1e-4 and float(dist.mean()) > 0.5
    with torch.no_grad():
        before = disagreement(teacher(start), student.eval()(start), 8.0).mean()
        after = disagreement(teacher(x), student(x), 8.0).mean()
    assert float(after) > 1.5 * float(before)
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    # the same model as its teacher: no disagreement to climb, the images stay where they start
    same = mine(copy.deepcopy(teacher), teacher, start, eps=1.5, steps=3, t=8.0)
    assert torch.equal(same, start)


def test_rounds_come_every_mine_every_batches_and_are_counted(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    cfg = resolve("robust", **FAST, **MINE)
    source_x = torch.zeros(5, *request8.x.shape[1:])
    calls = []

    def source():
        calls.append(1)
        return source_x, torch.zeros(5, dtype=torch.long)
    passes = {"attack": 0.0}
    labelled = []

    def label(teacher, x):
        labelled.append(x.clone())
        return torch.full((len(x),), 7)
    anchors = with_mined(source, model, request8.x, cfg=cfg, seed=3, passes=passes,
                         label=label)
    per_round = 12 * (2 * 4 + 1 / 3)
    x, y = anchors()
    assert x.shape[0] == 5 + 3 and y[5:].tolist() == [7, 7, 7] and len(labelled) == 1
    assert passes["attack"] == pytest.approx(per_round)
    for _ in range(7):
        anchors()
    assert len(labelled) == 1                              # 8 batches: still the first round
    anchors()
    assert len(labelled) == 2 and passes["attack"] == pytest.approx(2 * per_round)
    assert len(calls) == 9
    # the rounds start from the transforms that mining_starts makes again from D_f and the seed
    starts = mining_starts(request8.x, 12, seed=3, rounds=2)
    for mined, s in zip(labelled, starts):
        assert float((mined - s).flatten(1).norm(dim=1).max()) <= cfg.mine_eps + 1e-4
    # the mined rows of a batch are rows of the latest round
    x, _ = anchors()
    rows = {r.numpy().tobytes() for r in labelled[-1].flatten(1)}
    assert all(r.numpy().tobytes() in rows for r in x[5:].flatten(1))


def test_the_engine_counts_the_mining_and_its_anchors(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    cfg = resolve("distil-t8", **FAST)
    plain = unlearn(copy.deepcopy(model), request8.x, request8.y, config=cfg)
    res = unlearn(copy.deepcopy(model), request8.x, request8.y, config=cfg.replace(**MINE))
    rounds = math.ceil(res.steps / 8)
    assert res.passes["attack"] - plain.passes["attack"] == pytest.approx(
        rounds * 12 * (2 * 4 + 1 / 3))
    # each step: 8 forget + 32 adversarial (8 x 4) + 3 mined
    assert res.passes["update"] == pytest.approx(res.steps * (8 + 32 + 3))


def test_mining_options_are_keyed_only_when_set_and_only_for_methods_with_anchors():
    cfg = resolve("robust")
    assert not any(n.startswith("mine_") for n in cfg.key())
    mined = cfg.replace(mine_anchors=256)
    assert mined.key()["mine_anchors"] == 256 and "mine_batch" not in mined.key()
    assert mined.key(anchors=False) == cfg.key(anchors=False)
    assert FIELDS["mine_eps"].metadata["unit"] == "[0,1] pixel units"
    with pytest.raises(ValueError, match="mine_eps must be > 0"):
        cfg.replace(mine_eps=0.0)


def test_mined_anchors_keep_the_contract_and_real_images_as_their_starts_fail(
        pretrained_cnn, request8, monkeypatch):
    # the robust recipe with mining feeds the model D_f, its views, the adversarial balls, the
    # transformed images and the mined ones, within mine_eps of the mining's starts: nothing else
    from kit.core.views import with_views

    model, data = pretrained_cnn
    cfg = resolve("robust", **FAST, aug_anchors=20, synth_anchors=0, **MINE)
    everything, _ = with_views(request8.x)
    rounds = math.ceil(cfg.max_steps / cfg.mine_every)
    near = torch.cat([everything, *mining_starts(request8.x, 12, seed=0, rounds=rounds)])
    allowed = augmentation_inputs(request8.x, 20, seed=0, transform="affine")
    bound = max(cfg.eps, cfg.mine_eps) + 1e-4
    m = copy.deepcopy(model)
    run = lambda: unlearn(m, request8.x, request8.y, config=cfg)  # noqa: E731
    assert forget_only_violation(run, m, near, allowed=allowed) <= bound
    m = copy.deepcopy(model)
    assert forget_only_violation(run, m, everything, allowed=allowed) > 3.0  # mined: far
    # an engine that starts its mining from real remaining images is caught
    real = torch.stack([data.train[int(i)][0] for i in request8.retain_idx[:12]])
    monkeypatch.setattr(mining_mod, "augment", lambda *a, **kw: real.clone())
    m = copy.deepcopy(model)
    assert forget_only_violation(run, m, near, allowed=allowed) > 3.0
