"""NegGrad+: descend CE on D_r while ascending CE on D_f."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.utils import model_device
from ._loop import paired_batches, sgd, step


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
    opt = sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for x, y, fi in paired_batches(retain, len(forget_x), epochs=epochs, batch_size=batch_size,
                                   forget_batch=forget_batch, gen=gen, device=device):
        step(opt, alpha * F.cross_entropy(model(x), y)
             - (1 - alpha) * F.cross_entropy(model(forget_x[fi]), forget_y[fi]))
        steps += 1
    return {"steps": steps}
