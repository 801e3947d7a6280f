"""Speed options of a run that do not change what the method is: mixed precision, memory
layout, deterministic kernels (fields `amp`, `channels_last`, `deterministic` of
`UnlearnConfig`). Their effect on results is measured in benchmarks/README.md, not assumed.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..core.utils import channels_last


@contextlib.contextmanager
def speed_options(cfg, model: torch.nn.Module, device: torch.device):
    """Within the block: the model in channels_last memory format when cfg.channels_last
    (put back afterwards), and torch's deterministic algorithms when cfg.deterministic (an
    op without a deterministic kernel then raises; the previous setting is restored)."""
    with contextlib.ExitStack() as stack:
        if cfg.deterministic:
            if device.type == "cuda":       # cuBLAS needs a fixed workspace to be deterministic
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            before = torch.are_deterministic_algorithms_enabled()
            torch.use_deterministic_algorithms(True)
            stack.callback(torch.use_deterministic_algorithms, before)
        stack.enter_context(channels_last(model, cfg.channels_last))
        yield


def attack_precision(cfg, device: torch.device):
    """bf16 autocast for the attack when cfg.amp == "bf16", else a no-op. Only the attack:
    with the updates under bf16 too, the default recipe no longer reached the objective on
    the calibration request (k = 32: 600 steps, 10 % test, against 183 steps and 86.9 % in
    float32); bf16 logits are too coarse for a margin of 0.1."""
    if cfg.amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
