"""Anchors made from D_f by random affine transforms (kit.method.augment): seeded, each image
from its own forget instance, labelled by the frozen model; the engine mixes them in and
keeps the remaining-data-free contract, which still fails when real data pose as them (and
as the synthesised anchors of kit.method.synthesis: one test for both)."""
import copy

import pytest
import torch

import kit.method.anchors as anchors_mod
from kit.core.request import ForgetRequest
from kit.method.augment import TRANSFORMS, augment
from kit.method.config import FIELDS
from kit.method.contract import augmentation_inputs, forget_only_violation, synthesis_inputs
from kit.method.engine import unlearn
from kit.method.recipes import RECIPES, resolve

FAST = dict(pgd_steps=10, per_instance=4, max_steps=20, channels_last=False)
AUG = dict(aug_anchors=20, aug_batch=6)


@pytest.fixture(scope="module")
def request8(pretrained_cnn):
    return ForgetRequest.draw(pretrained_cnn[1], 8, seed=0)


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_augment_is_seeded_and_each_image_comes_from_its_own_instance(transform):
    # instance i: a 6x6 block of the value (i + 1) / 10 on a zero background; nearest-pixel
    # transforms with zero fill can only move those values, never mix two instances
    x = torch.zeros(4, 1, 16, 16)
    for i in range(4):
        x[i, :, 5:11, 5:11] = (i + 1) / 10
    a = augment(x, 10, seed=3, transform=transform)
    assert a.shape == (10, 1, 16, 16)
    assert torch.equal(a, augment(x, 10, seed=3, transform=transform))
    assert not torch.equal(a, augment(x, 10, seed=4, transform=transform))
    for i, img in enumerate(a):
        values = img[img != 0].unique()
        assert len(values) == 1 and float(values[0]) == pytest.approx((i % 4 + 1) / 10)
    moved = [not torch.equal(img, x[i % 4]) for i, img in enumerate(a)]
    assert sum(moved) >= 5        # transforms, not copies (a small one may round to one)
    state = torch.get_rng_state()
    augment(x, 3, seed=0)
    assert torch.equal(state, torch.get_rng_state())   # the caller's random stream untouched


def test_a_mix_makes_its_parts_in_runs_and_the_small_part_stays_closer(request8):
    # affine_mix: the first half as "affine", the second as "affine_small"; on real digits
    # the small transforms move each image less from its forget image than the others
    x = request8.x
    mix = augment(x, 64, seed=5, transform="affine_mix")
    dist = (mix - x[torch.arange(64) % len(x)]).flatten(1).norm(dim=1)
    assert float(dist[32:].mean()) < 0.8 * float(dist[:32].mean())
    one = augment(x, 32, seed=5, transform="affine_small")
    d_small = (one - x[torch.arange(32) % len(x)]).flatten(1).norm(dim=1)
    d_affine = (augment(x, 32, seed=5) - x[torch.arange(32) % len(x)]).flatten(1).norm(dim=1)
    assert float(d_small.mean()) < 0.8 * float(d_affine.mean())


def test_the_config_offers_exactly_the_registered_transforms():
    assert set(FIELDS["aug_transform"].metadata["choices"]) == set(TRANSFORMS)
    with pytest.raises(ValueError, match="valid names: affine"):
        augment(torch.zeros(2, 1, 4, 4), 3, transform="swirl")


