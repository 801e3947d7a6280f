"""The anchors of the ADV regulariser, made from the frozen model and D_f alone.

`make_anchors` attacks D_f (targeted PGD, `kit.method.attacks`), labels the adversarial
examples as the recipe says (`adv_select`: their target, the model's prediction, or its
softmax at `distil_t`), adds the images inverted from the model's BatchNorm statistics
when `synth_anchors` > 0 (`kit.method.synthesis`, labelled the same way: their class, or
the softmax) and the images transformed from D_f when `aug_anchors` > 0
(`kit.method.augment`, labelled by the frozen model: its prediction, or its softmax) and,
when `mine_anchors` > 0, images mined during the run where the model drifts from its frozen
copy (`kit.method.mining`), and returns a source of one anchor batch per step; its
`release(pending)` leaves out, from then on, the transformed images (`release_adv`: and the
adversarial anchors) of the forget instances still pending (`aug_release_from`).
`with_earlier` adds, in continual unlearning, the forget images of earlier requests
(checked by `check_earlier`), labelled by the frozen model (which misclassifies them), so
that a later request keeps them forgotten; `check_hold` checks those that the objective and
the stopping rule hold as well (the engine's `hold`). `BatchCycler` cuts D_f and the anchors
into batches.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..core.predict import soft_labels
from ..core.request import check_forget_tensors, check_images
from ..core.utils import model_device
from .attacks import make_adversarial
from .augment import augment
from .config import UnlearnConfig
from .mining import with_mined
from .speed import attack_precision
from .synthesis import synthesized

AnchorSource = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (x, y) on the device


class BatchCycler:
    """Cycle through n items in batches of at most `batch`.

    Without a generator the order is fixed and the last batch of a pass may be smaller, so
    every item is used once per pass. With one, each pass is a fresh permutation cut into
    full batches (the remainder of a pass is left out; a new shuffle brings it back).
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator | None):
        self.n, self.batch, self.gen = n, min(batch, n), generator
        self.order, self.pos = self._order(), 0

    def _order(self):
        return (torch.randperm(self.n, generator=self.gen) if self.gen is not None
                else torch.arange(self.n))

    def next(self) -> torch.Tensor:
        full_only = self.gen is not None
        if self.pos >= self.n or (full_only and self.pos + self.batch > self.n):
            self.order, self.pos = self._order(), 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx


def frozen_labels(model: torch.nn.Module, x: torch.Tensor, cfg: UnlearnConfig) -> torch.Tensor:
    """Labels of forget images (transformed, or earlier requests') by the model before the
    request: its softmax at distil_t when the recipe distils (adv_select "soft"), else its
    prediction."""
    if cfg.adv_select == "soft":
        return soft_labels(model, x, temperature=cfg.distil_t)
    return soft_labels(model, x).argmax(1)


def scale_label(p: torch.Tensor, labels: torch.Tensor, share: float) -> torch.Tensor:
    """Rows of p (N, C) with column labels[i] times `share`, renormalised.

    >>> p = torch.tensor([[0.5, 0.3, 0.2]])
    >>> scale_label(p, torch.tensor([0]), 0.0).tolist(), scale_label(p, torch.tensor([1]), 0.5)
    ([[0.0, 0.6000000238418579, 0.4000000059604645]], tensor([[0.5882, 0.1765, 0.2353]]))
    """
    idx = labels.to(p.device).long()[:, None]
    p = p.scatter(1, idx, p.gather(1, idx) * share)
    return p / p.sum(1, keepdim=True).clamp_min(1e-12)


