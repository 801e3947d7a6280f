"""kit.analysis: CKA against hand formulas and invariances, forward hooks, confusion, t-SNE."""
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from kit.evaluation.analysis import (average_confusion, cka_matrix, layer_features, linear_cka, linear_hsic,
                          prediction_confusion, tsne_embedding)
from kit.core.models import MODELS, create_model, feature_layers


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- CKA
def textbook_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def song_unbiased_hsic(x, y):
    """Song et al. (2012), eq. (5), written out: zero-diagonal Gram matrices K~, L~."""
    n = len(x)
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


@pytest.mark.parametrize("n, d1, d2", [(100, 5, 8), (20, 50, 30)])  # feature form, Gram form
def test_cka_matches_textbook_formula(rng, n, d1, d2):
    x = rng.normal(size=(n, d1))
    y = x[:, :1] * 2 + rng.normal(size=(n, d2))
    got = linear_cka(x, y)
    assert got == pytest.approx(textbook_cka(x, y), rel=1e-10)
    assert 0.05 < got < 0.95
    assert linear_cka(torch.tensor(x, dtype=torch.float32), y) == pytest.approx(got, rel=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_identical_inputs_is_one(rng, debiased):
    x = rng.normal(size=(30, 12))
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(rng, debiased):
    x = rng.normal(size=(40, 6))
    y = np.tanh(x @ rng.normal(size=(6, 9))) + 0.3 * rng.normal(size=(40, 9))
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    base = linear_cka(x, y, debiased=debiased)
    assert linear_cka(x, y @ q, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 3.0, y - 1.0, debiased=debiased) == pytest.approx(base, abs=1e-10)


def test_cka_not_invariant_to_general_invertible_maps(rng):
    x = rng.normal(size=(100, 10))
    m = rng.normal(size=(10, 10)) @ np.diag(np.logspace(-1, 1, 10))
    assert abs(np.linalg.det(m)) > 1e-6  # invertible: CCA-like measures would give 1 here
    assert linear_cka(x, x @ m) < 0.99
    y = rng.normal(size=(100, 4)) + x[:, :4]
    assert abs(linear_cka(x @ m, y) - linear_cka(x, y)) > 0.01


def test_debiased_hsic_matches_song_formula(rng):
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 5))
    assert linear_hsic(x, y, debiased=True) == pytest.approx(
        song_unbiased_hsic(x - x.mean(0), y - y.mean(0)), rel=1e-10)
    # the estimator does not depend on the means (HSIC is translation invariant)
    assert linear_hsic(x + 5, y, debiased=True) == pytest.approx(song_unbiased_hsic(x, y), rel=1e-8)


def test_debiased_hsic_is_unbiased_and_biased_one_is_not(rng):
    n, draws = 8, 3000
    a = np.array([[1.0, -0.5], [0.0, 0.8], [0.4, 0.0]])  # Y = X A + noise: true HSIC = ||A||_F^2
    cases = {"independent": (np.zeros((3, 2)), 0.0), "dependent": (a, float((a ** 2).sum()))}
    for name, (coef, truth) in cases.items():
        unbiased, biased = [], []
        for _ in range(draws):
            x = rng.normal(size=(n, 3))
            y = x @ coef + rng.normal(size=(n, 2))
            unbiased.append(linear_hsic(x, y, debiased=True))
            biased.append(linear_hsic(x, y))
        unbiased, biased = np.array(unbiased), np.array(biased)
        stderr = unbiased.std() / np.sqrt(draws)
        assert abs(unbiased.mean() - truth) < 4 * stderr, name
        assert biased.mean() - truth > 10 * biased.std() / np.sqrt(draws), name  # bias > 0


def test_debiased_cka_lower_than_biased_for_independent_small_samples(rng):
    x, y = rng.normal(size=(10, 20)), rng.normal(size=(10, 20))
    assert linear_cka(x, y) > 0.5           # biased CKA is large on pure noise at small N
    assert abs(linear_cka(x, y, debiased=True)) < 0.3


def test_cka_input_checks(rng):
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), debiased=True)
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(rng.normal(size=(5,)), rng.normal(size=(5, 2)))


# ---------------------------------------------------------------- features and hooks
def all_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


# vit_b_16 runs at 32x32 (2x2 patches of 16) instead of 224: same layers, a fraction of the time
PENULTIMATE = {"cnn": 128, "resnet18_cifar": 512, "resnet50_cifar": 2048, "resnet18": 512,
               "resnet50": 2048}


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_features_shapes_for_every_registry_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=3, image_size=32).train()
    x = torch.rand(2, 3, 32, 32)
    feats = layer_features(model, (x, torch.zeros(2)))
    assert list(feats) == feature_layers(model)
    for layer, f in feats.items():
        assert f.shape[0] == 2 and f.ndim == 2 and f.shape[1] > 0, layer
        assert f.dtype == torch.float32 and f.device.type == "cpu", layer
        assert torch.isfinite(f).all(), layer
    if name in PENULTIMATE:
        assert feats[feature_layers(model)[-1]].shape == (2, PENULTIMATE[name])
    assert model.training  # mode restored
    assert all_hooks(model) == 0


def test_layer_features_batching_subsampling_and_eval_mode():
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=8).train()
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    full = layer_features(model, (x, y), batch_size=10)
    small = layer_features(model, (x, y), batch_size=3)  # BatchNorm in eval mode: batch-independent
    for layer in full:
        torch.testing.assert_close(full[layer], small[layer])
    sub = layer_features(model, (x, y), max_examples=4, seed=1)
    again = layer_features(model, torch.utils.data.TensorDataset(x, y), max_examples=4, seed=1)
    rows = [i for i in range(10) if any(torch.equal(full["net.relu"][i], r) for r in sub["net.relu"])]
    assert len(rows) == 4 and rows == sorted(rows)
    torch.testing.assert_close(sub["net.relu"], full["net.relu"][rows])
    torch.testing.assert_close(again["net.relu"], sub["net.relu"])  # Dataset and tuple agree


