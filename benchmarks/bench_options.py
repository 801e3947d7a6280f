"""The speed options of UnlearnConfig (amp, channels_last, deterministic, check_every)
against the default, on one calibration request: reached, steps, test accuracy, seconds.

    .venv/bin/python benchmarks/bench_options.py [--k 32] [--seed 100] [--model-seed 1]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kit.core.predict import accuracy  # noqa: E402
from kit.core.request import ForgetRequest  # noqa: E402
from kit.experiments.cache import pretrained  # noqa: E402
from kit.method.config import resolve  # noqa: E402
from kit.method.engine import unlearn  # noqa: E402

OPTIONS = ({}, {"amp": "bf16"}, {"channels_last": False}, {"deterministic": True},
           {"check_every": 8})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--seed", type=int, default=100, help="request seed (calibration: 100)")
    ap.add_argument("--model-seed", type=int, default=1, help="pre-training seed (calibration: 1)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    base, data, _ = pretrained(dataset="mnist5k", arch="cnn", seed=args.model_seed,
                               device=args.device)
    req = ForgetRequest.draw(data, args.k, seed=args.seed)
    print("| option | reached | steps | test % | attack s | total s |\n|---|---|--:|--:|--:|--:|")
    for opt in OPTIONS:
        m = copy.deepcopy(base)
        r = unlearn(m, req.x, req.y, config=resolve("default", **opt), seed=args.seed)
        print(f"| {opt or 'default (float32, channels_last)'} | {'yes' if r.reached else 'no'} | {r.steps} | "
              f"{100 * accuracy(m, data.test):.1f} | {r.seconds['attack']:.1f} | "
              f"{r.seconds['total']:.1f} |")


if __name__ == "__main__":
    main()
