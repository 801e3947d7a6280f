"""Speed of the kit's unlearning engine against an official-style loop, phase by phase.

For every forget-set size k this times method adv+imp of `kit.method.engine.unlearn` over a fixed
number of update steps (the objective is made unreachable: tiny learning rate, `max_steps`
= --steps) and reads the engine's own `result.seconds` (attack, importance, update,
evaluate, total). It then times an "official-style" loop written in this script after the
structure of the authors' public code (csm9493/L2UL, `adv_attack`, `test`,
`estimate_parameter_importance` and the ADV+IMP loop of `main_unlearn_*`):

- attack: the forget set goes through a DataLoader in batches of 32 source images; for each
  batch, R separate targeted-PGD runs of 32 examples each (`kit.method.attacks.pgd`, one fresh
  target draw per run), every result copied to the host; the set is moved back at the end;
- importance: MAS as in the official code, on a deep copy of the model, via a DataLoader
  (batch 32) and `loss.backward()` on `p.grad`;
- update: the same work as the kit's step (same recipe, batch sizes, losses, penalty and
  optimiser), so its ratio should stay near 1;
- evaluate: before the loop and after every step, the whole forget set re-evaluated
  through a DataLoader with batch size 32 (host -> device copy, loss, `.item()` per batch).

It prints, per k, the throughput of both attacks and a table (k, phase, kit s, official s,
ratio = official / kit). On CUDA every timestamp is taken after `torch.cuda.synchronize()`;
for the kit this is done by swapping the clock that `kit.method.engine` reads (the engine itself
does not synchronise, so its phase split would otherwise be skewed by asynchronous kernels).

CPU default (a few minutes at most on 2 cores):
    python benchmarks/bench_unlearn.py
Paper-sized GPU check (random CIFAR-shaped data, untrained ResNet-18):
    python benchmarks/bench_unlearn.py --random-data --arch resnet18_cifar --ks 128 \
        --per-instance 20 --pgd-steps 100 --steps 100 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kit.core.request import draw_targets  # noqa: E402
from kit.method.attacks import pgd  # noqa: E402
from kit.core.request import ForgetRequest  # noqa: E402
from kit.experiments.cache import pretrained  # noqa: E402
from kit.method.losses import OBJECTIVE_FORMS, importance_penalty  # noqa: E402
from kit.core.models import create_model  # noqa: E402
from kit.method.engine import num_classes_of, unlearn  # noqa: E402
from kit.method.recipes import RECIPES, resolve  # noqa: E402
from kit.core.utils import model_device, resolve_device  # noqa: E402

# the engine module itself (its `time` is swapped for a synchronising clock)
from _clock import make_clock, synced_engine_clock  # noqa: E402  (benchmarks/_clock.py)

_engine = importlib.import_module("kit.method.engine")

PHASES = ("attack", "importance", "update", "evaluate")
OFFICIAL_BATCH = 32      # the official code's D_f DataLoader batch size (attack, MAS, test)
RANDOM_CLASSES = 10
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ------------------------------------------------------------------ the kit
def run_kit(model, fx, fy, cfg, *, seed):
    """The engine on a fixed step budget; returns (seconds per phase, steps, wall seconds)."""
    device = model_device(model)
    clock = make_clock(device)
    with synced_engine_clock(_engine, device):
        t = clock()
        res = unlearn(model, fx, fy, objective="misclassify", method="adv+imp", config=cfg,
                      seed=seed)
        wall = clock() - t
    return {p: float(res.seconds[p]) for p in PHASES}, int(res.steps), wall


# ------------------------------------------------------------------ official-style loop
def _set_bn_mode(model, bn_mode):
    model.train()
    if bn_mode == "frozen":
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _official_test(model, device, loader):
    """utils.test of the official code: eval, batches from the loader, .item() per batch."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            loss += F.cross_entropy(output, target)
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return loss / len(loader.dataset), 100.0 * correct / len(loader.dataset)


def _official_importance(model, device, loader):
    """estimate_parameter_importance of the official code (MAS, train mode, on a copy)."""
    model = copy.deepcopy(model)
    imp = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    n_samples = 0
    for images, targets in loader:
        outputs = model(images.to(device))
        loss = torch.norm(outputs, p=2, dim=1).mean()
        model.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                imp[n] += p.grad.abs() * len(targets)
        n_samples += len(targets)
    weights = {}
    for n, v in imp.items():  # min-max per tensor, then 1 - (guarded: a constant gives 1)
        v = v / n_samples
        lo, hi = v.min(), v.max()
        weights[n] = 1.0 - ((v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v))
    return weights