def test_layer_features_copies_outputs_modified_in_place_later():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
    x = torch.randn(5, 4)
    feats = layer_features(model, (x, torch.zeros(5)), layers=["0"])
    with torch.no_grad():
        torch.testing.assert_close(feats["0"], model[0](x))
    assert (feats["0"] < 0).any()


def test_layer_features_takes_first_element_of_tuple_outputs():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x

    model = nn.Sequential(nn.Linear(3, 3), Pair())
    model.forward = lambda x: model[1](model[0](x))[0]
    x = torch.randn(4, 3)
    feats = layer_features(model, (x, torch.zeros(4)), layers=["1"])
    with torch.no_grad():
        torch.testing.assert_close(feats["1"], 2 * model[0](x))


def test_layer_features_errors_and_hooks_removed_after_failing_forward():
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=8)
    data = (torch.rand(2, 1, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown layer.*net.block1"):
        layer_features(model, data, layers=["net.nope"])
    with pytest.raises(ValueError, match="pass layers="):
        layer_features(nn.Linear(2, 2), data)
    # 16x16 images pass block1/block2 (hooks fire) and then fail at fc1
    with pytest.raises(RuntimeError):
        layer_features(model, (torch.rand(2, 1, 16, 16), torch.zeros(2)))
    assert all_hooks(model) == 0
    assert model.training
    resnet = create_model("resnet18_cifar", num_classes=3, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="ran 2 times"):  # BasicBlock reuses its ReLU
        layer_features(resnet, data, layers=["net.layer1.0.relu"])
    assert all_hooks(resnet) == 0


def test_cka_matrix_identity_on_same_model_and_labels():
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=8)
    other = create_model("cnn", num_classes=3, in_channels=1, image_size=8)
    data = (torch.rand(12, 1, 8, 8), torch.zeros(12))
    same = cka_matrix(model, model, data)
    layers = feature_layers(model)
    assert list(same.index) == layers and list(same.columns) == layers
    assert same.index.name == "before" and same.columns.name == "after"
    np.testing.assert_allclose(np.diag(same.values), 1.0, atol=1e-10)
    np.testing.assert_allclose(same.values, same.values.T, atol=1e-10)
    cross = cka_matrix(model, other, data, layers=["net.block2", "net.relu"], max_examples=8)
    assert cross.shape == (2, 2) and ((cross.values > 0) & (cross.values < 1)).all()
    feats = layer_features(model, data, layers=["net.relu"], max_examples=8)
    feats_o = layer_features(other, data, layers=["net.relu"], max_examples=8)
    assert cross.loc["net.relu", "net.relu"] == pytest.approx(
        linear_cka(feats["net.relu"], feats_o["net.relu"]), rel=1e-5)
    deb = cka_matrix(model, model, data, debiased=True)
    np.testing.assert_allclose(np.diag(deb.values), 1.0, atol=1e-10)


# ---------------------------------------------------------------- confusion
def test_prediction_confusion_by_hand():
    before = [0, 0, 0, 1, 1, 2]
    after = [1, 2, 1, 0, 2, 2]
    expected = np.array([[0, 2, 1],
                         [1, 0, 1],
                         [0, 0, 1]])
    got = prediction_confusion(before, after, num_classes=3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got.sum(1), np.bincount(before, minlength=3))


def test_prediction_confusion_matches_sklearn_and_row_sums(rng):
    before, after = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    before[before == 4] = 3  # class 4 never predicted before: its row is zero, still present
    got = prediction_confusion(torch.as_tensor(before), after, num_classes=5)
    assert got.shape == (5, 5)
    np.testing.assert_array_equal(got, confusion_matrix(before, after, labels=range(5)))
    np.testing.assert_array_equal(got.sum(1), np.bincount(before, minlength=5))
    with pytest.raises(ValueError, match="outside"):
        prediction_confusion([0, 5], [0, 1], num_classes=5)
    with pytest.raises(ValueError, match="length"):
        prediction_confusion([0, 1], [0], num_classes=5)


def test_average_confusion():
    a = np.array([[2, 2], [0, 0]])
    b = np.array([[0, 4], [1, 3]])
    np.testing.assert_allclose(average_confusion([a, b], normalize=None), [[1, 3], [0.5, 1.5]])
    np.testing.assert_allclose(average_confusion([a, b]), [[0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(average_confusion([a]), [[0.5, 0.5], [0, 0]])  # empty row: 0
    with pytest.raises(ValueError, match="normalize"):
        average_confusion([a], normalize="all")


# ---------------------------------------------------------------- t-SNE
def test_tsne_joint_embedding_split_and_deterministic(rng):
    before, after = rng.normal(size=(20, 6)), rng.normal(size=(15, 6)) + 3
    out = tsne_embedding({"before": before, "after": after}, seed=3)
    assert [o.shape for o in out] == [(20, 2), (15, 2)]
    again = tsne_embedding([before, torch.tensor(after)], seed=3)
    for o, a in zip(out, again):
        np.testing.assert_allclose(o, a, rtol=1e-5, atol=1e-5)
    tiny = tsne_embedding([rng.normal(size=(3, 4)), rng.normal(size=(2, 4))])  # perplexity clamped
    assert [o.shape for o in tiny] == [(3, 2), (2, 2)]
    with pytest.raises(ValueError, match="same width"):
        tsne_embedding([before, after[:, :3]])
