"""Boundary Shrink: relabel D_f to its nearest wrong class (found by FGSM) and fine-tune."""
from __future__ import annotations

import torch

from ..method.attacks import fgsm
from ._loop import fit, stop_rule


def boundary_shrink(model, forget_x, forget_y, *, num_classes, seed,
                    bound: float = 0.1,         # Chen et al.'s code: L-inf FGSM bound (hard-coded)
                    epochs: int = 10,           # Chen et al.: poison_epoch = 10
                    lr: float = 0.002,          # Chen et al.: 1e-5 over a whole class (thousands
                                                # of steps); k=32 gives 10 steps: kit calibration
                                                # on mnist5k (forget acc .22/.28, test .55/.52)
                    momentum: float = 0.9,      # Chen et al.
                    weight_decay: float = 0.0,  # Chen et al. (none)
                    batch_size: int = 32,
                    stop_at_objective: bool = False,  # kit: the paper's stop rule (off: epochs)
                    max_steps: int | None = None):    # its step budget; None: 600 (the paper's)
    """Boundary Shrink (Chen et al., CVPR 2023, "Boundary Unlearning"): relabel D_f to its
    nearest wrong class and fine-tune on it.

    Neighbour search against the original model before any update (eval mode): one
    untargeted L-inf FGSM step of size `bound` (`kit.method.attacks.fgsm`), rounded to 8
    bits (Chen et al.'s FGSM_perturb); the label is the model's prediction there, or, where
    it is still the true class, the runner-up class at that point (the authors' code would
    then keep the true label). The model is then fine-tuned on the clean D_f with those
    labels. The model sees D_f and points within L-inf `bound` of it.
    stop_at_objective, max_steps: the paper's stop rule instead of `epochs` (`_loop.stop_rule`).
    """
    gen = torch.Generator().manual_seed(seed)
    stop = stop_rule(forget_x, forget_y, stop_at_objective=stop_at_objective,
                     max_steps=max_steps)
    model.eval()
    x_adv = torch.round(fgsm(model, forget_x, forget_y, eps=bound) * 255) / 255  # 8 bits
    with torch.no_grad():
        logits = model(x_adv)
    nearest = logits.argmax(1)
    hit = nearest != forget_y
    runner_up = logits.scatter(1, forget_y[:, None], float("-inf")).argmax(1)
    nearest = torch.where(hit, nearest, runner_up)
    steps = fit(model, forget_x, nearest, epochs=epochs, batch_size=batch_size, lr=lr,
                momentum=momentum, weight_decay=weight_decay, gen=gen, stop=stop)
    return {"steps": steps, "search_hit_rate": float(hit.float().mean())}
