"""SCRUB: a student moves away from its frozen teacher on D_f and stays close on D_r."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..core.utils import model_device
from ._loop import index_batches, retain_batches, sgd, step


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
    opt = sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = max_steps = 0
    for epoch in range(1, epochs + 1):
        if epoch <= msteps:
            for fi in index_batches(len(forget_x), batch_size=forget_batch, gen=gen):
                fi = fi.to(device)
                with torch.no_grad():
                    t_logits = teacher(forget_x[fi])
                step(opt, -_distill_kl(model(forget_x[fi]), t_logits, temperature))
                steps += 1
                max_steps += 1
        for x, y in retain_batches(retain, batch_size=batch_size, gen=gen):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = model(x)
            loss = (gamma * F.cross_entropy(s_logits, y)
                    + alpha * _distill_kl(s_logits, t_logits, temperature))
            step(opt, loss)
            steps += 1
    return {"steps": steps, "max_steps": max_steps}
