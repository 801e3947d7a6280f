"""NegGrad+: descend CE on D_r while ascending CE on D_f."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.utils import model_device
from ._loop import paired_batches, sgd, step, stop_rule


def neggrad_plus(model, forget_x, forget_y, *, retain, num_classes, seed,
                 alpha: float = 0.95,        # Kurmanji et al. (SCRUB repo: ng_alpha = 0.95)
                 epochs: int = 1,            # SCRUB repo: ng_epochs = 10; 1 on mnist5k
                 lr: float = 0.01,           # SCRUB repo: ng_lr = 0.01
                 momentum: float = 0.9,      # kit pre-training recipe
                 weight_decay: float = 5e-4,  # kit pre-training recipe
                 batch_size: int = 64,       # D_r batch (kit pre-training recipe)
                 forget_batch: int = 32,     # D_f batch, cycled (as the paper's engine)
                 stop_at_objective: bool = False,  # kit: the paper's stop rule (off: epochs)
                 max_steps: int | None = None):    # its step budget; None: 600 (the paper's)
    """NegGrad+ (Kurmanji et al., NeurIPS 2023): alpha * CE(D_r batch) - (1-alpha) * CE(D_f batch).

    One pass over D_r per epoch with the forget batches cycled beside it (their train_negrad).
    stop_at_objective, max_steps: stop as the paper's method does (D_f accuracy 0, checked
    after every step, at most max_steps) instead of after `epochs` (`_loop.stop_rule`).
    """
    stop = stop_rule(forget_x, forget_y, stop_at_objective=stop_at_objective,
                     max_steps=max_steps)
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    opt = sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for x, y, fi in paired_batches(retain, len(forget_x), epochs=epochs, batch_size=batch_size,
                                   forget_batch=forget_batch, gen=gen, device=device,
                                   stop=stop, model=model):
        step(opt, alpha * F.cross_entropy(model(x), y)
             - (1 - alpha) * F.cross_entropy(model(forget_x[fi]), forget_y[fi]))
        steps += 1
    return {"steps": steps}