def run_official(model, fx, fy, cfg, *, seed):
    """Official-style ADV+IMP loop; returns (seconds per phase, steps, wall seconds)."""
    device = model_device(model)
    clock = make_clock(device)
    sec = dict.fromkeys(PHASES, 0.0)
    t_wall = clock()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    num_classes = num_classes_of(model, fx)
    fx_cpu, fy_cpu = fx.detach().cpu().float(), torch.as_tensor(fy).cpu().long()
    f_loader = DataLoader(TensorDataset(fx_cpu, fy_cpu), batch_size=OFFICIAL_BATCH, shuffle=False)

    # attack: per batch of 32 forget images, R PGD runs of 32 examples each
    t = clock()
    model.eval()
    images, targets = [], []
    for data, target in f_loader:
        data = data.to(device)
        for _ in range(cfg.per_instance):
            tgt = draw_targets(target, num_classes, generator=gen)
            adv = pgd(model, data, tgt.to(device), norm=cfg.norm, eps=cfg.eps,
                      step_size=cfg.step_size, steps=cfg.pgd_steps, generator=gen)
            images.append(adv.detach().cpu())
            targets.append(tgt)
    adv_x, adv_y = torch.cat(images).to(device), torch.cat(targets).to(device)
    sec["attack"] = clock() - t

    # importance at the pre-trained weights, and the anchor
    t = clock()
    weights = _official_importance(model, device, f_loader)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    sec["importance"] = clock() - t

    # the update loop: the kit's step, the official evaluation after every step
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_obj = OBJECTIVE_FORMS[("misclassify", cfg.loss)]
    fx_dev, fy_dev = fx_cpu.to(device), fy_cpu.to(device)
    k, n_adv = len(fx_dev), len(adv_x)
    fb, ab = min(cfg.forget_batch, k), min(cfg.adv_batch, n_adv)
    f_pos, a_pos, a_order = k, n_adv, None  # start a fresh pass on the first step

    t = clock()
    _, acc = _official_test(model, device, f_loader)
    sec["evaluate"] += clock() - t
    step = 0
    while acc != 0 and step < cfg.max_steps:
        t = clock()
        _set_bn_mode(model, cfg.bn_mode)
        if f_pos + fb > k:
            f_pos = 0
        fi = torch.arange(f_pos, f_pos + fb, device=device)
        f_pos += fb
        if a_pos + ab > n_adv:
            a_order, a_pos = torch.randperm(n_adv, generator=gen), 0
        ai = a_order[a_pos:a_pos + ab].to(device)
        a_pos += ab
        logits = model(fx_dev[fi])
        l_obj = (loss_obj(logits, fy_dev[fi], active_only=cfg.active_only) if cfg.loss == "ce"
                 else loss_obj(logits, fy_dev[fi], margin=cfg.margin))
        l_adv = F.cross_entropy(model(adv_x[ai]), adv_y[ai])
        n_f, n_a = len(fi), len(ai)
        loss = ((n_f * l_obj + n_a * l_adv) / (n_f + n_a) if cfg.weighting == "share"
                else l_obj + l_adv)
        loss = loss + importance_penalty(model, anchor, weights, lam=cfg.lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        sec["update"] += clock() - t
        t = clock()
        _, acc = _official_test(model, device, f_loader)
        sec["evaluate"] += clock() - t
    model.eval()
    return sec, step, clock() - t_wall


# ------------------------------------------------------------------ problems
def random_problem(arch, k, device, seed):
    """An untrained model on random 32x32x3 images; labels = its own predictions.

    BatchNorm running statistics are first settled on the forget set (train-mode forward
    passes, no gradient) so that every instance starts correctly classified and the
    misclassification objective stays out of reach of a tiny learning rate.
    """
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=RANDOM_CLASSES, in_channels=3, image_size=32,
                         mean=CIFAR_MEAN, std=CIFAR_STD).to(device)
    g = torch.Generator().manual_seed(seed)
    fx = torch.rand(k, 3, 32, 32, generator=g)
    with torch.no_grad():
        model.train()
        for _ in range(20):
            for lo in range(0, k, 32):
                model(fx[lo:lo + 32].to(device))
        model.eval()
        fy = torch.cat([model(fx[lo:lo + 256].to(device)).argmax(1).cpu()
                        for lo in range(0, k, 256)])
    return model, fx, fy


def problems(args, device):
    """Yield (k, base model, forget_x, forget_y) for every k."""
    if args.random_data:
        for k in args.ks:
            yield (k, *random_problem(args.arch, k, device, args.seed))
        return
    print("pre-trained model: from artifacts/checkpoints, trained and cached there if missing "
          "(not timed)", flush=True)
    base, data, _ = pretrained(dataset=args.dataset, arch=args.arch, seed=args.seed,
                               device=str(device))
    for k in args.ks:
        req = ForgetRequest.draw(data, k, seed=args.seed)
        fx, fy = req.x, req.y
        yield k, base, fx, fy


