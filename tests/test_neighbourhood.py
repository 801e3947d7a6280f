"""kit.evaluation.neighbourhood: the views are what they claim to be."""
import torch

from kit.evaluation.neighbourhood import (NOISE_DRAWS, NOISE_L2, SHIFTS, neighbourhood_accuracy,
                                          noisy, shifted, views)


def test_shift_moves_content_by_one_pixel():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    for dy, dx in SHIFTS:
        s = shifted(x, dy, dx)
        assert s.shape == x.shape and s[0, 0, 2 + dy, 2 + dx] == 1.0 and s.sum() == 1.0


def test_noise_has_the_stated_norm_before_clipping():
    x = torch.full((3, 1, 8, 8), 0.5)                         # far from the clip bounds
    v = noisy(x, l2=0.3, draws=2)
    assert v.shape == (6, 1, 8, 8)
    norms = (v - x.repeat(2, 1, 1, 1)).flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((6,), 0.3), atol=1e-5)
    assert torch.equal(noisy(x), noisy(x))                    # seeded


def test_accuracy_over_views_of_a_constant_model():
    x, y = torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 0, 1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))         # always predicts class 0
    acc = neighbourhood_accuracy(model, x, y)
    assert acc == {"shift": 0.5, "noise": 0.5}
    v = views(x)
    assert len(v["shift"]) == 4 * len(SHIFTS) and len(v["noise"]) == 4 * NOISE_DRAWS
    assert NOISE_L2 > 0
