"""Tests for kit.importance against closed-form gradients of a 2-layer linear model (CPU)."""
import pytest
import torch
from torch import nn

from kit.method.importance import ESTIMATORS, compute_importance, normalize_importance, penalty_weights

W1 = torch.tensor([[1.0, 0.5], [-0.5, 1.0]])
W2 = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
X = torch.tensor([[0.9, 0.1], [0.2, 0.8]])  # two forget inputs
Y = torch.tensor([1, 0])




def linear2():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(W1)
        model[1].weight.copy_(W2)
    return model


def closed_form_grads(dloss_dout):
    """Per-sample (dW1, dW2) of a loss of o = W2 W1 x, given d loss / d o as a function of o."""
    out = []
    for x, y in zip(X, Y):
        h = W1 @ x
        o = W2 @ h
        r = dloss_dout(o, y)  # (2,)
        out.append((torch.outer(W2.T @ r, x), torch.outer(r, h)))
    return out


def norm_grad(o, y):         # d ||o||_2 / d o
    return o / o.norm()


def sq_norm_grad(o, y):      # d ||o||_2^2 / d o
    return 2 * o


def log_softmax_grad(o, y):  # d log softmax(o)_y / d o
    return torch.nn.functional.one_hot(y, 2).float() - o.softmax(0)


def as_dict(d1, d2):
    return {"0.weight": d1, "1.weight": d2}


def assert_dict_close(a, b):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-5, msg=n)


def test_mas_official_hand_computed():
    g = closed_form_grads(norm_grad)
    # one batch of 2: |gradient of the batch-mean norm|
    expected = as_dict(((g[0][0] + g[1][0]) / 2).abs(), ((g[0][1] + g[1][1]) / 2).abs())
    assert_dict_close(compute_importance(linear2(), X, estimator="mas_official", batch_size=2),
                      expected)
    # batches of 1: mean over batches of |per-sample gradient|
    expected1 = as_dict((g[0][0].abs() + g[1][0].abs()) / 2, (g[0][1].abs() + g[1][1].abs()) / 2)
    assert_dict_close(compute_importance(linear2(), X, estimator="mas_official", batch_size=1),
                      expected1)


def test_mas_textbook_hand_computed():
    g = closed_form_grads(sq_norm_grad)
    expected = as_dict((g[0][0].abs() + g[1][0].abs()) / 2, (g[0][1].abs() + g[1][1].abs()) / 2)
    for bs in (1, 2, 32):  # per-sample: batch size must not matter
        assert_dict_close(compute_importance(linear2(), X, estimator="mas", batch_size=bs), expected)


def test_fisher_hand_computed_and_needs_labels():
    g = closed_form_grads(log_softmax_grad)
    expected = as_dict((g[0][0] ** 2 + g[1][0] ** 2) / 2, (g[0][1] ** 2 + g[1][1] ** 2) / 2)
    assert_dict_close(compute_importance(linear2(), X, y=Y, estimator="fisher"), expected)
    with pytest.raises(ValueError, match="labels"):
        compute_importance(linear2(), X, estimator="fisher")


def test_abs_of_batch_gradient_differs_from_per_sample_abs():
    g = closed_form_grads(norm_grad)
    opposite = (g[0][1].sign() * g[1][1].sign()) < 0  # entries whose sample gradients disagree
    assert opposite.any()  # the fixture is chosen so that this comparison means something
    batch = compute_importance(linear2(), X, estimator="mas_official", batch_size=2)["1.weight"]
    per_sample = compute_importance(linear2(), X, estimator="mas_official", batch_size=1)["1.weight"]
    assert (batch[opposite] < per_sample[opposite] - 1e-4).all()
    torch.testing.assert_close(batch[~opposite], per_sample[~opposite])
    # and the textbook estimator is not the official one rescaled
    mas = compute_importance(linear2(), X, estimator="mas")["1.weight"]
    ratio = mas / batch
    assert ratio.max() - ratio.min() > 0.1


class ModeProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def conv_bn(frozen_first=False):
    torch.manual_seed(0)
    model = nn.Sequential(ModeProbe(), nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2),
                          nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():  # non-trivial running statistics
        model[2].running_mean.copy_(torch.tensor([0.3, -0.2]))
        model[2].running_var.copy_(torch.tensor([2.0, 0.5]))
    if frozen_first:
        model[1].bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_model_left_unchanged(estimator):
    model = conv_bn(frozen_first=True).eval()
    x, y = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    imp = compute_importance(model, x, y=y, estimator=estimator, batch_size=2)
    assert list(imp) == [n for n, p in model.named_parameters() if p.requires_grad]
    assert "1.bias" not in imp
    for n, p in model.named_parameters():
        assert imp.get(n, p).shape == p.shape
        assert p.grad is None, n
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in imp.values())
    for k, v in model.state_dict().items():  # includes BN running stats and num_batches_tracked
        assert torch.equal(v, state[k]), k
    assert not any(m.training for m in model.modules())
    # mas_official runs in train mode (as the official code); the others in eval mode
    assert model[0].seen and all(s == (estimator == "mas_official") for s in model[0].seen)


@pytest.mark.parametrize("estimator,loss", [
    ("mas", lambda out, y: out.pow(2).sum()),
    ("fisher", lambda out, y: out.log_softmax(-1)[y]),
])
def test_per_sample_estimators_match_explicit_loop_with_bn(estimator, loss):
    model = conv_bn().eval()
    x, y = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1])
    reduce = torch.abs if estimator == "mas" else torch.square
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for xi, yi in zip(x, y):
        grads = torch.autograd.grad(loss(model(xi[None])[0], yi), list(params.values()))
        for n, g in zip(params, grads):
            expected[n] += reduce(g) / len(x)
    assert_dict_close(compute_importance(model, x, y=y, estimator=estimator, batch_size=2), expected)


def test_normalize_and_penalty_weights():
    imp = {"a": torch.tensor([1.0, 3.0, 2.0]), "const": torch.full((2, 2), 5.0),
           "zero": torch.zeros(3)}
    norm = normalize_importance(imp)
    torch.testing.assert_close(norm["a"], torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(norm["const"], torch.zeros(2, 2)) and torch.equal(norm["zero"], torch.zeros(3))
    w = penalty_weights(imp)
    torch.testing.assert_close(w["a"], torch.tensor([1.0, 0.0, 0.5]))
    assert torch.equal(w["const"], torch.ones(2, 2)) and torch.equal(w["zero"], torch.ones(3))


def test_constant_importance_from_a_model_gives_weights_one():
    model = linear2()
    with torch.no_grad():
        model[1].weight.zero_()  # output 0 everywhere: first-layer gradient is exactly 0
    imp = compute_importance(model, X, estimator="mas")
    assert torch.equal(imp["0.weight"], torch.zeros(2, 2))
    w = penalty_weights(imp)
    assert torch.equal(w["0.weight"], torch.ones(2, 2))
    assert all(torch.isfinite(v).all() for v in w.values())


def test_bad_input():
    with pytest.raises(ValueError, match="mas_official"):
        compute_importance(linear2(), X, estimator="ewc")
    with pytest.raises(ValueError, match="shape"):
        compute_importance(linear2(), X, y=torch.tensor([0]), estimator="fisher")


def test_mas_official_weights_a_short_last_batch_by_its_size():
    # the official code adds |batch gradient| * len(batch): batches of 2 over 3 samples give
    # (2 |g(x0, x1)| + 1 |g(x2)|) / 3, not the plain mean of the two batch terms
    torch.manual_seed(0)
    model, x = nn.Linear(4, 3), torch.randn(3, 4)

    def batch_grad(xb):
        loss = model(xb).norm(p=2, dim=1).mean()
        return [g.abs() for g in torch.autograd.grad(loss, list(model.parameters()))]

    g01, g2 = batch_grad(x[:2]), batch_grad(x[2:])
    want = {n: (2 * a + b) / 3 for n, a, b in zip(("weight", "bias"), g01, g2)}
    assert_dict_close(compute_importance(model, x, estimator="mas_official", batch_size=2), want)