def make_anchors(model: torch.nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, *,
                 cfg: UnlearnConfig, num_classes: int, seed: int, exclude: torch.Tensor | None,
                 seconds: dict, passes: dict) -> tuple[AnchorSource | None, int, float]:
    """(anchor source or None, number of adversarial anchors, attack success rate).

    Each call of the source returns one batch: cfg.adv_batch adversarial examples (cycled,
    reshuffled with `seed`) followed, with cfg.synth_anchors, by cfg.synth_batch synthesised
    images and, with cfg.aug_anchors, by cfg.aug_batch_at(k) transformed forget images (each
    their own cycle), and with cfg.mine_anchors by cfg.mine_batch images mined during the run
    (`kit.method.mining`: its passes count here, its time in the updates); after each call
    its `sizes` are the images of each kind in that batch, in order. The time and the
    passes go to the "attack" phase of `seconds`
    and `passes` (updated in place): PGD steps and the inversion's steps count as
    forward+backward passes per example, labelling as a forward pass; the inversion counts
    in full even where `synthesized` found it made earlier in this process.
    """
    device = model_device(model)

    def mined(source):            # with mine_anchors: more, mined during the run (mining)
        if not cfg.mine_anchors:
            return source
        return with_mined(source, model, forget_x, cfg=cfg, seed=seed, passes=passes,
                          label=lambda teacher, x: frozen_labels(teacher, x, cfg))
    t = time.perf_counter()
    with attack_precision(cfg, device):
        adv = make_adversarial(model, forget_x, forget_y, num_classes=num_classes,
                               per_instance=cfg.per_instance, norm=cfg.norm, eps=cfg.eps,
                               step_size=cfg.step_size, steps=cfg.pgd_steps, seed=seed,
                               exclude=exclude, chunk_size=cfg.attack_chunk or
                               (256 if device.type == "cpu" else 4096))  # 0: by device
    soft = cfg.adv_select == "soft"                # distil the frozen model's outputs
    if soft:
        adv_x, adv_y = adv.images, soft_labels(model, adv.images, temperature=cfg.distil_t)
        if cfg.adv_label_share != 1:               # more or less of y within eps of D_f
            adv_y = scale_label(adv_y, adv.source_labels, cfg.adv_label_share)
    else:
        adv_x, adv_y = adv.select(cfg.adv_select)
    passes["attack"] = len(adv) * (cfg.pgd_steps + 1 / 3)   # PGD steps + final predict
    sources = []
    if len(adv_x):
        sources.append((adv_x, adv_y, cfg.adv_batch))
    if cfg.synth_anchors:                           # images inverted from the frozen model
        syn_x, syn_y = synthesized(model, cfg.synth_anchors, shape=tuple(forget_x.shape[1:]),
                                  num_classes=num_classes, seed=seed, iters=cfg.synth_iters)
        if soft:
            syn_y = soft_labels(model, syn_x, temperature=cfg.distil_t)
        sources.append((syn_x, syn_y, cfg.synth_batch))
        passes["attack"] += cfg.synth_anchors * (cfg.synth_iters + 2 / 3)
    if cfg.aug_anchors:                             # D_f under random affine transforms
        aug_x = augment(forget_x, cfg.aug_anchors, seed=seed, transform=cfg.aug_transform)
        aug_x = aug_x.to(device)
        sources.append((aug_x, frozen_labels(model, aug_x, cfg), cfg.aug_batch_at(len(forget_x))))
        passes["attack"] += cfg.aug_anchors / 3     # labelling: one forward pass each
    seconds["attack"] = time.perf_counter() - t
    if not sources:
        return mined(None), 0, float(adv.success_rate)
    # each source its own cycle, reshuffled from seed + its place (adversarial first)
    cyclers = [(x, y, BatchCycler(len(x), batch, torch.Generator().manual_seed(seed + i)))
               for i, (x, y, batch) in enumerate(sources)]
    # the forget instance each image of a source comes from, where the release may act:
    # the transformed images (image i is instance i mod k), with release_adv the adversarial
    own = {}
    if cfg.aug_anchors:
        own[len(sources) - 1] = torch.arange(cfg.aug_anchors) % len(forget_x)
    if cfg.release_adv and len(adv_x):
        own[0] = adv.source.cpu()
    keep = {}                                       # source -> its images still used (release)

    def anchors():
        xs, ys = [], []
        for j, (x, y, cycler) in enumerate(cyclers):
            i = cycler.next()
            if j in keep:
                i = i[keep[j][i]]
            xs.append(x[i.to(x.device)])
            ys.append(y[i.to(y.device)])
        anchors.sizes = [len(y) for y in ys]        # images per kind (projection "kinds")
        if len(xs) == 1:                            # adversarial anchors only: no copy
            return xs[0].to(device), ys[0].to(device)
        return torch.cat(xs).to(device), torch.cat(ys).to(device)

    def release(pending: torch.Tensor) -> None:
        """From now on leave out the transformed images (with release_adv: the adversarial
        anchors too) of the pending forget instances; the cycles and batches stay as they were."""
        keep.update({j: ~pending.cpu()[src] for j, src in own.items()})
    anchors.release = release
    return mined(anchors), len(adv_x), float(adv.success_rate)