# ------------------------------------------------------------------ main
def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128], help="forget-set sizes")
    p.add_argument("--arch", default="cnn", help="kit.core.models registry name")
    p.add_argument("--dataset", default="mnist5k",
                   help="data set of the (cached or trained) pre-trained model")
    p.add_argument("--random-data", action="store_true",
                   help="random 32x32x3 images and an untrained model (no data, no pre-training)")
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                   help="kit recipe: batch sizes, optimiser, loss, PGD eps/step size, ...")
    p.add_argument("--per-instance", type=int, default=5, help="R, adversarial examples per instance")
    p.add_argument("--pgd-steps", type=int, default=30, help="PGD iterations per example")
    p.add_argument("--steps", type=int, default=50, help="update steps timed (max_steps)")
    p.add_argument("--lr", type=float, default=1e-8,
                   help="tiny, so that the objective is not reached before --steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per k; the median is reported")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads; default 1 on CPU (stable on a shared machine), "
                        "0 keeps torch's default")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def median_runs(fn, model, fx, fy, cfg, repeats, seed):
    runs = [fn(copy.deepcopy(model), fx, fy, cfg, seed=seed) for _ in range(repeats)]
    sec = {ph: statistics.median(r[0][ph] for r in runs) for ph in PHASES}
    sec["total"] = statistics.median(sum(r[0][ph] for ph in PHASES) for r in runs)
    return sec, min(r[1] for r in runs), statistics.median(r[2] for r in runs)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    cfg = resolve(args.recipe).replace(max_steps=args.steps, lr=args.lr,
                                          per_instance=args.per_instance, pgd_steps=args.pgd_steps)
    data_name = "random 32x32x3 (untrained model)" if args.random_data else args.dataset
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({dev_name}), torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {_load()}")
    print(f"arch {args.arch}, data {data_name}, recipe {args.recipe}, method adv+imp, "
          f"R={cfg.per_instance}, pgd_steps={cfg.pgd_steps}, steps={cfg.max_steps}, lr={cfg.lr:g}, "
          f"forget_batch={cfg.forget_batch}, adv_batch={cfg.adv_batch}, repeats={args.repeats}")

    rows, results, warmed = [], [], False
    for k, base, fx, fy in problems(args, device):
        if not args.no_warmup and not warmed:  # first-call costs (allocator, cuDNN, lazy init)
            tiny = cfg.replace(max_steps=2, per_instance=1, pgd_steps=2)
            run_kit(copy.deepcopy(base), fx, fy, tiny, seed=args.seed)
            run_official(copy.deepcopy(base), fx, fy, tiny, seed=args.seed)
            warmed = True
        kit_s, kit_steps, kit_wall = median_runs(run_kit, base, fx, fy, cfg, args.repeats, args.seed)
        off_s, off_steps, off_wall = median_runs(run_official, base, fx, fy, cfg, args.repeats,
                                                 args.seed)
        n_ex = cfg.per_instance * k
        print(f"\nk={k}: {n_ex} adversarial examples x {cfg.pgd_steps} PGD steps; "
              f"update steps kit {kit_steps}, official {off_steps}")
        for name, s in (("kit", kit_s), ("official", off_s)):
            a = max(s["attack"], 1e-12)
            print(f"  {name:8s} attack: {n_ex / a:10.1f} examples/s  "
                  f"{n_ex * cfg.pgd_steps / a:12.1f} example-steps/s")
        if kit_steps != args.steps or off_steps != args.steps:
            print(f"  WARNING: the objective was reached before {args.steps} steps "
                  f"(kit {kit_steps}, official {off_steps}); lower --lr")
        for ph in (*PHASES, "total"):
            ratio = off_s[ph] / kit_s[ph] if kit_s[ph] > 0 else float("nan")
            rows.append((k, ph, kit_s[ph], off_s[ph], ratio))
        rows.append((k, "wall", kit_wall, off_wall, off_wall / kit_wall))
        results.append({"k": k, "kit": kit_s, "official": off_s, "kit_wall": kit_wall,
                        "official_wall": off_wall, "kit_steps": kit_steps,
                        "official_steps": off_steps, "adv_examples": n_ex})

    print("\nseconds per phase (ratio = official / kit; > 1: the kit is faster)")
    print(f"| {'k':>4} | {'phase':10} | {'kit s':>9} | {'official s':>10} | {'ratio':>6} |")
    print(f"|{'-' * 5}:|{'-' * 12}|{'-' * 10}:|{'-' * 11}:|{'-' * 7}:|")
    for k, ph, a, b, r in rows:
        print(f"| {k:>4} | {ph:10} | {a:9.3f} | {b:10.3f} | {r:6.2f} |")
    print(f"load average at the end {_load()}")
    print("(total = attack + importance + update + evaluate, as the engine's result.seconds; "
          "wall = the whole call, set-up and bookkeeping included)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                                         "device": str(device), "results": results}, indent=1))


if __name__ == "__main__":
    main()
