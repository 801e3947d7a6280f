"""Anchors made from D_f alone by random geometric transforms.

`augment(forget_x, n, seed=...)` returns n images, image i a random affine transform of
forget instance i mod k (torchvision's `RandomAffine` with one of `TRANSFORMS`: rotation,
shift, scale and shear, after an `ElasticTransform` in some; one draw per image from
`seed`; a transform of several parts splits the n images into that many consecutive runs,
one part each). The engine labels them like its adversarial anchors (the frozen model's
softmax at T, or its prediction) and mixes a batch of them into every step
(`UnlearnConfig.aug_anchors`). They stand in for what the D_r oracle
has and the plain recipe lacks: digits like the forgotten ones, a few pixels or degrees
away, that must keep the frozen model's outputs. So the objective moves the forget images
across the boundary and little else; the price is forgetting that is more local still (a
one-pixel shift of a forget image is close to its anchors).

Nothing but D_f and the seed goes in, so the images keep the remaining-data-free contract
(`kit.method.contract.augmentation_inputs` makes them again and the check matches them
bit for bit).

>>> x = torch.zeros(2, 1, 8, 8); x[:, :, 2:6, 3:5] = 1
>>> a = augment(x, 5, seed=0)
>>> tuple(a.shape), bool(torch.equal(a, augment(x, 5, seed=0))), 0 <= float(a.min()) <= float(a.max()) <= 1
((5, 1, 8, 8), True, True)
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..core.utils import check_name

_AFFINE = dict(degrees=15.0, translate=(0.1, 0.1), scale=(0.85, 1.15), shear=10.0)
_SMALL = dict(degrees=6.0, translate=(0.04, 0.04), scale=(0.92, 1.08), shear=6.0)
# an elastic deformation (Simard et al. 2003; torchvision's alpha and sigma, in pixels) before
# the affine transform: the same digit in another hand, not only moved
_ELASTIC = dict(_AFFINE, elastic=dict(alpha=50.0, sigma=5.0))
_NOSHIFT = dict(degrees=20.0, scale=(0.8, 1.2), shear=15.0)
# "affine" without its shift, then a whole-pixel shift of 2 or 3 pixels (`_FarShift`)
_FAR = dict({k: v for k, v in _AFFINE.items() if k != "translate"}, far_shift=(2, 3))
# name -> the parts (RandomAffine's arguments; `elastic`: ElasticTransform's, for 28 pixels)
# of UnlearnConfig.aug_transform; measured on the calibration split (docs/exploration.md,
# "Anchors transformed from D_f", and "Transformed anchors in another hand").
TRANSFORMS: dict[str, tuple[dict, ...]] = {
    # rotation up to 15 degrees, shift up to 10 % of the side, scale 0.85-1.15, shear 10
    "affine": (_AFFINE,),
    # no shift; rotation up to 20 degrees, scale 0.8-1.2, shear 15
    "affine_noshift": (_NOSHIFT,),
    # small: rotation up to 6 degrees, shift up to 4 % (about one pixel on 28), scale
    # 0.92-1.08, shear 6: images about as far from their forget image as the test images
    # that the transformed anchors of "affine" leave unprotected
    "affine_small": (_SMALL,),
    # the first half of the images as "affine", the second as "affine_small"
    "affine_mix": (_AFFINE, _SMALL),
    # an elastic deformation (alpha 50, sigma 5), then "affine"; and half of each
    "elastic": (_ELASTIC,),
    "affine_elastic": (_AFFINE, _ELASTIC),
    # "affine" without its shifts of a pixel or less: rotation, scale and shear as there,
    # then a whole-pixel shift of 2 or 3 pixels along the larger axis (on 28 pixels): off
    # the one-pixel shifts that the robust objective wants misclassified
    "affine_farshift": (_FAR,),
    # half "affine_noshift", half "affine_farshift"
    "noshift_farshift": (_NOSHIFT, _FAR),
}


class _FarShift:
    """A whole-pixel shift (zero fill) whose larger component lies in [lo, hi] pixels (given
    for 28-pixel images, scaled with `side`): the other component uniform in [-hi, hi], the
    axis and signs at random; drawn from torch's global RNG like torchvision's transforms.

    >>> _ = torch.manual_seed(0); x = torch.zeros(1, 9, 9); x[0, 4, 4] = 1
    >>> y = _FarShift((2, 3), 28)(x); r, c = divmod(int(y.argmax()), 9)
    >>> float(y.sum()), max(abs(r - 4), abs(c - 4)) in (2, 3)
    (1.0, True)
    """

    def __init__(self, lo_hi: tuple[int, int], side: int):
        self.lo, self.hi = (max(1, round(v * side / 28)) for v in lo_hi)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        big = int(torch.randint(self.lo, self.hi + 1, ()))
        other = int(torch.randint(-self.hi, self.hi + 1, ()))
        sign = 1 if bool(torch.rand(()) < 0.5) else -1
        dy, dx = (sign * big, other) if bool(torch.rand(()) < 0.5) else (other, sign * big)
        return v2.functional.affine(img, angle=0.0, translate=[dx, dy], scale=1.0,
                                    shear=[0.0, 0.0],
                                    interpolation=v2.InterpolationMode.NEAREST)


def _part(p: dict, side: int):
    """The torchvision transform of one part: RandomAffine, after an ElasticTransform when
    the part names one (nearest pixel, zero fill, as the affine; its alpha and sigma are for
    28-pixel images and scale with `side`, the image's width), before a `_FarShift` when the
    part names `far_shift`."""
    affine = v2.RandomAffine(**{k: v for k, v in p.items() if k not in ("elastic", "far_shift")})
    steps = [affine]
    if "elastic" in p:
        el = {k: v * side / 28 for k, v in p["elastic"].items()}
        steps.insert(0, v2.ElasticTransform(**el, interpolation=v2.InterpolationMode.NEAREST))
    if "far_shift" in p:
        steps.append(_FarShift(p["far_shift"], side))
    return steps[0] if len(steps) == 1 else v2.Compose(steps)


def augment(forget_x: torch.Tensor, n: int, *, seed: int = 0,
            transform: str = "affine") -> torch.Tensor:
    """(n, C, H, W) images in [0, 1] on the CPU: image i is forget_x[i mod k] under one
    random affine transform (a part of `TRANSFORMS[transform]`: consecutive runs of images,
    one part each; nearest pixel, zero fill), drawn from `seed` alone."""
    if n < 1 or not len(forget_x):
        raise ValueError(f"augment needs n >= 1 and a non-empty forget set, got n={n}, "
                         f"k={len(forget_x)}")
    source = forget_x.detach().cpu().float().contiguous()
    parts = [_part(p, source.shape[-1]) for p in check_name(transform, TRANSFORMS, "transform")]
    with torch.random.fork_rng(devices=[]):         # torchvision draws from torch's global RNG
        torch.manual_seed(seed)
        out = torch.stack([parts[i * len(parts) // n](source[i % len(source)])
                           for i in range(n)])
    return out.clamp(0.0, 1.0)
