"""The speed options of UnlearnConfig (amp, channels_last, deterministic, check_every)
against the default, on one calibration request: reached, steps, test accuracy, seconds.
Then the evaluation pass of every table (`kit.core.predict.predict_logits`: channels_last
and batches of 128 on a CPU) against the plain pass it replaced (contiguous, batches of 512).

    .venv/bin/python benchmarks/bench_options.py [--k 32] [--seed 100] [--model-seed 1] [--recipe fast]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kit.core.predict import accuracy, predict_logits  # noqa: E402
from kit.core.request import ForgetRequest  # noqa: E402
from kit.experiments.cache import pretrained  # noqa: E402
from kit.method.recipes import RECIPES, resolve  # noqa: E402
from kit.method import engine as _engine  # noqa: E402
from kit.method.engine import unlearn  # noqa: E402

from _clock import make_clock, synced_engine_clock  # noqa: E402  (benchmarks/_clock.py)

OPTIONS = ({}, {"amp": "bf16"}, {"channels_last": False}, {"deterministic": True},
           {"check_every": 8}, {"check_every": 1})   # auto: 1 on a CPU, 8 on an accelerator


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--seed", type=int, default=100, help="request seed (calibration: 100)")
    ap.add_argument("--model-seed", type=int, default=1, help="pre-training seed (calibration: 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                    help="the recipe the options are applied to (the tables in "
                         "benchmarks/README.md: fast, the default of the time)")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    base, data, _ = pretrained(dataset="mnist5k", arch="cnn", seed=args.model_seed,
                               device=args.device)
    req = ForgetRequest.draw(data, args.k, seed=args.seed)
    # untimed warm-up: first-call costs (allocator, kernel selection) stay out of the table
    unlearn(copy.deepcopy(base), req.x, req.y, seed=args.seed,
            config=resolve(args.recipe, max_steps=2, per_instance=1, pgd_steps=2))
    print("| option | reached | steps | test % | attack s | total s |\n|---|---|--:|--:|--:|--:|")
    for opt in OPTIONS:
        m = copy.deepcopy(base)
        with synced_engine_clock(_engine, torch.device(args.device)):  # CUDA: synchronised phases
            r = unlearn(m, req.x, req.y, config=resolve(args.recipe, **opt), seed=args.seed)
        print(f"| {opt or 'default (float32, channels_last)'} | {'yes' if r.reached else 'no'} | {r.steps} | "
              f"{100 * accuracy(m, data.test):.1f} | {r.seconds['attack']:.1f} | "
              f"{r.seconds['total']:.1f} |")
    evaluation(base, data)


def _plain_logits(model, x, batch=512):          # the evaluation pass before channels_last
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def evaluation(model, data, repeats: int = 3) -> None:
    """Seconds of one pass over D_train + test (median of `repeats`), both ways, and the
    largest logit difference and prediction agreement between them."""
    x = torch.cat([torch.stack([data.train[i][0] for i in range(len(data.train))]),
                   torch.stack([data.test[i][0] for i in range(len(data.test))])])
    model.eval()
    clock = make_clock(next(model.parameters()).device)  # CUDA: waits for queued kernels
    x = x.to(next(model.parameters()).device)
    times = {"plain": [], "kit": []}
    for _ in range(repeats):
        t = clock(); plain = _plain_logits(model, x); times["plain"].append(clock() - t)
        t = clock(); kit, _ = predict_logits(model, (x, torch.zeros(len(x))))
        times["kit"].append(clock() - t)
    plain, kit = plain.float().cpu(), kit.float().cpu()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n| evaluation of {len(x)} images | seconds |\n|---|--:|\n"
          f"| plain (contiguous, batch 512) | {med['plain']:.2f} |\n"
          f"| kit (channels_last, batch 128 on a CPU) | {med['kit']:.2f} |\n"
          f"\nspeed-up {med['plain'] / med['kit']:.2f}x; largest logit difference "
          f"{(plain - kit).abs().max().item():.1e}; predictions equal on "
          f"{100 * (plain.argmax(1) == kit.argmax(1)).float().mean().item():.2f} %")


if __name__ == "__main__":
    main()
