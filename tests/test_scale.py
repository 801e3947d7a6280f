"""The logit scale kept from one request to the next (kit.method.scale, continual)."""
import copy

import pytest
import torch
import torchvision

from kit.core.request import ForgetRequest
from kit.experiments.continual import continual_unlearn
from kit.method.augment import augment
from kit.method.recipes import resolve
from kit.method.scale import (VIEWS, logit_layer, logits_of, restore_scale, scale_views,
                              top2_gap)


def linear_net(weight, bias):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(*weight.shape[::-1]))
    with torch.no_grad():
        net[1].weight.copy_(weight)
        net[1].bias.copy_(bias)
    return net


def test_top2_gap_by_hand():
    z = torch.tensor([[3.0, 1.0, -2.0], [0.5, 4.0, 3.5], [2.0, 2.0, 0.0]])
    assert top2_gap(z).tolist() == [2.0, 0.5, 0.0]


def test_restore_scale_undoes_a_uniform_shrink_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 4))
    x = torch.rand(40, 1, 3, 3)
    before = logits_of(net, x)
    w, b = net[3].weight.detach().clone(), net[3].bias.detach().clone()
    hidden = net[1].weight.detach().clone()
    with torch.no_grad():
        net[3].weight.mul_(0.25)
        net[3].bias.mul_(0.25)
    assert restore_scale(net, x, before) == pytest.approx(4.0)
    assert torch.allclose(net[3].weight, w) and torch.allclose(net[3].bias, b)
    assert torch.equal(net[1].weight, hidden)                  # the hidden layer untouched


def test_only_images_that_kept_their_prediction_count():
    # identity logit layer: the logits are the inputs. Image 1 changed its prediction
    # (before: class 1, now: class 0), so the medians are over images 0 and 2: before
    # gaps 3, 4 -> 3 (torch.median: the lower middle), now 1, 2 -> 1: c = 3. Counting
    # image 1 as well would give 4 / 2 = 2.
    net = linear_net(torch.eye(2), torch.zeros(2))
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]).view(3, 1, 1, 2)
    before = torch.tensor([[3.0, 0.0], [0.0, 5.0], [4.0, 0.0]])
    assert restore_scale(net, x, before) == pytest.approx(3.0)
    assert torch.allclose(net[1].weight, 3 * torch.eye(2))


def test_no_prediction_changes_and_nothing_when_no_image_kept_its_class():
    torch.manual_seed(1)
    net = linear_net(torch.randn(3, 4), torch.randn(3))
    x = torch.rand(30, 1, 2, 2)
    pred = logits_of(net, x).argmax(1)
    c = restore_scale(net, x, 5 * logits_of(net, x))
    assert c == pytest.approx(5.0) and torch.equal(logits_of(net, x).argmax(1), pred)
    state = copy.deepcopy(net.state_dict())
    flipped = -logits_of(net, x)                   # no image's class agrees with these
    assert restore_scale(net, x, flipped) == 1.0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_logit_layer_is_the_linear_that_makes_the_output():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    assert logit_layer(net, torch.rand(2, 1, 2, 2)) is net[2]
    resnet = torchvision.models.resnet18(num_classes=10)
    assert logit_layer(resnet, torch.rand(1, 3, 32, 32)) is resnet.fc
    not_last = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.Tanh())
    with pytest.raises(ValueError, match="keep_scale=False"):
        logit_layer(not_last, torch.rand(2, 1, 2, 2))


def test_views_are_seeded_transforms_of_the_forget_set_alone():
    x = torch.rand(4, 1, 8, 8)
    v = scale_views(x, seed=3)
    assert v.shape == (VIEWS, 1, 8, 8)
    assert torch.equal(v, augment(x, VIEWS, seed=3, transform="affine_mix"))


@pytest.fixture(scope="module")
def base(mnist5k):
    from kit.experiments.cache import pretrained
    model, _, _ = pretrained(data=mnist5k)
    return model


def test_continual_keep_scale_changes_no_prediction_of_the_request(base, mnist5k):
    # one request: the same run either way (keep_scale acts after it), and the rescale
    # changes no prediction, so every accuracy is equal; the factor is recorded, > 1 (the
    # request shrank the logits on its transformed forget images), and the logit layer's
    # weights are those of the plain run times it
    reqs = ForgetRequest.sequence(mnist5k, k=8, n_requests=1, seed=4)
    cfg = dict(config=resolve("default", max_steps=60, pgd_steps=5, per_instance=2),
               retain_max=300)
    kept, plain = copy.deepcopy(base), copy.deepcopy(base)
    a = continual_unlearn(kept, mnist5k, reqs, method="adv+imp", keep_scale=True, **cfg)
    b = continual_unlearn(plain, mnist5k, reqs, method="adv+imp", keep_scale=False, **cfg)
    cols = ["request", "split", "accuracy", "n", "reached", "steps"]
    assert a[cols].equals(b[cols])
    c = a.loc[a["request"] == 1, "scale"].unique()
    assert len(c) == 1 and c[0] > 1 and (b["scale"] == 1.0).all()
    layer_a, layer_b = logit_layer(kept, reqs[0].x), logit_layer(plain, reqs[0].x)
    assert torch.allclose(layer_a.weight, c[0] * layer_b.weight, rtol=1e-5, atol=1e-7)


def test_continual_refuses_a_model_without_a_linear_logit_layer_before_any_work(mnist5k):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10), torch.nn.Tanh())
    state = copy.deepcopy(net.state_dict())
    reqs = ForgetRequest.sequence(mnist5k, k=4, n_requests=1, seed=0)
    with pytest.raises(ValueError, match="keep_scale=False"):
        continual_unlearn(net, mnist5k, reqs, method="neggrad")
    with pytest.raises(ValueError, match="True or False"):
        continual_unlearn(net, mnist5k, reqs, method="neggrad", keep_scale="no")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
