"""Tests for kit.train: a short real training run, determinism, augmentation, presets (CPU)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from kit.core.data import gather
from kit.core.predict import accuracy
from kit.core.models import create_model
from kit.core.train import AUGMENTATIONS, PRESETS, augment_batch, preset, train


@pytest.fixture(scope="module")
def subset(mnist5k):
    # mnist5k's training set is ordered by class, so take a seeded random 512, not the first
    idx = np.random.default_rng(0).permutation(len(mnist5k.train))[:512]
    return Subset(mnist5k.train, idx)


def _cnn(init_seed=0):
    torch.manual_seed(init_seed)
    return create_model("cnn", num_classes=10, in_channels=1, image_size=28)


def _train(subset, *, seed, epochs=1):
    model = _cnn()
    history = train(model, subset, epochs=epochs, seed=seed, batch_size=64)
    return model, history


def test_one_epoch_lowers_the_loss_and_beats_chance(mnist5k, subset):
    model = _cnn().eval()
    x, y = gather(subset, range(len(subset)))
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    history = train(model, subset, test_data=mnist5k.test, epochs=1, seed=0)
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert not model.training                             # left in eval mode
    assert after < before - 0.1, (before, after)
    assert history["test_acc"].iloc[0] > 0.3              # chance is 0.1
    assert history["test_acc"].iloc[0] == accuracy(model, mnist5k.test)
    assert list(history.columns) == ["epoch", "train_loss", "train_acc", "test_acc", "seconds"]
    assert history["epoch"].tolist() == [1]


def test_training_is_deterministic_under_a_seed(subset):
    a, hist_a = _train(subset, seed=1)
    b, hist_b = _train(subset, seed=1)
    c, _ = _train(subset, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for k in sa:                                          # weights and BatchNorm statistics
        assert torch.equal(sa[k], sb[k]), k
    assert hist_a["train_loss"].tolist() == hist_b["train_loss"].tolist()
    # same initial weights, other shuffling/augmentation: the weights must differ
    assert not torch.equal(sa["net.fc2.weight"], sc["net.fc2.weight"])


# --------------------------------------------------------------------------- augmentation
def _images(n=32, c=3, h=16, w=12):
    # distinct values in (0, 1], so that no pixel can be mistaken for zero padding
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1


def _shifted_copies(x, pad):
    """Every zero-padded shift of each image: (N, S, C, H, W) with S = (2 pad + 1)^2."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    return torch.stack([padded[..., dy:dy + h, dx:dx + w]
                        for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)], 1)


def _which(out, candidates):
    """Index of the candidate each output image equals exactly (asserting there is one)."""
    hits = (candidates == out[:, None]).flatten(2).all(2)  # (N, S)
    assert hits.any(1).all(), "an output image is no allowed transform of its input"
    return hits.float().argmax(1)


@pytest.mark.parametrize("mode", AUGMENTATIONS)
def test_augment_keeps_shape_and_range(mode):
    x = _images()
    out = augment_batch(x, mode, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1


def test_none_is_identity():
    x = _images()
    assert augment_batch(x, "none", torch.Generator()) is x


@pytest.mark.parametrize("h, pad", [(16, 2), (28, 3), (32, 4)])
def test_crop_is_a_zero_padded_shift(h, pad):
    x = _images(n=64, h=h, w=h)
    out = augment_batch(x, "crop", torch.Generator().manual_seed(3))
    shift = _which(out, _shifted_copies(x, pad))
    assert len(shift.unique()) > 5                         # shifts are drawn per image
    # the centre shift is the unchanged image
    assert torch.equal(_shifted_copies(x, pad)[:, (2 * pad + 1) * pad + pad], x)


def test_flip_is_a_horizontal_mirror_of_some_images():
    x = _images(n=64)
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = _which(out, torch.stack([x, x.flip(3)], 1))
    assert 0 < flipped.sum() < 64


def test_crop_flip_is_a_shift_of_the_image_or_its_mirror():
    x = _images(n=64, h=32, w=32)
    out = augment_batch(x, "crop+flip", torch.Generator().manual_seed(0))
    candidates = torch.cat([_shifted_copies(x, 4), _shifted_copies(x.flip(3), 4)], 1)
    _which(out, candidates)


def test_augment_is_reproducible_under_a_generator_seed():
    x = _images()
    a = augment_batch(x, "crop+flip", torch.Generator().manual_seed(5))
    b = augment_batch(x, "crop+flip", torch.Generator().manual_seed(5))
    c = augment_batch(x, "crop+flip", torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_augmentation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'") as err:
        augment_batch(_images(), "rotate", torch.Generator())
    for mode in AUGMENTATIONS:
        assert mode in str(err.value)


# --------------------------------------------------------------------------- presets
def test_preset_returns_a_copy():
    p = preset("default")
    assert p == PRESETS["default"]
    p["epochs"] = -1
    assert PRESETS["default"]["epochs"] != -1


def test_presets_are_valid_train_arguments():
    import inspect

    params = inspect.signature(train).parameters
    for name in PRESETS:
        p = preset(name)
        assert set(p) <= set(params), name
        assert p["augment"] in AUGMENTATIONS


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown training preset 'imagenet'") as err:
        preset("imagenet")
    for name in PRESETS:
        assert name in str(err.value)
