"""Tests for kit.models, parametrised over the registry so a new entry is tested at once (CPU)."""
import pytest
import torch

from kit.core.models import FEATURE_LAYERS, MODELS, Classifier, create_model, feature_layers

NUM_CLASSES = 7


def _tiny(name, batch=2):
    """Model `name` for 7 classes with a matching random input in [0, 1]."""
    channels, size = (1, 28) if name == "cnn" else (3, 32)
    torch.manual_seed(0)
    mean = [0.2, 0.4, 0.6][:channels]
    std = [0.5, 0.25, 2.0][:channels]
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=channels, image_size=size,
                         mean=mean, std=std).eval()
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(1))
    return model, x, mean, std


@pytest.fixture(scope="module", params=list(MODELS))
def built(request):
    return request.param, *_tiny(request.param)


def test_forward_shape_and_finite(built):
    name, model, x, _, _ = built
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    assert isinstance(model, Classifier) and model.config["arch"] == name


def test_normalisation_is_the_first_layer(built):
    _, model, x, mean, std = built
    c = x.shape[1]
    assert model.normalize.mean.flatten().tolist() == pytest.approx(mean)
    assert model.normalize.std.flatten().tolist() == pytest.approx(std)
    # buffers, so they are saved in the state dict and follow .to(device)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    by_hand = (x - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1)
    torch.testing.assert_close(model.normalize(x), by_hand)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(by_hand))
    assert model.config["mean"] == pytest.approx(mean) and model.config["std"] == pytest.approx(std)


def test_feature_layers_exist(built):
    name, model, _, _, _ = built
    modules = dict(model.named_modules())
    layers = feature_layers(model)
    assert layers, f"{name} has no default feature layers"
    missing = [layer for layer in layers if layer not in modules]
    assert not missing, f"{name}: {missing} are not modules of the model"


def test_every_model_has_feature_layers():
    assert set(FEATURE_LAYERS) == set(MODELS)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as err:
        create_model("resnet19")
    for name in MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize("mean, std", [([0.5], [0.5, 0.5, 0.5]), ([0.5] * 3, [0.5]),
                                       ([0.5] * 4, [0.5] * 4)])
def test_mean_std_must_have_one_value_per_channel(mean, std):
    with pytest.raises(ValueError, match="one per channel"):
        create_model("cnn", in_channels=3, image_size=32, mean=mean, std=std)


def test_default_normalisation_and_class_count():
    model = create_model("cnn", in_channels=3, image_size=32)
    assert model.config["mean"] == [0.5] * 3 and model.config["std"] == [0.5] * 3
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        create_model("cnn", num_classes=1)


def test_vit_rejects_image_size_not_multiple_of_patch():
    with pytest.raises(ValueError, match="patch size 16"):
        create_model("vit_b_16", in_channels=3, image_size=40)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "cnn"])
def test_grey_input_replaces_the_first_conv(name):
    # mnist-like data: every registry model must accept one input channel
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=1, image_size=32).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_resnet8_is_he_et_al_depth_6n_plus_2():
    m = create_model("resnet8_cifar", num_classes=10, in_channels=3, image_size=16)
    main = [n for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))
            and "downsample" not in n]
    assert len(main) == 8                                        # 3x3 stem + 3 x 2 convs + fc
    assert m(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    assert [mod.out_channels for n, mod in m.named_modules()
            if n.endswith("conv2")] == [16, 32, 64]
