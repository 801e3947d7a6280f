"""SalUn: random-label fine-tuning restricted to the weights most salient for D_f."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.request import draw_targets
from ..core.utils import eval_mode, model_device
from ._loop import masked_step, paired_batches, stop_rule


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
    with eval_mode(model):
        for lo in range(0, len(forget_x), batch_size):
            loss = F.cross_entropy(model(forget_x[lo:lo + batch_size]),
                                   forget_y[lo:lo + batch_size], reduction="sum")
            got = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            for acc, g in zip(grads, got):
                if g is not None:
                    acc += g
    flat = torch.cat([g.abs().flatten() for g in grads])       # (total weights,)
    n_keep = max(1, int(round(keep * flat.numel())))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[flat.topk(n_keep).indices] = True                   # exactly n_keep weights
    masks, start = {}, 0
    for (n, p) in named:
        masks[n] = chosen[start:start + p.numel()].view_as(p)
        start += p.numel()
    return masks


def salun(model, forget_x, forget_y, *, retain, num_classes, seed,
          keep: float = 0.5,          # Fan et al.: top 50 % of weights by saliency
          alpha: float = 1.0,         # weight of CE on D_r (their code: equal, sequential passes)
          epochs: int = 1,            # SalUn README (CIFAR-10, 10 % forgetting): 10; 1 on mnist5k
          lr: float = 0.013,          # SalUn README: --unlearn_lr 0.013
          momentum: float = 0.9,      # SalUn arg_parser default
          weight_decay: float = 5e-4,  # SalUn arg_parser default
          batch_size: int = 64,       # D_r batch (kit pre-training recipe)
          forget_batch: int = 32,     # D_f batch, cycled
          stop_at_objective: bool = False,  # kit: the paper's stop rule (off: published epochs)
          max_steps: int | None = None):    # its step budget; None: 600 (the paper's)
    """SalUn (Fan et al., ICLR 2024): random-label fine-tuning restricted to salient weights.

    Mask from `saliency_mask` at the original weights; loss per step CE(f(x_f), y') +
    alpha * CE(f(x_r), y_r) with y' fixed per instance, uniform over the other classes (their
    code redraws from all classes each batch); only masked weights move (`masked_step`).
    stop_at_objective, max_steps: stop as the paper's method does (D_f accuracy 0, checked
    after every step, at most max_steps) instead of after `epochs` (`_loop.stop_rule`).
    """
    stop = stop_rule(forget_x, forget_y, stop_at_objective=stop_at_objective,
                     max_steps=max_steps)
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    masks = saliency_mask(model, forget_x, forget_y, keep=keep)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params, mask_list = [p for _, p in named], [masks[n] for n, _ in named]
    new_y = draw_targets(forget_y.cpu(), num_classes, generator=gen).to(device)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    steps = 0
    for x, y, fi in paired_batches(retain, len(forget_x), epochs=epochs, batch_size=batch_size,
                                   forget_batch=forget_batch, gen=gen, device=device,
                                   stop=stop, model=model):
        loss = (F.cross_entropy(model(forget_x[fi]), new_y[fi])
                + alpha * F.cross_entropy(model(x), y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        masked_step(opt, params, mask_list)
        steps += 1
    share = sum(int(m.sum()) for m in mask_list) / sum(m.numel() for m in mask_list)
    return {"steps": steps, "mask_share": share}
