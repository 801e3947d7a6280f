"""Random labels (RL): fine-tune on D_f relabelled with wrong classes, without D_r."""
from __future__ import annotations

import torch

from ..core.request import draw_targets
from ..core.utils import model_device
from ._loop import fit, stop_rule


def random_labels(model, forget_x, forget_y, *, num_classes, seed,
                  epochs: int = 10,           # SalUn README (CIFAR-10 RL/SalUn): 10 epochs
                  lr: float = 0.01,           # SalUn README: 0.013; 0.01 here (mnist5k: forget acc
                                              # 0.16, test 0.22: relabelling D_f alone is harsh)
                  momentum: float = 0.9,      # SalUn arg_parser default
                  weight_decay: float = 5e-4,  # SalUn arg_parser default
                  batch_size: int = 32,       # D_f batch (k=32: one step per epoch)
                  stop_at_objective: bool = False,  # kit: the paper's stop rule (off: epochs)
                  max_steps: int | None = None):    # its step budget; None: 600 (the paper's)
    """Fine-tune on D_f relabelled uniformly among the other classes (Golatkar et al., CVPR 2020).

    The "random labels" (RL) baseline, here without D_r. Labels are drawn once per instance
    (seeded), never the true one; SalUn's RL code redraws from all classes every batch.
    stop_at_objective, max_steps: the paper's stop rule instead of `epochs` (`_loop.stop_rule`).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    stop = stop_rule(forget_x, forget_y, stop_at_objective=stop_at_objective,
                     max_steps=max_steps)
    new_y = draw_targets(forget_y.cpu(), num_classes, generator=gen).to(device)
    steps = fit(model, forget_x, new_y, epochs=epochs, batch_size=batch_size, lr=lr,
                momentum=momentum, weight_decay=weight_decay, gen=gen, stop=stop)
    return {"steps": steps}
