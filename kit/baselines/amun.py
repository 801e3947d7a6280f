"""AMUN without D_r: fine-tune on D_f together with its nearest adversarial examples."""
from __future__ import annotations

import torch

from ..method.attacks import run_pgd
from ._loop import fit, stop_rule


def _nearest_adversarial(model, forget_x, forget_y, *, eps, max_doublings, pgd_steps):
    """AMUN's search, model in eval mode: untargeted L2 PGD (no random start, step
    2.5 eps / pgd_steps, Madry et al.) at radius eps, doubled for the instances still
    classified as their label, at most `max_doublings` times. Returns (adversarial images
    (k, ...), found (k,) bool, radius (k,) float: the eps that flipped each instance)."""
    device = forget_x.device
    adv_x = forget_x.clone()
    found = torch.zeros(len(forget_x), dtype=torch.bool, device=device)
    radius = torch.zeros(len(forget_x), device=device)
    r = eps
    for _ in range(max_doublings + 1):
        todo = (~found).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        cand = run_pgd(model, forget_x[todo], forget_y[todo], norm="l2", eps=r,
                       step_size=2.5 * r / pgd_steps, steps=pgd_steps, targeted=False)
        with torch.no_grad():
            ok = model(cand).argmax(1) != forget_y[todo]
        adv_x[todo[ok]] = cand[ok]
        found[todo[ok]] = True
        radius[todo[ok]] = r
        r *= 2
    return adv_x, found, radius


def amun(model, forget_x, forget_y, *, num_classes, seed,
         eps: float = 0.5,            # AMUN Alg. 1 starts small and doubles; 0.5 L2 (kit, mnist5k)
         max_doublings: int = 4,      # cap: eps at most 0.5 * 2**4 = 8 (a search must end)
         pgd_steps: int = 50,         # AMUN: PGD-50 (L2, untargeted)
         epochs: int = 10,            # kit calibration on mnist5k (k=32: 10 steps): mean forget-set
         lr: float = 0.01,            # confidence 0.99 -> 0.97, the test set's level (AMUN's aim)
         momentum: float = 0.9,       # kit pre-training recipe
         weight_decay: float = 5e-4,  # kit pre-training recipe
         batch_size: int = 64,        # D_f and D_adv shuffled together
         stop_at_objective: bool = False,  # kit: the paper's stop rule (off: epochs)
         max_steps: int | None = None):    # its step budget; None: 600 (the paper's)
    """AMUN (Ebrahimpour-Boroojeny et al., 2025) without D_r: fine-tune on D_f (true labels)
    together with the nearest adversarial example of each forget instance, labelled with
    the class the original model assigns it.

    Search (before any update, eval mode): untargeted L2 PGD at radius eps for every
    instance; where the prediction is still the true class, double eps for those instances
    and search again, at most `max_doublings` times; instances never flipped get no
    adversarial example. D_f is not ascended. The model sees D_f and points within
    eps * 2**max_doublings (L2) of it.
    stop_at_objective, max_steps: the paper's stop rule instead of `epochs` (`_loop.stop_rule`).
    """
    gen = torch.Generator().manual_seed(seed)
    stop = stop_rule(forget_x, forget_y, stop_at_objective=stop_at_objective,
                     max_steps=max_steps)
    model.eval()
    adv_x, found, radius = _nearest_adversarial(model, forget_x, forget_y, eps=eps,
                                                max_doublings=max_doublings,
                                                pgd_steps=pgd_steps)
    with torch.no_grad():
        adv_y = model(adv_x[found]).argmax(1) if found.any() else forget_y[:0]
    train_x = torch.cat([forget_x, adv_x[found]])
    train_y = torch.cat([forget_y, adv_y])
    steps = fit(model, train_x, train_y, epochs=epochs, batch_size=batch_size, lr=lr,
                momentum=momentum, weight_decay=weight_decay, gen=gen, stop=stop)
    return {"steps": steps, "n_adversarial": int(found.sum()),
            "mean_radius": float(radius[found].mean()) if found.any() else float("nan")}
