"""Unlearning baselines of the field behind one call: `run_baseline(name, model, fx, fy)`.

Every entry of `BASELINES` modifies the model in place and returns a flat dict (name,
needs_retain, steps, seconds, config, method-specific extras). Entries flagged
`needs_retain` are allowed to use the remaining data D_r and get it as `retain` (a Dataset
yielding (x, y) in [0, 1], or an (x, y) tuple); the others are D_r-free, like the paper's
method (`kit.unlearn`): their functions have no parameter through which D_r could reach
them, and `run_baseline` refuses a `retain` for them.

Hyper-parameter defaults live in one place, each function's signature, with a comment
naming the source. Where a paper's value is set for CIFAR-scale runs (e.g. 10 epochs over
45,000 images) the default here is scaled down so that a run on mnist5k with the "cnn"
takes seconds on a CPU; the comment gives both. Models are in train mode during updates
(BatchNorm batch statistics, as in the baselines' code) and in eval mode for attacks and
on return.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .attacks import NORMS, draw_targets
from .models import create_model
from .train import preset, train
from .unlearn import check_forget_set, num_classes_of
from .utils import model_device, seed_everything

_CALL_ARGS = ("retain", "num_classes", "seed")  # given by run_baseline, not hyper-parameters


# --------------------------------------------------------------------------- shared helpers
def masked_step(optimizer: torch.optim.Optimizer, params, masks) -> None:
    """`optimizer.step()` after which every weight outside its mask is bit-identical.

    params: the tensors the optimizer updates; masks: one bool tensor per parameter, same
    shape (True: the weight may move). Masking the gradient alone is not enough: SGD weight
    decay adds wd * theta to a zero gradient, and momentum (or Adam's moments) keeps moving
    a weight whose gradient is now zero. So the gradient is zeroed outside the mask (clean
    optimizer state), the frozen values are kept, the step is taken, and the frozen values
    are written back with their momentum buffer cleared: exact for any optimizer.
    """
    params, masks = list(params), list(masks)
    if len(params) != len(masks):
        raise ValueError(f"got {len(params)} parameters but {len(masks)} masks; pass one mask "
                         f"per parameter")
    for p, m in zip(params, masks):
        if m.shape != p.shape or m.dtype != torch.bool:
            raise ValueError(f"each mask must be a bool tensor of its parameter's shape; got "
                             f"{m.dtype} {tuple(m.shape)} for a parameter of {tuple(p.shape)}")
    with torch.no_grad():
        kept = []
        for p, m in zip(params, masks):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)
            kept.append(p.detach().clone())
        optimizer.step()
        for p, m, old in zip(params, masks, kept):
            p.copy_(torch.where(m, p, old))
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.masked_fill_(~m, 0.0)


def saliency_mask(model: torch.nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, *,
                  keep: float = 0.5, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """SalUn weight saliency: True for the top `keep` share of |grad of the forget loss|.

    Fan et al., ICLR 2024, Eq. (4): g = grad of the forgetting loss on D_f at the original
    weights (summed over batches, eval mode, as the authors' generate_mask.py), hard
    threshold over all weights together (not per tensor). keep: share in (0, 1] of the
    weights that may move (paper: 0.5). Returns {parameter name: bool mask}; the model and
    its .grad are untouched. (One stored version of the authors' code ranks ascending, which
    keeps the *least* salient half; this follows the paper.)
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for _, p in named]
    was = model.training
    model.eval()
    for lo in range(0, len(forget_x), batch_size):
        loss = F.cross_entropy(model(forget_x[lo:lo + batch_size]),
                               forget_y[lo:lo + batch_size], reduction="sum")
        got = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for acc, g in zip(grads, got):
            if g is not None:
                acc += g
    model.train(was)
    flat = torch.cat([g.abs().flatten() for g in grads])       # (total weights,)
    n_keep = max(1, int(round(keep * flat.numel())))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[flat.topk(n_keep).indices] = True                   # exactly n_keep weights
    masks, start = {}, 0
    for (n, p) in named:
        masks[n] = chosen[start:start + p.numel()].view_as(p)
        start += p.numel()
    return masks


def _sgd(model, lr, momentum, weight_decay):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                           momentum=momentum, weight_decay=weight_decay)


