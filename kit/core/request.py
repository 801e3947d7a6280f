"""A deletion request as a value: which training instances go, with what objective.

`ForgetRequest` holds the forget and retain indices, the forget tensors, the objective and
the new labels of a relabel request. It is built in one of three ways (a seeded draw, the
user's ids, a continual sequence) and validated in one place; everything downstream (the
engine, the baselines, the caches, the CLI) takes it or its tensors.

Forget sets are drawn uniformly from the whole training set, as `randperm(N)[:k]` in the
paper's code: for one seed, the forget set of a smaller k is a prefix of a larger one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import DataBundle, gather, labels_of

OBJECTIVES = ("misclassify", "relabel")


# --------------------------------------------------------------------------- labels
def draw_targets(labels, num_classes, *, generator=None, exclude=None):
    """Draw one target class per example, uniform over the classes other than its label.

    labels: (N,) long in [0, num_classes). num_classes: C >= 2 (>= 3 with `exclude`).
    generator: torch.Generator (any device) for reproducibility; the draw happens on its
    device (CPU when None, using the global RNG) and is moved to `labels.device`.
    exclude: optional (N,) long in [0, C), one extra class per example to avoid as well
    (e.g. a relabeling target); where exclude[i] == labels[i] only the label is avoided.
    Returns (N,) long, never equal to the label (nor to `exclude`).

    The official L2UL code drew from 0..9 whatever C was and replaced a hit on the label
    by C // 2 (which can be the label itself); this draws exactly uniformly instead.

    >>> t = draw_targets(torch.tensor([0, 1, 2]), 3, generator=torch.Generator().manual_seed(0))
    >>> bool((t != torch.tensor([0, 1, 2])).all())
    True
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    labels = labels.long()
    min_classes = 2 if exclude is None else 3
    if num_classes < min_classes:
        raise ValueError(f"need at least {min_classes} classes to draw a target different from "
                         f"the label{' and from exclude' if exclude is not None else ''}; "
                         f"got num_classes={num_classes}")
    check_range(labels, num_classes, "labels")
    n = labels.numel()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    y = labels.to(gen_device)
    if exclude is None:
        lo = hi = y
    else:
        exclude = torch.as_tensor(exclude).long()
        if exclude.shape != labels.shape:
            raise ValueError(f"exclude must have the shape of labels {tuple(labels.shape)}, "
                             f"got {tuple(exclude.shape)}")
        check_range(exclude, num_classes, "exclude")
        e = exclude.to(gen_device)
        lo, hi = torch.minimum(y, e), torch.maximum(y, e)
    n_allowed = num_classes - 1 - (hi != lo).long()  # (N,) number of admissible classes
    # r uniform in [0, n_allowed); then skip over lo and hi (a bijection onto the allowed set)
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    r = torch.minimum((u * n_allowed).floor().long(), n_allowed - 1)
    t = r + (r >= lo).long()
    t = t + ((t >= hi) & (hi != lo)).long()
    return t.to(labels.device)


def check_range(t, num_classes, name):
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got min {int(t.min())} "
                         f"and max {int(t.max())}")