def test_augment_refuses_an_empty_request():
    with pytest.raises(ValueError, match="non-empty forget set"):
        augment(torch.zeros(0, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="n >= 1"):
        augment(torch.zeros(2, 1, 4, 4), 0)


def test_aug_256_is_distil_t8_plus_the_transformed_anchors():
    d, before = RECIPES["aug-256"], RECIPES["distil-t8"]
    assert {n for n, v in d.as_dict().items() if v != before.as_dict()[n]} == {"aug_anchors"}
    assert (d.aug_anchors, d.aug_batch) == (256, 8)
    assert "aug_anchors" not in before.key() and "aug_anchors" in d.key()  # old entries valid
    assert d.key(k=32, anchors=False) == before.key(k=32, anchors=False)  # no anchors: same
    # the default changes the step and the budget too, so a method without anchors under it
    # is a new computation (its own cache entry), while aug-256 keeps the entries of "affine"
    default = RECIPES["default"]
    assert default.key(k=32, anchors=False) != d.key(k=32, anchors=False)
    assert "aug_transform" not in d.key() and default.key()["aug_transform"] == "affine_mix"


def test_methods_without_anchors_share_their_cache_entries_across_anchor_options(
        pretrained_cnn, request8, tmp_path):
    from kit.experiments.cache import unlearned
    model, data = pretrained_cnn
    cfg = resolve("distil-t8", **FAST)
    for method, shared in (("neggrad", True), ("adv", False)):
        unlearned(model, data, request8, method=method, config=cfg, cache_dir=tmp_path)
        unlearned(model, data, request8, method=method, config=cfg.replace(**AUG),
                  cache_dir=tmp_path)
        entries = list(tmp_path.glob(f"unlearned_{method}_*.pt"))
        assert len(entries) == (1 if shared else 2)


def test_transformed_anchors_are_labelled_by_the_frozen_model(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    for recipe in ("fast", "default"):             # hard labels: its prediction; soft: softmax
        cfg = resolve(recipe, **FAST, **AUG)
        source, n_adv, _ = anchors_mod.make_anchors(
            model, request8.x, request8.y, cfg=cfg, num_classes=10, seed=0, exclude=None,
            seconds={}, passes={})
        x, y = source()
        aug_x, aug_y = x[-cfg.aug_batch:], y[-cfg.aug_batch:]
        assert len(x) == min(cfg.adv_batch, n_adv) + cfg.aug_batch
        with torch.no_grad():
            logits = model.eval()(aug_x)
        if recipe == "fast":
            assert torch.equal(aug_y, logits.argmax(1))
        else:
            assert torch.allclose(aug_y, (logits / cfg.distil_t).softmax(1), atol=1e-6)
        made = augment(request8.x, cfg.aug_anchors, seed=0, transform=cfg.aug_transform)
        keys = {r.numpy().tobytes() for r in made.flatten(1)}
        assert all(r.numpy().tobytes() in keys for r in aug_x.flatten(1))


def test_transformed_images_per_step_grow_with_k_and_key_only_the_runs_they_change(
        pretrained_cnn, request8):
    """aug_per_instance: at least that many transformed images per forget instance in every
    anchor batch (8 instances x 2 = 16 > aug_batch 6; x 0.5 = 4 < 6 keeps 6); the default's
    quarter changes nothing up to k = 64, so those runs keep the key of the recipe before it."""
    model, _ = pretrained_cnn
    for share, want in ((2.0, 16), (0.5, AUG["aug_batch"])):
        cfg = resolve("default", **FAST, **AUG, aug_per_instance=share)
        source, n_adv, _ = anchors_mod.make_anchors(
            model, request8.x, request8.y, cfg=cfg, num_classes=10, seed=0, exclude=None,
            seconds={}, passes={})
        assert cfg.aug_batch_at(len(request8.x)) == want
        assert len(source()[0]) == min(cfg.adv_batch, n_adv) + want
    new, before = RECIPES["mix-k4"], RECIPES["mix-2048"]
    for k in (1, 8, 32, 64):
        assert new.aug_batch_at(k) == before.aug_batch_at(k) == 16
        assert new.key(k=k) == before.key(k=k)
    assert new.aug_batch_at(128) == 32 and new.key(k=128)["aug_per_instance"] == 0.25
    assert "aug_per_instance" not in before.key(k=128)
    assert "aug_per_instance" not in new.key(k=128, anchors=False)   # the oracle shares


@pytest.mark.parametrize("every, adv_too", [(1, False), (3, False), (1, True)])
def test_release_leaves_out_the_transformed_images_of_the_instances_still_pending(
        pretrained_cnn, request8, monkeypatch, every, adv_too):
    """aug_release_from = 3: at step 3 one pass of D_f finds the instances still pending,
    and no later anchor batch holds a transformed image of theirs (both stop-check paths);
    with release_adv none of their adversarial anchors either, and without it they stay.
    Instances 0-2 carry a label the model does not predict: met from the start, kept."""
    import kit.method.engine as engine
    model, _ = pretrained_cnn
    y = request8.y.clone()
    y[:3] = (y[:3] + 1) % 10
    cfg = resolve("default", **FAST, **AUG, aug_release_from=3, lr=1e-12, check_every=every,
                  release_adv=adv_too)
    made = augment(request8.x, cfg.aug_anchors, seed=0, transform=cfg.aug_transform)
    owner = {r.numpy().tobytes(): i % 8 for i, r in enumerate(made.flatten(1))}
    adv_owner, real_attack = {}, anchors_mod.make_adversarial

    def attack(*args, **kwargs):
        adv = real_attack(*args, **kwargs)
        adv_owner.update({r.cpu().numpy().tobytes(): int(i)
                          for r, i in zip(adv.images.flatten(1), adv.source)})
        return adv
    monkeypatch.setattr(anchors_mod, "make_adversarial", attack)
    draws, adv_draws, released, real = [], [], [], engine.make_anchors

    def spy(*args, **kwargs):
        source, n_adv, rate = real(*args, **kwargs)

        def drawn():
            x, y = source()
            rows = [r.numpy().tobytes() for r in x.flatten(1)]
            draws.append({owner.get(r) for r in rows} - {None})
            adv_draws.append({adv_owner.get(r) for r in rows} - {None})
            return x, y

        def release(pending):
            released.append((len(draws), pending.cpu().clone()))
            source.release(pending)
        drawn.release = release
        return drawn, n_adv, rate
    monkeypatch.setattr(engine, "make_anchors", spy)
    res = unlearn(copy.deepcopy(model), request8.x, y, config=cfg, seed=0)
    assert res.steps == cfg.max_steps and not res.reached     # a step too small to move
    (at, pending), = released
    assert at == 3 and pending.tolist() == [False] * 3 + [True] * 5
    assert all(d <= {0, 1, 2} for d in draws[3:]) and any(d & {0, 1, 2} for d in draws[3:])
    assert any(d - {0, 1, 2} for d in draws[:3])
    assert any(d - {0, 1, 2} for d in adv_draws[:3])
    late = set().union(*adv_draws[3:])
    assert (late <= {0, 1, 2}) if adv_too else (late - {0, 1, 2})
    with pytest.raises(ValueError, match="aug_release_from"):
        cfg.replace(robust=True)


@pytest.mark.parametrize("share", [0.0, 0.5, 2.0])
def test_the_label_share_scales_the_label_in_every_adversarial_anchor_and_keeps_the_rest(
        pretrained_cnn, request8, monkeypatch, share):
    """adv_label_share: each soft adversarial anchor's target holds `share` times the frozen
    softmax's share of the label of its forget image (renormalised: sums to 1, the other
    classes keep their ratios); the transformed anchors keep theirs. At 1 that label holds a
    share of its own (temperature 8)."""
    model, _ = pretrained_cnn
    made = {}
    real_attack = anchors_mod.make_adversarial

    def attack(*args, **kwargs):
        made["adv"] = real_attack(*args, **kwargs)
        return made["adv"]
    monkeypatch.setattr(anchors_mod, "make_adversarial", attack)
    got = {}
    for s in (1.0, share):
        cfg = resolve("default", **FAST, **AUG, adv_batch=32, adv_label_share=s)
        source, n_adv, _ = anchors_mod.make_anchors(
            model, request8.x, request8.y, cfg=cfg, num_classes=10, seed=0, exclude=None,
            seconds={}, passes={})
        got[s] = source()
    adv = made["adv"]
    rows = {r.numpy().tobytes(): int(lab) for r, lab in zip(adv.images.flatten(1),
                                                             adv.source_labels)}
    (x0, p0), (x1, p1) = got[1.0], got[share]
    assert torch.equal(x0, x1)
    labels = torch.tensor([rows[r.numpy().tobytes()] for r in x1[:32].flatten(1)])[:, None]
    own0, own1 = p0[:32].gather(1, labels), p1[:32].gather(1, labels)
    assert float(own0.min()) > 0.05 and float((own1 - own0).abs().min()) > 1e-3
    assert torch.allclose(p1[:32].sum(1), torch.ones(32), atol=1e-6)
    # odds of the label against the rest: times `share`; the rest keep their ratios
    rest0, rest1 = p0[:32].scatter(1, labels, 0.0), p1[:32].scatter(1, labels, 0.0)
    assert torch.allclose(own1 / rest1.sum(1, keepdim=True),
                          share * own0 / rest0.sum(1, keepdim=True), atol=1e-5)
    assert torch.allclose(rest1 / rest1.sum(1, keepdim=True),
                          rest0 / rest0.sum(1, keepdim=True), atol=1e-6)
    assert torch.equal(p0[32:], p1[32:])                    # the transformed anchors
    with pytest.raises(ValueError, match="adv_label_share needs adv_select soft"):
        resolve("fast", adv_label_share=share)


def test_release_adv_needs_the_release_and_every_anchor_kept():
    with pytest.raises(ValueError, match="release_adv.*aug_release_from > 0"):
        resolve("default", aug_release_from=0, release_adv=True)
    with pytest.raises(ValueError, match="adv_select keep, predicted_all or soft"):
        resolve("default", adv_select="successful", release_adv=True)


def test_a_release_that_leaves_no_anchor_is_a_step_without_the_anchor_term(pretrained_cnn,
                                                                           request8):
    """k = 1, still pending at the release: its transformed images and adversarial anchors
    all leave, and the steps after it run on the objective alone (no NaN from an empty
    anchor batch)."""
    model, _ = pretrained_cnn
    cfg = resolve("default", **FAST, **AUG, aug_release_from=3, release_adv=True, lr=1e-12)
    m = copy.deepcopy(model)
    res = unlearn(m, request8.x[:1], request8.y[:1], config=cfg, seed=0)  # a NaN loss raises
    assert res.steps == cfg.max_steps and not res.reached
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_engine_counts_the_transformed_anchors(pretrained_cnn, request8):
    model, _ = pretrained_cnn
    res = unlearn(copy.deepcopy(model), request8.x, request8.y,
                  config=resolve("distil-t8", **FAST, **AUG))
    plain = unlearn(copy.deepcopy(model), request8.x, request8.y,
                    config=resolve("distil-t8", **FAST))
    assert res.passes["attack"] - plain.passes["attack"] == pytest.approx(20 / 3)   # labels
    # each step: 8 forget + 32 adversarial (8 x 4, at most adv_batch) + 6 transformed
    assert res.passes["update"] == pytest.approx(res.steps * (8 + 32 + 6))


# anchors made without remaining data but far from D_f: (config, allow-list, the function in
# kit.method.anchors that makes them, and a fake that returns real remaining images instead)
MADE = {
    "transformed": (AUG, lambda model, x: augmentation_inputs(x, 20, seed=0),
                    "augment", lambda real: real.clone()),
    "synthesised": (dict(synth_anchors=20, synth_iters=30, synth_batch=8),
                    lambda model, x: synthesis_inputs(model, 20, shape=(1, 28, 28),
                                                      num_classes=10, seed=0, iters=30),
                    "synthesized", lambda real: (real.clone(), torch.arange(20) % 10)),
}


@pytest.mark.parametrize("kind", list(MADE))
def test_made_anchors_keep_the_contract_and_real_data_under_their_name_fail(
        pretrained_cnn, request8, monkeypatch, kind):
    extra, allow, maker, fake = MADE[kind]
    model, data = pretrained_cnn
    cfg = resolve("distil-t8", **FAST, **extra)
    allowed = allow(model, request8.x)
    m = copy.deepcopy(model)
    run = lambda: unlearn(m, request8.x, request8.y, config=cfg)  # noqa: E731
    assert forget_only_violation(run, m, request8.x, allowed=allowed) <= cfg.eps + 1e-4
    m = copy.deepcopy(model)
    assert forget_only_violation(run, m, request8.x) > 3.0     # without the allow-list: far
    # an engine that passes real remaining images off as made anchors is caught
    real = torch.stack([data.train[int(i)][0] for i in request8.retain_idx[:20]])
    monkeypatch.setattr(anchors_mod, maker, lambda *a, **kw: fake(real))
    m = copy.deepcopy(model)
    assert forget_only_violation(run, m, request8.x, allowed=allowed) > 3.0


def test_the_robust_recipe_keeps_the_contract_with_views_transforms_and_synthesis(
        pretrained_cnn, request8):
    # the recipe `robust` feeds the model D_f, its neighbourhood views, the adversarial balls
    # around them, the large transforms of D_f and the synthesised images: nothing else
    from kit.core.views import with_views

    model, _ = pretrained_cnn
    cfg = resolve("robust", **FAST, aug_anchors=20, synth_anchors=20, synth_iters=30)
    assert cfg.robust and cfg.aug_transform == "affine"
    everything, _ = with_views(request8.x)            # D_f and the views it trains on
    allowed = (augmentation_inputs(request8.x, 20, seed=0, transform="affine")
               + synthesis_inputs(model, 20, shape=(1, 28, 28), num_classes=10, seed=0,
                                  iters=30))
    m = copy.deepcopy(model)
    run = lambda: unlearn(m, request8.x, request8.y, config=cfg)  # noqa: E731
    assert forget_only_violation(run, m, everything, allowed=allowed) <= cfg.eps + 1e-4
    m = copy.deepcopy(model)
    assert forget_only_violation(run, m, everything) > 3.0      # the made images are far


def test_far_shifts_keep_off_the_one_pixel_shifts_and_the_mix_makes_both_halves():
    # a centred block on 28 pixels: rotation, scale and shear about the centre keep its
    # centre of mass where it was (to rounding), so the centre moves by the shift alone
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10:18, 10:18] = 1.0
    rows = torch.arange(28.0).view(1, 28, 1)

    def centre_shift(imgs):
        mass = imgs.sum((1, 2, 3))
        r = (imgs[:, 0] * rows).sum((1, 2)) / mass - 13.5
        c = (imgs[:, 0] * rows.transpose(1, 2)).sum((1, 2)) / mass - 13.5
        return torch.maximum(r.abs(), c.abs())

    far = centre_shift(augment(x, 64, seed=1, transform="affine_farshift"))
    assert float(far.min()) >= 1.5 and float(far.max()) <= 3.5
    mix = centre_shift(augment(x, 64, seed=1, transform="noshift_farshift"))
    assert float(mix[:32].max()) < 0.5 and float(mix[32:].min()) >= 1.5
    plain = centre_shift(augment(x, 64, seed=1, transform="affine"))
    assert float(plain.min()) < 1.5        # the large transforms do shift by a pixel or less