def _step(opt, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _retain_batches(retain: Dataset, *, batch_size: int, gen: torch.Generator):
    """One shuffled pass over D_r, in batches."""
    return DataLoader(retain, batch_size=batch_size, shuffle=True, generator=gen)


def _forget_batches(n: int, *, batch_size: int, gen: torch.Generator):
    """One shuffled pass over the forget indices 0..n-1, in batches."""
    return torch.randperm(n, generator=gen).split(batch_size)


def _cycle_forget(n: int, *, batch_size: int, gen: torch.Generator):
    """Endless forget-index batches (reshuffled each pass), to pair with D_r batches."""
    while True:
        yield from _forget_batches(n, batch_size=batch_size, gen=gen)


def _finetune_on_forget(model, forget_x, labels, *, epochs, batch_size, lr, momentum,
                        weight_decay, gen) -> int:
    """SGD on D_f with the given labels (random labels, Boundary Shrink); returns steps."""
    opt = _sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for _ in range(epochs):
        for fi in _forget_batches(len(forget_x), batch_size=batch_size, gen=gen):
            fi = fi.to(labels.device)
            _step(opt, F.cross_entropy(model(forget_x[fi]), labels[fi]))
            steps += 1
    return steps


def _fgsm_linf(model, x, y, *, bound):
    """One untargeted L-inf FGSM step of size `bound`, clipped to [0,1] and rounded to 8 bits
    (Chen et al.'s FGSM_perturb); the model is in eval mode."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (torch.round((x.detach() + bound * g.sign()).clamp(0, 1) * 255) / 255).detach()


def _pgd_untargeted_l2(model, x, y, *, eps, steps):
    """Untargeted L2 PGD (ascend CE of the true label), no random start, step 2.5 eps/steps
    (Madry et al.), per-sample normalised steps and projection from kit.attacks.NORMS."""
    nrm = NORMS["l2"]
    x_adv = x.detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = (x_adv.detach() + nrm.step(g, 2.5 * eps / steps)).clamp(0, 1)
        x_adv = (x + nrm.project(x_adv - x, eps)).detach()
    return x_adv


# --------------------------------------------------------------------------- methods with D_r
def retrain(model, forget_x, forget_y, *, retain, num_classes, seed,
            train_preset: str = "default",    # kit.train.PRESETS: the recipe of the original model
            epochs: int | None = None,        # None: the preset's (default 10); tests use 1
            lr: float | None = None,
            batch_size: int | None = None,
            augment: str | None = None):
    """Exact unlearning: train a fresh model of the same architecture on D_r only, load it.

    The gold standard every approximate method is compared with (e.g. Golatkar et al.,
    CVPR 2020; Kurmanji et al., NeurIPS 2023). Recipe: `kit.train.train` with preset
    `train_preset` (the pre-training recipe); None keeps the preset's value. D_f is never
    seen. Needs a kit model (`model.config` from `kit.models.create_model`).
    """
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise ValueError("retrain needs a model built by kit.models.create_model (it reads "
                         "model.config to build a fresh one of the same architecture)")
    recipe = preset(train_preset)
    recipe.update({k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size,
                                         augment=augment).items() if v is not None})
    seed_everything(seed)
    kwargs = {k: cfg[k] for k in ("num_classes", "in_channels", "image_size", "mean", "std")}
    fresh = create_model(cfg["arch"], **kwargs).to(model_device(model))
    history = train(fresh, retain, seed=seed, **recipe)
    model.load_state_dict(fresh.state_dict())
    n, bs = len(retain), recipe["batch_size"]
    per_epoch = n // bs if n > bs else 1                   # kit.train drops the last batch
    return {"steps": recipe["epochs"] * per_epoch,
            "train_loss": float(history.train_loss.iloc[-1])}


def finetune(model, forget_x, forget_y, *, retain, num_classes, seed,
             epochs: int = 1,            # SCRUB repo notebook: 10 epochs; 1 on mnist5k (~4 s)
             lr: float = 0.01,           # SCRUB repo, small_scale_unlearning.ipynb
             momentum: float = 0.9,      # kit pre-training recipe
             weight_decay: float = 5e-4,  # kit pre-training recipe
             batch_size: int = 64):      # kit pre-training recipe
    """Fine-tune on D_r with plain SGD and CE ("catastrophic forgetting" of D_f).

    Baseline of Golatkar et al., CVPR 2020 and Warnecke et al., NDSS 2023; values from the
    SCRUB repository's fine-tuning baseline (lr 0.01), fewer epochs for mnist5k.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    opt = _sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for _ in range(epochs):
        for x, y in _retain_batches(retain, batch_size=batch_size, gen=gen):
            _step(opt, F.cross_entropy(model(x.to(device)), y.to(device)))
            steps += 1
    return {"steps": steps}


def neggrad_plus(model, forget_x, forget_y, *, retain, num_classes, seed,
                 alpha: float = 0.95,        # Kurmanji et al. (SCRUB repo: ng_alpha = 0.95)
                 epochs: int = 1,            # SCRUB repo: ng_epochs = 10; 1 on mnist5k
                 lr: float = 0.01,           # SCRUB repo: ng_lr = 0.01
                 momentum: float = 0.9,      # kit pre-training recipe
                 weight_decay: float = 5e-4,  # kit pre-training recipe
                 batch_size: int = 64,       # D_r batch (kit pre-training recipe)
                 forget_batch: int = 32):    # D_f batch, cycled (as the paper's engine)
    """NegGrad+ (Kurmanji et al., NeurIPS 2023): alpha * CE(D_r batch) - (1-alpha) * CE(D_f batch).

    One pass over D_r per epoch with the forget batches cycled beside it (their train_negrad).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    opt = _sgd(model, lr, momentum, weight_decay)
    forget = _cycle_forget(len(forget_x), batch_size=forget_batch, gen=gen)
    model.train()
    steps = 0
    for _ in range(epochs):
        for x, y in _retain_batches(retain, batch_size=batch_size, gen=gen):
            fi = next(forget).to(device)
            loss = (alpha * F.cross_entropy(model(x.to(device)), y.to(device))
                    - (1 - alpha) * F.cross_entropy(model(forget_x[fi]), forget_y[fi]))
            _step(opt, loss)
            steps += 1
    return {"steps": steps}


def _distill_kl(student_logits, teacher_logits, T):
    """KL(teacher || student) at temperature T, times T^2, batch mean (SCRUB's DistillKL)."""
    return F.kl_div(F.log_softmax(student_logits / T, dim=1), F.softmax(teacher_logits / T, dim=1),
                    reduction="batchmean") * T * T


def scrub(model, forget_x, forget_y, *, retain, num_classes, seed,
          epochs: int = 1,            # SCRUB CIFAR config: sgda_epochs = 3; 1 on mnist5k (~6 s)
          msteps: int = 2,            # SCRUB: msteps = 2 (max-steps in the first msteps epochs)
          temperature: float = 4.0,   # SCRUB: kd_T = 4
          gamma: float = 0.99,        # SCRUB: weight of CE on D_r in the min-step
          alpha: float = 0.001,       # SCRUB: weight of KL on D_r in the min-step
          lr: float = 5e-4,           # SCRUB: sgda_learning_rate = 0.0005
          momentum: float = 0.9,      # SCRUB: sgda_momentum
          weight_decay: float = 5e-4,  # SCRUB: sgda_weight_decay
          batch_size: int = 128,      # SCRUB: sgda_batch_size (D_r)
          forget_batch: int = 32):    # SCRUB: del_batch_size (D_f)
    """SCRUB (Kurmanji et al., NeurIPS 2023): teacher = frozen copy of the original model.

    Each epoch: if epoch <= msteps, a max-pass over D_f (loss -KL(teacher || student)), then a
    min-pass over D_r (gamma * CE + alpha * KL). Values from the authors' CIFAR config (their
    small-scale notebook uses Adam, kd_T 2, gamma 1, alpha 0.5 instead); the lr decay at
    epochs 3/5/9 of their config never triggers within these epochs.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = _sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = max_steps = 0
    for epoch in range(1, epochs + 1):
        if epoch <= msteps:
            for fi in _forget_batches(len(forget_x), batch_size=forget_batch, gen=gen):
                fi = fi.to(device)
                with torch.no_grad():
                    t_logits = teacher(forget_x[fi])
                _step(opt, -_distill_kl(model(forget_x[fi]), t_logits, temperature))
                steps += 1
                max_steps += 1
        for x, y in _retain_batches(retain, batch_size=batch_size, gen=gen):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = model(x)
            loss = (gamma * F.cross_entropy(s_logits, y)
                    + alpha * _distill_kl(s_logits, t_logits, temperature))
            _step(opt, loss)
            steps += 1
    return {"steps": steps, "max_steps": max_steps}


def salun(model, forget_x, forget_y, *, retain, num_classes, seed,
          keep: float = 0.5,          # Fan et al.: top 50 % of weights by saliency
          alpha: float = 1.0,         # weight of CE on D_r (their code: equal, sequential passes)
          epochs: int = 1,            # SalUn README (CIFAR-10, 10 % forgetting): 10; 1 on mnist5k
          lr: float = 0.013,          # SalUn README: --unlearn_lr 0.013
          momentum: float = 0.9,      # SalUn arg_parser default
          weight_decay: float = 5e-4,  # SalUn arg_parser default
          batch_size: int = 64,       # D_r batch (kit pre-training recipe)
          forget_batch: int = 32):    # D_f batch, cycled
    """SalUn (Fan et al., ICLR 2024): random-label fine-tuning restricted to salient weights.

    Mask from `saliency_mask` at the original weights; loss per step CE(f(x_f), y') +
    alpha * CE(f(x_r), y_r) with y' fixed per instance, uniform over the other classes (their
    code redraws from all classes each batch); only masked weights move (`masked_step`).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    masks = saliency_mask(model, forget_x, forget_y, keep=keep)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params, mask_list = [p for _, p in named], [masks[n] for n, _ in named]
    new_y = draw_targets(forget_y.cpu(), num_classes, generator=gen).to(device)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    forget = _cycle_forget(len(forget_x), batch_size=forget_batch, gen=gen)
    model.train()
    steps = 0
    for _ in range(epochs):
        for x, y in _retain_batches(retain, batch_size=batch_size, gen=gen):
            fi = next(forget).to(device)
            loss = (F.cross_entropy(model(forget_x[fi]), new_y[fi])
                    + alpha * F.cross_entropy(model(x.to(device)), y.to(device)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            masked_step(opt, params, mask_list)
            steps += 1
    share = sum(int(m.sum()) for m in mask_list) / sum(m.numel() for m in mask_list)
    return {"steps": steps, "mask_share": share}


# --------------------------------------------------------------------------- D_r-free methods
def random_labels(model, forget_x, forget_y, *, num_classes, seed,
                  epochs: int = 10,           # SalUn README (CIFAR-10 RL/SalUn): 10 epochs
                  lr: float = 0.01,           # SalUn README: 0.013; 0.01 here (mnist5k: forget acc
                                              # 0.16, test 0.22: relabelling D_f alone is harsh)
                  momentum: float = 0.9,      # SalUn arg_parser default
                  weight_decay: float = 5e-4,  # SalUn arg_parser default
                  batch_size: int = 32):      # D_f batch (k=32: one step per epoch)
    """Fine-tune on D_f relabelled uniformly among the other classes (Golatkar et al., CVPR 2020).

    The "random labels" (RL) baseline, here without D_r. Labels are drawn once per instance
    (seeded), never the true one; SalUn's RL code redraws from all classes every batch.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    new_y = draw_targets(forget_y.cpu(), num_classes, generator=gen).to(device)
    steps = _finetune_on_forget(model, forget_x, new_y, epochs=epochs, batch_size=batch_size,
                                lr=lr, momentum=momentum, weight_decay=weight_decay, gen=gen)
    return {"steps": steps}


def boundary_shrink(model, forget_x, forget_y, *, num_classes, seed,
                    bound: float = 0.1,         # Chen et al.'s code: L-inf FGSM bound (hard-coded)
                    epochs: int = 10,           # Chen et al.: poison_epoch = 10
                    lr: float = 0.002,          # Chen et al.: 1e-5 over a whole class (thousands
                                                # of steps); k=32 gives 10 steps: kit calibration
                                                # on mnist5k (forget acc .22/.28, test .55/.52)
                    momentum: float = 0.9,      # Chen et al.
                    weight_decay: float = 0.0,  # Chen et al. (none)
                    batch_size: int = 32):
    """Boundary Shrink (Chen et al., CVPR 2023, "Boundary Unlearning"): relabel D_f to its
    nearest wrong class and fine-tune on it.

    Neighbour search against the original model before any update (eval mode): one
    untargeted L-inf FGSM step of size `bound`, rounded to 8 bits; the label is the model's
    prediction there, or, where it is still the true class, the runner-up class at that point
    (the authors' code would then keep the true label). The model is then fine-tuned on the
    clean D_f with those labels. The model sees D_f and points within L-inf `bound` of it.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    x_adv = _fgsm_linf(model, forget_x, forget_y, bound=bound)
    with torch.no_grad():
        logits = model(x_adv)
    nearest = logits.argmax(1)
    hit = nearest != forget_y
    runner_up = logits.scatter(1, forget_y[:, None], float("-inf")).argmax(1)
    nearest = torch.where(hit, nearest, runner_up)
    steps = _finetune_on_forget(model, forget_x, nearest, epochs=epochs, batch_size=batch_size,
                                lr=lr, momentum=momentum, weight_decay=weight_decay, gen=gen)
    return {"steps": steps, "search_hit_rate": float(hit.float().mean())}


def amun(model, forget_x, forget_y, *, num_classes, seed,
         eps: float = 0.5,            # AMUN Alg. 1 starts small and doubles; 0.5 L2 (kit, mnist5k)
         max_doublings: int = 4,      # cap: eps at most 0.5 * 2**4 = 8 (a search must end)
         pgd_steps: int = 50,         # AMUN: PGD-50 (L2, untargeted)
         epochs: int = 10,            # kit calibration on mnist5k (k=32: 10 steps): mean forget-set
         lr: float = 0.01,            # confidence 0.99 -> 0.97, the test set's level (AMUN's aim)
         momentum: float = 0.9,       # kit pre-training recipe
         weight_decay: float = 5e-4,  # kit pre-training recipe
         batch_size: int = 64):       # D_f and D_adv shuffled together
    """AMUN (Ebrahimpour-Boroojeny et al., 2025) without D_r: fine-tune on D_f (true labels)
    together with the nearest adversarial example of each forget instance, labelled with
    the class the original model assigns it.

    Search (before any update, eval mode): untargeted L2 PGD at radius eps for every
    instance; where the prediction is still the true class, double eps for those instances
    and search again, at most `max_doublings` times; instances never flipped get no
    adversarial example. D_f is not ascended. The model sees D_f and points within
    eps * 2**max_doublings (L2) of it.
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    adv_x = forget_x.clone()
    found = torch.zeros(len(forget_x), dtype=torch.bool, device=device)
    radius = torch.zeros(len(forget_x), device=device)
    r = eps
    for _ in range(max_doublings + 1):
        todo = (~found).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        cand = _pgd_untargeted_l2(model, forget_x[todo], forget_y[todo], eps=r, steps=pgd_steps)
        with torch.no_grad():
            ok = model(cand).argmax(1) != forget_y[todo]
        adv_x[todo[ok]] = cand[ok]
        found[todo[ok]] = True
        radius[todo[ok]] = r
        r *= 2
    with torch.no_grad():
        adv_y = model(adv_x[found]).argmax(1) if found.any() else forget_y[:0]
    train_x = torch.cat([forget_x, adv_x[found]])
    train_y = torch.cat([forget_y, adv_y])
    opt = _sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for _ in range(epochs):
        for bi in _forget_batches(len(train_x), batch_size=batch_size, gen=gen):
            bi = bi.to(device)
            _step(opt, F.cross_entropy(model(train_x[bi]), train_y[bi]))
            steps += 1
    return {"steps": steps, "n_adversarial": int(found.sum()),
            "mean_radius": float(radius[found].mean()) if found.any() else float("nan")}


# --------------------------------------------------------------------------- the registry
@dataclass
class Baseline:
    """One registry entry: the function, whether it may see D_r, the paper, its defaults.

    defaults: the hyper-parameters and their default values, read from `fn`'s signature
    (the single place they are written, each with a comment naming its source).
    radius: for D_r-free methods, (hyper-parameters, forget_x shape) -> the largest L2
    distance in [0,1] pixel units from D_f of any input the method feeds the model.
    """
    fn: Callable
    needs_retain: bool
    reference: str
    radius: Callable[[dict, tuple], float] | None = None
    defaults: dict = field(init=False)

    def __post_init__(self):
        sig = inspect.signature(self.fn)
        self.defaults = {n: p.default for n, p in sig.parameters.items()
                         if p.kind is p.KEYWORD_ONLY and n not in _CALL_ARGS}
        takes_retain = "retain" in sig.parameters
        if takes_retain != self.needs_retain:
            raise TypeError(f"{self.fn.__name__}: needs_retain={self.needs_retain} but its "
                            f"signature {'has' if takes_retain else 'lacks'} `retain`")
        if not self.needs_retain and self.radius is None:
            raise TypeError(f"{self.fn.__name__} is D_r-free and must state its input radius")


def _pixels(shape) -> int:
    return math.prod(shape[1:])


BASELINES: dict[str, Baseline] = {
    "retrain": Baseline(retrain, True, "retrain from scratch on D_r (exact unlearning)"),
    "finetune": Baseline(finetune, True, "Golatkar et al., CVPR 2020; Warnecke et al., NDSS 2023"),
    "neggrad_plus": Baseline(neggrad_plus, True, "Kurmanji et al., NeurIPS 2023 (NegGrad+)"),
    "scrub": Baseline(scrub, True, "Kurmanji et al., NeurIPS 2023 (SCRUB)"),
    "salun": Baseline(salun, True, "Fan et al., ICLR 2024 (SalUn)"),
    "random_labels": Baseline(random_labels, False, "Golatkar et al., CVPR 2020 (random labels)",
                              radius=lambda hp, shape: 0.0),
    "boundary_shrink": Baseline(
        boundary_shrink, False, "Chen et al., CVPR 2023 (Boundary Unlearning: Boundary Shrink)",
        # L-inf step `bound` plus half an 8-bit level of rounding, on every pixel
        radius=lambda hp, shape: (hp["bound"] + 0.5 / 255) * math.sqrt(_pixels(shape))),
    "amun": Baseline(amun, False, "Ebrahimpour-Boroojeny et al., 2025 (AMUN), without D_r",
                     radius=lambda hp, shape: hp["eps"] * 2 ** hp["max_doublings"]),
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(BASELINES)}")
    return BASELINES[name]


def _resolve(base: Baseline, name: str, hp: dict) -> dict:
    unknown = set(hp) - set(base.defaults)
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {sorted(unknown)} for {name!r}; valid: "
                        f"{', '.join(base.defaults)}")
    return {**base.defaults, **hp}


def perturbation_radius(name: str, forget_x: torch.Tensor, **hp) -> float:
    """Largest L2 distance (in [0,1] pixel units) from D_f of any input that D_r-free
    baseline `name` feeds the model, under hyper-parameters `hp` (defaults otherwise)."""
    base = get_baseline(name)
    if base.needs_retain:
        raise ValueError(f"{name!r} uses the remaining data; it has no perturbation radius")
    return float(base.radius(_resolve(base, name, hp), tuple(forget_x.shape)))


def _as_dataset(retain) -> Dataset:
    if isinstance(retain, (tuple, list)):
        if len(retain) != 2:
            raise ValueError("retain as a tuple must be (x, y)")
        x, y = retain
        retain = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long())
    if len(retain) == 0:
        raise ValueError("retain is empty; pass the remaining data D_r")
    return retain


def run_baseline(name: str, model: torch.nn.Module, forget_x: torch.Tensor, forget_y, *,
                 retain=None, num_classes: int | None = None, seed: int = 0, **hp) -> dict:
    """Unlearn (forget_x in [0,1], forget_y) from `model` in place with baseline `name`.

    retain: the remaining data D_r (a Dataset yielding (x, y) in [0,1], or an (x, y)
    tuple); required by entries flagged needs_retain, refused by the D_r-free ones.
    num_classes: from model.config (or one forward pass) when None. hp: hyper-parameters
    of the entry (see BASELINES[name].defaults). Returns {"name", "needs_retain", "steps",
    "seconds", "config", ...extras}; the model is left in eval mode.

    >>> m = create_model("cnn"); x = torch.rand(4, 1, 28, 28); y = torch.tensor([0, 1, 2, 3])
    >>> run_baseline("random_labels", m, x, y, epochs=2)["steps"]
    2
    """
    base = get_baseline(name)
    config = _resolve(base, name, hp)
    if base.needs_retain and retain is None:
        raise ValueError(f"{name!r} needs the remaining data: pass retain=(x, y) or a Dataset "
                         f"of D_r")
    if not base.needs_retain and retain is not None:
        raise ValueError(f"{name!r} is D_r-free and does not accept retain; call it without "
                         f"the remaining data")
    device = model_device(model)
    forget_x = forget_x.detach().to(device, torch.float32)
    forget_y = torch.as_tensor(forget_y).to(device, torch.long)
    num_classes = num_classes or num_classes_of(model, forget_x)
    check_forget_set(forget_x, forget_y, num_classes)
    kwargs = dict(num_classes=num_classes, seed=seed, **config)
    if base.needs_retain:
        kwargs["retain"] = _as_dataset(retain)
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = base.fn(model, forget_x, forget_y, **kwargs)
    seconds = time.perf_counter() - start
    model.eval()
    return {"name": name, "needs_retain": base.needs_retain, "steps": out.pop("steps"),
            "seconds": seconds, "config": config, **out}
