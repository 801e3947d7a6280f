"""Clocks the two benchmarks share; imports no kit module (bench_throughput runs it against
an older checkout of the kit on PYTHONPATH)."""
from __future__ import annotations

import contextlib
import time

import torch


def make_clock(device: torch.device):
    """perf_counter that first waits for the device's queued kernels (no-op off CUDA)."""
    if device.type == "cuda":
        def clock():
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return clock
    return time.perf_counter


class _SyncedTime:
    """Stands in for the `time` module inside the engine: perf_counter synchronises first."""

    def __init__(self, clock):
        self.perf_counter = clock

    def __getattr__(self, name):
        return getattr(time, name)


@contextlib.contextmanager
def synced_engine_clock(engine, device: torch.device):
    """Make the phase timestamps of the engine module `engine` CUDA-synchronised for the
    duration of the block (its `time` is swapped, then put back)."""
    if device.type != "cuda":
        yield
        return
    original = engine.time
    engine.time = _SyncedTime(make_clock(device))
    try:
        yield
    finally:
        engine.time = original
