"""Model registry. Every model takes images in [0, 1]; normalisation is its first layer.

`create_model("cnn", num_classes=10, in_channels=1, image_size=28)` returns a `Classifier`
whose `normalize` layer holds the data set's per-channel mean/std and whose `net` is the
architecture. Keeping normalisation inside the model lets attacks clip and project in
[0, 1] pixel space, as the paper's code does.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import VisionTransformer

from .utils import eval_mode, model_device


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean/std are buffers so they travel with checkpoints."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):  # (N, C, H, W) in [0, 1]
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """`net(normalize(x))`, remembering what it was built as (for checkpoints)."""

    def __init__(self, net: nn.Module, *, arch: str, num_classes: int, in_channels: int,
                 image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.config = {"arch": arch, "num_classes": num_classes, "in_channels": in_channels,
                       "image_size": image_size, "mean": list(map(float, mean)),
                       "std": list(map(float, std))}

    def forward(self, x):  # (N, C, H, W) -> (N, num_classes)
        return self.net(self.normalize(x))


# ---------------------------------------------------------------- architectures
def _small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """2 conv + BatchNorm blocks and a 128-unit hidden layer (~0.4 M params at 28x28)."""
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(), nn.MaxPool2d(2))
    side = image_size // 4
    return nn.Sequential(OrderedDict(dict(
        block1=block(in_channels, 32), block2=block(32, 64), flatten=nn.Flatten(),
        fc1=nn.Linear(64 * side * side, 128), relu=nn.ReLU(),
        fc2=nn.Linear(128, num_classes))))


def _replace_first_conv(conv: nn.Conv2d, in_channels: int, **overrides) -> nn.Conv2d:
    kw = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
              bias=conv.bias is not None)
    kw.update(overrides)
    return nn.Conv2d(in_channels, conv.out_channels, **kw)


def _cifar_resnet(ctor: Callable) -> Callable:
    """ResNet with the CIFAR stem of the paper's code: 3x3 stride-1 conv, no max-pool."""
    def build(num_classes, in_channels, image_size):
        net = ctor(weights=None, num_classes=num_classes)
        net.conv1 = _replace_first_conv(net.conv1, in_channels, kernel_size=3, stride=1, padding=1)
        net.maxpool = nn.Identity()
        return net
    return build


def _cifar_resnet_small(num_classes, in_channels, image_size, *, n=1, widths=(16, 32, 64)):
    """The CIFAR ResNet of He et al. (2016), depth 6n + 2 (n = 1: ResNet-8), from
    torchvision's BasicBlock: 3x3 stem, three stages of n blocks (stride 1, 2, 2)."""
    from torchvision.models.resnet import BasicBlock

    def stage(cin, cout, stride):
        down = (None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))
        blocks = [BasicBlock(cin, cout, stride, down)]
        return nn.Sequential(*blocks, *(BasicBlock(cout, cout) for _ in range(n - 1)))

    w1, w2, w3 = widths
    return nn.Sequential(OrderedDict(dict(
        conv1=nn.Conv2d(in_channels, w1, 3, padding=1, bias=False), bn1=nn.BatchNorm2d(w1),
        relu=nn.ReLU(inplace=True), layer1=stage(w1, w1, 1), layer2=stage(w1, w2, 2),
        layer3=stage(w2, w3, 2), avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        fc=nn.Linear(w3, num_classes))))