def draw_new_labels(labels, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """Relabel targets drawn uniformly among the classes other than each true label."""
    return draw_targets(torch.as_tensor(labels), num_classes,
                        generator=torch.Generator().manual_seed(seed + 7919))


# --------------------------------------------------------------------------- indices
def sample_forget(n_train: int, k: int, *, seed: int = 0, labels=None, class_id: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Draw a forget set of k training indices; return (forget, retain) index arrays.

    Uniform over the whole training set, as `randperm(N)[:k]` in the paper's code, so for
    one seed the forget set for a smaller k is a prefix of the one for a larger k. With
    `class_id` (and `labels`), draw only among instances of that class (still prefixes).
    retain is the sorted complement.

    >>> f8, _ = sample_forget(100, 8, seed=1); f32, r = sample_forget(100, 32, seed=1)
    >>> bool((f32[:8] == f8).all()), len(r)
    (True, 68)
    """
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed)).numpy()
    if class_id is not None:
        if labels is None:
            raise ValueError("class_id needs the labels of the training set (labels=...)")
        labels = np.asarray(labels)
        perm = perm[labels[perm] == class_id]
    if not 1 <= k <= len(perm):
        where = f" of class {class_id}" if class_id is not None else ""
        raise ValueError(f"forget-set size k={k} is out of range: choose 1 <= k <= {len(perm)} "
                         f"(the number of training instances{where})")
    forget = perm[:k]
    mask = np.ones(n_train, dtype=bool)
    mask[forget] = False
    return forget, np.flatnonzero(mask)


def check_indices(idx, n: int, *, what: str = "forget ids") -> np.ndarray:
    """Validate user-given indices: integers, unique, within [0, n)."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or len(idx) == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} must be a non-empty list of integers, got shape {idx.shape} "
                         f"and dtype {idx.dtype}")
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise ValueError(f"{what} out of range: {bad[:5].tolist()} (valid: 0 <= id < {n}, the "
                         f"size of the training set)")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{what} contain duplicates; each instance can be forgotten once")
    return idx


def retain_complement(n_train: int, *forget_sets) -> np.ndarray:
    """Sorted training indices outside the union of `forget_sets` (the remaining data D_r).

    >>> retain_complement(6, np.array([1, 4]), np.array([4, 5])).tolist()
    [0, 2, 3]
    """
    mask = np.ones(n_train, dtype=bool)
    for f in forget_sets:
        mask[np.asarray(f, dtype=np.int64)] = False
    return np.flatnonzero(mask)


def subsample(idx, n: int | None, *, seed: int) -> np.ndarray:
    """At most n of `idx`, drawn without replacement by a seeded generator, sorted
    (all of them when n is None or len(idx) <= n): the one D_r subsample of the kit."""
    idx = np.asarray(idx)
    if n is not None and n < 1:
        raise ValueError(f"a subsample needs n >= 1 (or None for all), got {n}")
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def check_images(x, name: str = "forget_x") -> None:
    """Validate a batch of images before compute: a float (k, C, H, W) tensor, k >= 1, with
    finite pixels in [0, 1]; `name` is the argument the errors name."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a float torch.Tensor (k, C, H, W); got "
                         f"{type(x).__name__} {getattr(x, 'dtype', '')}; convert "
                         f"with torch.as_tensor(x, dtype=torch.float32)")
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{name} must be (k, C, H, W) with k >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite pixels; pass finite images in [0, 1]")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} must hold pixels in [0, 1] (normalisation is the model's "
                         "first layer); got values outside that range")


def check_forget_tensors(forget_x, forget_y, *, num_classes: int, objective: str = "misclassify",
                         new_labels=None) -> None:
    """Validate forget tensors (and new labels) for any unlearning method, before compute.

    forget_x: (k, C, H, W) float, finite, in [0, 1]; forget_y and new_labels: (k,) integer
    labels in [0, num_classes); a relabel request names a different class for each instance.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid names: {', '.join(OBJECTIVES)}")
    check_images(forget_x)
    for name, t in (("forget_y", forget_y), ("new_labels", new_labels)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer torch.Tensor of shape (k,), got "
                             f"{type(t).__name__} {getattr(t, 'dtype', '')}")
        if t.shape != (len(forget_x),):
            raise ValueError(f"{name} must have shape ({len(forget_x)},) (one label per forget "
                             f"image), got {tuple(t.shape)}")
        if t.min() < 0 or t.max() >= num_classes:
            raise ValueError(f"{name} out of range: labels must be in [0, {num_classes - 1}] "
                             f"for this {num_classes}-class model")
    if objective == "relabel":
        if new_labels is None:
            raise ValueError("objective='relabel' needs new_labels (or use draw_new_labels)")
        if (new_labels.to(forget_y.device) == forget_y).any():
            raise ValueError("some new_labels equal the true label; a relabel request must "
                             "name a different class for every instance")
    elif new_labels is not None:
        raise ValueError("new_labels only make sense with objective='relabel'")


# --------------------------------------------------------------------------- the request
@dataclass(frozen=True, eq=False)
class ForgetRequest:
    """One deletion request on a DataBundle's training set.

    forget_idx (k,) and retain_idx index data.train (retain: everything not forgotten so
    far); x (k, C, H, W) in [0, 1] and y (k,) are the forget tensors; new_labels (k,) for a
    relabel request; seed: the seed it was drawn with (also the method's seed). Build it
    with `draw`, `from_ids` or `sequence`, which validate it against the data set.
    """
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    objective: str = "misclassify"
    new_labels: torch.Tensor | None = None
    seed: int = 0

    @property
    def k(self) -> int:
        return len(self.forget_idx)

    @property
    def target(self) -> torch.Tensor:
        """The labels the objective is about: y (misclassify) or new_labels (relabel)."""
        return self.y if self.objective == "misclassify" else self.new_labels

    def retain_sample(self, n: int | None, *, seed: int | None = None) -> np.ndarray:
        """At most n retain indices, seeded (default: the request's seed); see `subsample`."""
        return subsample(self.retain_idx, n, seed=self.seed if seed is None else seed)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def _build(cls, data: DataBundle, forget_idx, retain_idx, *, objective, new_labels, seed):
        fx, fy = gather(data.train, forget_idx)
        if objective == "relabel" and new_labels is None:
            new_labels = draw_new_labels(fy, data.num_classes, seed=seed)
        if new_labels is not None:
            new_labels = torch.as_tensor(new_labels)
        check_forget_tensors(fx, fy, num_classes=data.num_classes, objective=objective,
                             new_labels=new_labels)
        return cls(np.asarray(forget_idx), np.asarray(retain_idx), fx, fy, objective,
                   new_labels, seed)

    @classmethod
    def draw(cls, data: DataBundle, k: int, *, seed: int = 0, objective: str = "misclassify",
             class_id: int | None = None) -> "ForgetRequest":
        """k instances drawn uniformly (or within class `class_id`) with `seed`; a relabel
        request gets new labels drawn among the other classes with the same seed."""
        labels = labels_of(data.train) if class_id is not None else None
        f_idx, r_idx = sample_forget(len(data.train), k, seed=seed, labels=labels,
                                     class_id=class_id)
        return cls._build(data, f_idx, r_idx, objective=objective, new_labels=None, seed=seed)

    @classmethod
    def from_ids(cls, data: DataBundle, ids, *, objective: str = "misclassify",
                 new_labels=None, seed: int = 0) -> "ForgetRequest":
        """The user's training-set indices (validated: integers, unique, in range)."""
        f_idx = check_indices(np.asarray(ids), len(data.train))
        return cls._build(data, f_idx, retain_complement(len(data.train), f_idx),
                          objective=objective, new_labels=new_labels, seed=seed)

    @classmethod
    def sequence(cls, data: DataBundle, *, k: int, n_requests: int, seed: int = 0,
                 disjoint: bool = True, relabel=()) -> list["ForgetRequest"]:
        """Continual unlearning: n_requests requests of k, applied one after another.

        disjoint=True: one seeded permutation cut into consecutive chunks, so request 1
        equals `draw(data, k, seed=seed)`'s forget set and no index repeats. False:
        independent draws (requests may overlap). Request t (1-based) has retain = training
        set minus the union of requests 1..t and seed + t; it is a relabel request when t
        is in `relabel`, with new labels drawn with seed + t.
        """
        n = len(data.train)
        seqs = request_indices(n, k=k, n_requests=n_requests, seed=seed, disjoint=disjoint)
        chosen = {int(t) for t in relabel}
        bad = sorted(t for t in chosen if not 1 <= t <= n_requests)
        if bad:
            raise ValueError(f"relabel requests {bad} out of range: requests are numbered "
                             f"1..{n_requests} (1-based)")
        return [cls._build(data, f_idx, retain_complement(n, *seqs[:t]),
                           objective="relabel" if t in chosen else "misclassify",
                           new_labels=None, seed=seed + t)
                for t, f_idx in enumerate(seqs, start=1)]


def request_indices(n_train: int, *, k: int, n_requests: int, seed: int = 0,
                    disjoint: bool = True) -> list[np.ndarray]:
    """T = n_requests forget sets of k training indices each (int64 arrays, draw order);
    see `ForgetRequest.sequence`."""
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if n_requests < 1:
        raise ValueError(f"n_requests must be >= 1, got {n_requests}")
    if not 1 <= k <= n_train:
        raise ValueError(f"forget-set size k={k} is out of range: choose 1 <= k <= {n_train} "
                         f"(the number of training instances)")
    if disjoint and k * n_requests > n_train:
        raise ValueError(f"{n_requests} disjoint requests of k={k} need k * n_requests = "
                         f"{k * n_requests} training instances but there are only {n_train}: "
                         f"choose 1 <= k <= {n_train // n_requests} for {n_requests} requests "
                         f"(or 1 <= n_requests <= {n_train // k} for k={k}), or pass "
                         f"disjoint=False to allow overlapping requests")
    gen = torch.Generator().manual_seed(seed)
    if disjoint:
        perm = torch.randperm(n_train, generator=gen).numpy().astype(np.int64)
        return [perm[t * k:(t + 1) * k].copy() for t in range(n_requests)]
    return [torch.randperm(n_train, generator=gen)[:k].numpy().astype(np.int64)
            for _ in range(n_requests)]