EARLIER_SEED = 100  # the cycle of the earlier forget images: seed + this


def with_earlier(source: AnchorSource | None, model: torch.nn.Module, earlier_x: torch.Tensor, *,
                 cfg: UnlearnConfig, seed: int, passes: dict) -> AnchorSource:
    """`source` with cfg.aug_batch of `earlier_x` appended to every batch (their own cycle,
    reshuffled from seed + EARLIER_SEED); source None: those alone.

    earlier_x: forget images of earlier requests (continual unlearning), on the model's
    device. They are labelled now, by the model before this request, as the transformed
    forget images are: its softmax at distil_t when the recipe distils (adv_select "soft"),
    else its prediction. That model misclassifies them, so the anchor term keeps them
    misclassified; transforms of them would not (the forgetting is local: a shifted
    forgotten image is still classified right, docs/exploration.md). Labelling counts one
    forward pass each in the "attack" phase of `passes`.
    """
    y = frozen_labels(model, earlier_x, cfg)
    passes["attack"] += len(earlier_x) / 3
    cycler = BatchCycler(len(earlier_x), cfg.aug_batch,
                         torch.Generator().manual_seed(seed + EARLIER_SEED))

    def anchors():
        i = cycler.next().to(earlier_x.device)
        if source is None:
            anchors.sizes = [len(i)]
            return earlier_x[i], y[i]
        ax, ay = source()
        anchors.sizes = [*getattr(source, "sizes", [len(ay)]), len(i)]
        return torch.cat([ax, earlier_x[i]]), torch.cat([ay, y[i]])
    anchors.release = getattr(source, "release", lambda pending: None)
    return anchors


def _any_image_like(x, forget_x: torch.Tensor, name: str) -> bool:
    """Whether x holds any image; ValueError naming `name` when it is not a tensor of images
    shaped like forget_x's (the pixels are checked after)."""
    if not isinstance(x, torch.Tensor) or x.shape[1:] != forget_x.shape[1:]:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of images shaped like forget_x's "
                         f"(N, {', '.join(map(str, forget_x.shape[1:]))}), got {shape}")
    return len(x) > 0


def check_earlier(earlier_x, forget_x: torch.Tensor, *, use_adv: bool, method: str):
    """earlier_x on forget_x's device as float32, or None (also for no image); ValueError
    when it is not a tensor of images shaped like forget_x's with finite pixels in [0, 1], or
    the method has no ADV."""
    if earlier_x is None or not _any_image_like(earlier_x, forget_x, "earlier_x"):
        return None
    check_images(earlier_x, "earlier_x")
    if not use_adv:
        raise ValueError(f"earlier forget sets join the ADV anchors, and method {method!r} "
                         f"has none; use adv or adv+imp, or pass earlier_x=None "
                         f"(continual: remember=False)")
    return earlier_x.to(forget_x.device, torch.float32)


def check_hold(hold, forget_x: torch.Tensor, *, num_classes: int):
    """hold = (images, targets) on forget_x's device (float32, long), or None (also for no
    image); ValueError when it is not such a pair: images shaped like forget_x's with finite
    pixels in [0, 1], one integer target in [0, num_classes) per image."""
    if hold is None:
        return None
    if not isinstance(hold, (tuple, list)) or len(hold) != 2:
        raise ValueError(f"hold must be a pair (images, targets), got {type(hold).__name__}")
    hx, ht = hold
    if not _any_image_like(hx, forget_x, "hold's images"):
        return None
    try:
        check_forget_tensors(hx, ht, num_classes=num_classes)
    except ValueError as e:
        raise ValueError(f"hold (earlier forget images, their targets): {e}") from None
    return hx.to(forget_x.device, torch.float32), ht.to(forget_x.device, torch.long)