def _resnet(ctor):
    def build(num_classes, in_channels, image_size):
        net = ctor(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = _replace_first_conv(net.conv1, in_channels)
        return net
    return build


def _mobilenet_v2(num_classes, in_channels, image_size):
    net = tvm.mobilenet_v2(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.features[0][0] = _replace_first_conv(net.features[0][0], in_channels)
    return net


def _squeezenet(num_classes, in_channels, image_size):
    net = tvm.squeezenet1_1(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.features[0] = _replace_first_conv(net.features[0], in_channels)
    return net


def _densenet(num_classes, in_channels, image_size):
    net = tvm.densenet121(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.features.conv0 = _replace_first_conv(net.features.conv0, in_channels)
    return net


def _vit(patch_size, num_layers, num_heads, hidden_dim, mlp_dim):
    def build(num_classes, in_channels, image_size):
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the ViT patch size "
                             f"{patch_size}; resize the data or pick another model")
        net = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                                num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                                num_classes=num_classes)
        if in_channels != 3:
            net.conv_proj = _replace_first_conv(net.conv_proj, in_channels)
        return net
    return build


MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "cnn": _small_cnn,
    "resnet8_cifar": _cifar_resnet_small,          # ResNet-8 (He et al.), ~78 k params
    "resnet18_cifar": _cifar_resnet(tvm.resnet18),
    "resnet50_cifar": _cifar_resnet(tvm.resnet50),
    "resnet18": _resnet(tvm.resnet18),
    "resnet50": _resnet(tvm.resnet50),
    "mobilenet_v2": _mobilenet_v2,
    "squeezenet1_1": _squeezenet,
    "densenet121": _densenet,
    "vit_tiny_patch4": _vit(4, 6, 3, 192, 384),   # small ViT for 32x32 (and 28x28) images
    "vit_b_16": _vit(16, 12, 12, 768, 3072),       # ViT-B/16 for 224x224
}

# Layers whose outputs the analysis code (CKA, t-SNE) reads by default; the last one is
# the penultimate representation. Names are relative to the Classifier.
_RESNET_LAYERS = ["net.layer1", "net.layer2", "net.layer3", "net.layer4", "net.avgpool"]
FEATURE_LAYERS: dict[str, list[str]] = {
    "cnn": ["net.block1", "net.block2", "net.relu"],
    "resnet8_cifar": ["net.layer1", "net.layer2", "net.layer3", "net.avgpool"],
    "resnet18_cifar": _RESNET_LAYERS, "resnet50_cifar": _RESNET_LAYERS,
    "resnet18": _RESNET_LAYERS, "resnet50": _RESNET_LAYERS,
    "mobilenet_v2": [f"net.features.{i}" for i in (3, 6, 10, 13, 16, 18)],
    "squeezenet1_1": [f"net.features.{i}" for i in (2, 5, 8, 12)],
    "densenet121": [f"net.features.denseblock{i}" for i in (1, 2, 3, 4)] + ["net.features.norm5"],
    "vit_tiny_patch4": [f"net.encoder.layers.encoder_layer_{i}" for i in range(6)] + ["net.encoder.ln"],
    "vit_b_16": [f"net.encoder.layers.encoder_layer_{i}" for i in range(12)] + ["net.encoder.ln"],
}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")


def create_model(name: str = "cnn", *, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 28, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> Classifier:
    """Build registry model `name` for `num_classes` classes of `in_channels`x`image_size`^2 images.

    mean/std: per-channel normalisation of [0,1] pixels (default 0.5/0.5 per channel).

    >>> create_model("cnn")(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    _check_name(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    mean = mean if mean is not None else [0.5] * in_channels
    std = std if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values (one per channel), got "
                         f"{len(mean)} and {len(std)}")
    net = MODELS[name](num_classes, in_channels, image_size)
    return Classifier(net, arch=name, num_classes=num_classes, in_channels=in_channels,
                      image_size=image_size, mean=mean, std=std)


def wrap(model: nn.Module, *, mean: Sequence[float], std: Sequence[float], num_classes: int,
         image_size: int | None = None, arch: str = "external") -> Classifier:
    """Your own classifier, made ready for the kit: its input normalisation becomes the
    first layer, so the kit feeds it [0, 1] pixels and attacks work in pixel space.

    model: any classifier trained on images normalised by (x - mean) / std per channel
    (e.g. a torchvision model with the ImageNet mean/std); it is used as is (not copied),
    so `wrapped.net` is your model and `wrapped.net.state_dict()` saves in your format.
    mean/std: one value per channel. image_size: checked against inputs when given.

    >>> m = wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
    ...          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=3)
    >>> m(torch.zeros(1, 3, 2, 2)).shape, m.config["in_channels"]
    (torch.Size([1, 3]), 3)
    """
    if len(mean) != len(std) or not len(mean):
        raise ValueError(f"mean and std need one value per channel and the same length; got "
                         f"{len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {list(std)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return Classifier(model, arch=arch, num_classes=num_classes, in_channels=len(mean),
                      image_size=image_size, mean=mean, std=std)


def feature_layers(model: Classifier) -> list[str]:
    """Default layer names for representation analysis of `model` (last = penultimate)."""
    return list(FEATURE_LAYERS[model.config["arch"]])


# ---------------------------------------------------------------- your own architecture
def _unknown(kind: str, name: str, valid) -> ValueError:
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid names: {', '.join(valid)}"
    return ValueError(f"unknown {kind} model {name!r}; {hint}")


def build_net(arch: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32
              ) -> nn.Module:
    """A bare, randomly initialised network (no normalisation layer) named by `arch`:
    a registry name of `MODELS`, `torchvision:NAME` (any torchvision classification model,
    `torchvision.models.get_model(NAME, weights=None, num_classes=...)`) or `timm:NAME`
    (`timm.create_model(NAME, pretrained=False, num_classes=...)`, needs `pip install timm`).

    Your weights for the same `arch` and `num_classes` load strictly into it; in_channels and
    image_size matter for registry names only.

    >>> build_net("torchvision:squeezenet1_1", num_classes=3)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 3])
    """
    kind, _, name = arch.rpartition(":")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if kind == "torchvision":
        valid = tvm.list_models(module=tvm)                 # the classification models
        if name not in valid:
            raise _unknown("torchvision", name, valid)
        return tvm.get_model(name, weights=None, num_classes=num_classes)
    if kind == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError(f"{arch!r} needs the optional package timm: pip install timm "
                             f"(or pip install 'unlearning-kit[timm]')") from None
        if not timm.is_model(name):
            raise _unknown("timm", name, timm.list_models())
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    if kind:
        raise ValueError(f"unknown architecture prefix {kind!r} in {arch!r}; use a kit name "
                         f"({', '.join(MODELS)}), torchvision:NAME or timm:NAME")
    if name not in MODELS:
        raise _unknown("kit", name, MODELS)
    return MODELS[name](num_classes, in_channels, image_size)


def num_classes_of(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Classes of `model`: from a kit model's config, else from one forward pass on x[:1]
    (which also checks that the model accepts images shaped like x)."""
    cfg = getattr(model, "config", None)
    if isinstance(cfg, dict) and "num_classes" in cfg:
        for key, got in (("in_channels", x.shape[1]), ("image_size", x.shape[-1])):
            if cfg.get(key) is not None and cfg[key] != got:
                raise ValueError(f"the model expects {key}={cfg[key]} but the forget images "
                                 f"have {got} (shape {tuple(x.shape)}); pass images from the "
                                 f"data set the model was trained on")
        return int(cfg["num_classes"])
    try:
        with eval_mode(model), torch.inference_mode():
            n = model(x[:1].to(model_device(model))).shape[1]
    except RuntimeError as e:
        raise ValueError(f"the model cannot take images of shape {tuple(x.shape[1:])}: {e}") from e
    return int(n)
