"""Fine-tuning on D_r ("catastrophic forgetting" of D_f)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.utils import model_device
from ._loop import retain_batches, sgd, step


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
    opt = sgd(model, lr, momentum, weight_decay)
    model.train()
    steps = 0
    for _ in range(epochs):
        for x, y in retain_batches(retain, batch_size=batch_size, gen=gen):
            step(opt, F.cross_entropy(model(x.to(device)), y.to(device)))
            steps += 1
    return {"steps": steps}
