"""Engine throughput against raw forward+backward passes, evaluation overhead, and cost.

For the default recipe (ADV+IMP, misclassify) on the cached pre-trained model of
`--dataset`/`--arch` and a real request (`ForgetRequest.draw(data, k, seed)`), for every k:

1. raw throughput of the same model in the same process, timed with the same clock right
   before and right after the engine run (the mean of the two is the reference):
   - attack: input-gradient forward+backward (as in PGD: CE with reduction="sum",
     `torch.autograd.grad` w.r.t. the input, eval mode) on random batches shaped like the
     chunks the engine's attack really used (recorded by an untimed probe run), in
     example-steps/s;
   - update: one joint batch of min(forget_batch, k) + min(adv_batch, R*k) random examples,
     CE, weight gradients and the recipe's optimiser step, BatchNorm as the recipe sets it,
     in examples/s;
2. the engine (`kit.method.engine.unlearn`, the recipe unchanged): attack example-steps/s
   = R*k*pgd_steps / seconds["attack"], update examples/s = passes["update"] /
   seconds["update"], each as % of raw (target >= 90 %);
3. evaluation overhead: seconds["evaluate"] / seconds["total"] (target <= 10 % at k = 128);
4. cost in machine-free units: passes["total"] against retraining = epochs x |D_r|
   (epochs from `kit.core.train.PRESETS`), and a projection of the paper's settings to
   CIFAR-10 and ImageNet-1k computed from the recipes (`projected_passes`).

Only APIs present in the kit both before and after the pending-only evaluation (c91295a)
are used, so the same script times an older checkout put first on PYTHONPATH. `--before DIR`
does exactly that in one command: it alternates child runs (before, after, before, ...)
`--repeats` times and prints the medians; `--summarize FILES` redoes that from their JSONs.

    python benchmarks/bench_throughput.py --ks 32 128                # this kit only
    python benchmarks/bench_throughput.py --before /tmp/kit_before --repeats 3 \
        --json benchmarks/out/throughput.json                        # before/after
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KIT_QUIET", "1")        # no progress bars in timed runs
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:                  # appended: a kit on PYTHONPATH comes first
    sys.path.append(str(REPO))

import kit  # noqa: E402
from kit.core.request import ForgetRequest  # noqa: E402
from kit.core.train import PRESETS  # noqa: E402
from kit.core.utils import resolve_device  # noqa: E402
from kit.experiments.cache import pretrained  # noqa: E402
from kit.method.recipes import OFFICIAL, RECIPES  # noqa: E402

from _clock import make_clock, synced_engine_clock  # noqa: E402  (benchmarks/_clock.py)

_engine = importlib.import_module("kit.method.engine")
_attacks = importlib.import_module("kit.method.attacks")
PHASES = ("attack", "importance", "update", "evaluate")
# retraining references of the projection: (data set, examples, epochs, source of epochs)
SCALES = [("CIFAR-10", 50_000, PRESETS["cifar"]["epochs"]), ("ImageNet-1k", 1_281_167, 90)]


# ------------------------------------------------------------------ engine
def engine_run(model, req, cfg):
    m = copy.deepcopy(model)
    clock = make_clock(next(m.parameters()).device)
    with synced_engine_clock(_engine, next(m.parameters()).device):
        t = clock()
        res = _engine.unlearn(m, req.x, req.y, objective=req.objective, method="adv+imp",
                              config=cfg, seed=req.seed)
        wall = clock() - t
    return res, wall


def attack_chunks(model, req, cfg):
    """Chunk sizes the engine's attack uses (untimed probe: 1 PGD step, 1 update; warms up)."""
    sizes, real = [], _attacks.run_pgd

    def recording(model, x, *a, **kw):
        sizes.append(int(x.shape[0]))
        return real(model, x, *a, **kw)
    _attacks.run_pgd = recording
    try:
        engine_run(model, req, cfg.replace(pgd_steps=1, max_steps=1))
    finally:
        _attacks.run_pgd = real
    return sizes


# ------------------------------------------------------------------ raw passes
def raw_attack(model, chunks, shape, steps, num_classes):
    """Example-steps/s of input-gradient forward+backward on random chunks (eval mode)."""
    m = copy.deepcopy(model).eval()
    dev = next(m.parameters()).device
    clock, sec, n = make_clock(dev), 0.0, 0
    g = torch.Generator().manual_seed(0)
    for size in chunks:
        x = torch.rand(size, *shape, generator=g).to(dev)
        y = torch.randint(num_classes, (size,), generator=g).to(dev)
        for i in range(steps + 1):                     # the first iteration is a warm-up
            t = clock()
            x.requires_grad_(True)
            loss = F.cross_entropy(m(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            x = x.detach()
            if i:
                sec += clock() - t
                n += size
    return n / sec


def raw_update(model, n, shape, steps, num_classes, cfg):
    """Examples/s of a plain training step (CE, backward, the recipe's optimiser) on n examples."""
    m = copy.deepcopy(model)
    m.train()
    if cfg.bn_mode == "frozen":
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eval()
    dev = next(m.parameters()).device
    params = [p for p in m.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay) if cfg.optimizer == "sgd"
           else torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=g).to(dev)
    y = torch.randint(num_classes, (n,), generator=g).to(dev)
    clock, sec = make_clock(dev), 0.0
    for i in range(steps + 1):
        t = clock()
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            sec += clock() - t
    return n * steps / sec


# ------------------------------------------------------------------ cost
def projected_passes(cfg, *, k: int, steps: int | None = None) -> dict:
    """Example-passes of one ADV+IMP request, from the recipe alone (as the engine counts
    them: fwd+bwd = 1, forward = 1/3). steps None: the recipe's full budget. Upper bounds:
    every adversarial example kept, and a full pass of D_f before and after every step (the
    official code's test(); the kit's pending-only check costs at most that). Synthesised
    and transformed anchors count as the engine counts them: the inversion's steps and the
    labelling in the attack phase, their share of every anchor batch in the update phase
    (with feat_distil each anchor 4/3: the frozen copy's forward pass); mined anchors each
    round's PGD (both models, fwd+bwd) and labels in the attack phase, their batch likewise."""
    n_adv = cfg.per_instance * k
    steps = cfg.budget_steps(n_forget=k, n_adv=n_adv) if steps is None else steps
    attack, batch = n_adv * (cfg.pgd_steps + 1 / 3), min(cfg.adv_batch, n_adv)
    if getattr(cfg, "synth_anchors", 0):       # getattr: an older kit on PYTHONPATH lacks it
        attack += cfg.synth_anchors * (cfg.synth_iters + 2 / 3)
        batch += cfg.synth_batch
    if getattr(cfg, "aug_anchors", 0):
        attack += cfg.aug_anchors / 3
        batch += cfg.aug_batch_at(k) if hasattr(cfg, "aug_batch_at") else cfg.aug_batch
    if getattr(cfg, "mine_anchors", 0):         # a round every mine_every steps, from step 0
        attack += -(-steps // cfg.mine_every) * cfg.mine_anchors * (2 * cfg.mine_steps + 1 / 3)
        batch += cfg.mine_batch
    if getattr(cfg, "feat_distil", 0):          # each anchor a forward of the frozen copy too
        batch *= 4 / 3
    out = {"steps": steps, "attack": attack, "importance": float(k),
           "update": float(steps * (min(cfg.forget_batch, k) + batch)),
           "evaluate": (steps + 1) * k / 3}
    out["total"] = sum(out[p] for p in PHASES)
    return out


def projection_rows(default_steps: int | None, k: int = 128) -> list[dict]:
    rows = []
    settings = [("official (paper: R 20, 100 PGD, 1000 passes)", OFFICIAL, None)]
    settings.append(("official, R 200", OFFICIAL.replace(per_instance=200), None))
    if default_steps is not None:
        settings.append((f"kit default, {default_steps} steps (measured, mnist5k)",
                         RECIPES["default"], default_steps))
    for data, n, epochs in SCALES:
        for name, cfg, steps in settings:
            p = projected_passes(cfg, k=k, steps=steps)
            retrain = epochs * (n - k)
            rows.append({"data": data, "recipe": name, "k": k, "R": cfg.per_instance,
                         "pgd_steps": cfg.pgd_steps, **p, "retrain": retrain,
                         "pct_retrain": 100 * p["total"] / retrain})
    return rows


# ------------------------------------------------------------------ one kit, in process
def measure(args) -> dict:
    device = resolve_device(args.device)
    torch.set_num_threads(1)                   # the cache key holds the thread count
    base, data, _ = pretrained(dataset=args.dataset, arch=args.arch, seed=args.seed,
                               device="cpu", cache_dir=REPO / "artifacts" / "checkpoints")
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    base = base.to(device)
    cfg = RECIPES[args.recipe]
    kit_dir = Path(kit.__file__).resolve().parent
    print(f"kit imported from {kit_dir}  (label {args.label})", flush=True)
    if args.expect_kit and not str(kit_dir).startswith(str(Path(args.expect_kit).resolve())):
        sys.exit(f"expected the kit under {args.expect_kit}, got {kit_dir}")
    def git(*a):                               # read-only: which commit the kit comes from
        return subprocess.run(["git", "-C", str(kit_dir), *a], capture_output=True,
                              text=True).stdout.strip()
    out = {"label": args.label, "kit_file": kit.__file__,
           "kit_commit": git("rev-parse", "HEAD"),
           "kit_dirty": bool(git("status", "--porcelain", ".")), "device": str(device),
           "sha256": {f: hashlib.sha256((kit_dir / "method" / f).read_bytes()).hexdigest()
                      for f in ("engine.py", "attacks.py")},
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "recipe": args.recipe, "attack_chunk_field": cfg.attack_chunk,
           "load_start": os.getloadavg(), "ks": {}, "cost": {}}
    n_train = len(data.train)
    epochs = PRESETS["default"]["epochs"]
    for k in sorted(set(args.ks) | set(args.cost_ks)):
        req = ForgetRequest.draw(data, k, seed=args.seed)
        shape, ncls = tuple(req.x.shape[1:]), base.config["num_classes"]
        if k not in args.ks:                   # cost only: one run, machine-free counts
            res, _ = engine_run(base, req, cfg)
        else:
            chunks = attack_chunks(base, req, cfg)
            n_joint = min(cfg.forget_batch, k) + min(cfg.adv_batch, cfg.per_instance * k)
            runs = []
            def raw():
                return (raw_attack(base, chunks, shape, args.raw_attack_steps, ncls),
                        raw_update(base, n_joint, shape, args.raw_update_steps, ncls, cfg))
            for _ in range(args.repeats):
                r1 = raw()                     # raw passes right before and right after
                res, wall = engine_run(base, req, cfg)
                r2 = raw()                     # the engine run; their mean is the reference
                ra, ru = (r1[0] + r2[0]) / 2, (r1[1] + r2[1]) / 2
                s, p = res.seconds, res.passes
                ea = cfg.per_instance * k * cfg.pgd_steps / s["attack"]
                eu = p["update"] / s["update"]
                runs.append({
                    "raw_attack": ra, "engine_attack": ea, "attack_pct": 100 * ea / ra,
                    "raw_update": ru, "engine_update": eu, "update_pct": 100 * eu / ru,
                    "raw_attack_spread": abs(r1[0] - r2[0]) / ra,
                    "raw_update_spread": abs(r1[1] - r2[1]) / ru,
                    "eval_pct": 100 * s["evaluate"] / s["total"],
                    "eval_pct_loop": 100 * s["evaluate"] / (s["update"] + s["evaluate"]),
                    "wall": wall, **{f"sec_{ph}": s[ph] for ph in (*PHASES, "total")}})
            rec = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            rec.update(chunks=chunks, n_joint=n_joint, repeats=args.repeats)
            out["ks"][str(k)] = rec
            print(f"k={k:4d}  chunks {chunks}  attack {rec['engine_attack']:.0f} / raw "
                  f"{rec['raw_attack']:.0f} ex-steps/s = {rec['attack_pct']:.0f} %   update "
                  f"{rec['engine_update']:.0f} / raw {rec['raw_update']:.0f} ex/s = "
                  f"{rec['update_pct']:.0f} %   evaluate {rec['eval_pct']:.1f} % of "
                  f"{rec['sec_total']:.1f} s   steps {res.steps} reached {res.reached}", flush=True)
        retrain = epochs * (n_train - k)
        out["cost"][str(k)] = {"steps": int(res.steps), "reached": bool(res.reached),
                               "passes": dict(res.passes), "retrain": retrain,
                               "pct_retrain": 100 * res.passes["total"] / retrain,
                               "final_pred": [int(v) for v in res.final_pred]}
    out["load_end"] = os.getloadavg()
    return out


# ------------------------------------------------------------------ summary
def med(runs, k, col):
    return statistics.median(r["ks"][k][col] for r in runs)


def summarize(results: list[dict]) -> dict:
    labels = list(dict.fromkeys(r["label"] for r in results))
    by = {lab: [r for r in results if r["label"] == lab] for lab in labels}
    print("\nkit per label: " + "; ".join(f"{lab}: {by[lab][0]['kit_file']} @ "
                                          f"{by[lab][0]['kit_commit'][:7]}"
                                          f"{' + uncommitted' if by[lab][0]['kit_dirty'] else ''}"
                                          f" ({len(by[lab])} runs)" for lab in labels))
    loads = [x for r in results for x in (r["load_start"][0], r["load_end"][0])]
    print(f"load average (1 min) at child starts/ends: {min(loads):.2f}-{max(loads):.2f}")
    cols = ["raw_attack", "engine_attack", "attack_pct", "raw_update", "engine_update",
            "update_pct", "sec_attack", "sec_update", "sec_evaluate", "sec_total", "eval_pct",
            "eval_pct_loop"]
    print("\nmedians over runs, each column on its own; (min-max) over runs")
    print("\n| k | kit | attack raw ex-steps/s | attack engine | attack % raw | update raw ex/s "
          "| update engine | update % raw | attack s | update s | evaluate s | total s "
          "| evaluate % total | evaluate % of update+evaluate | steps |")
    print("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    table = {}
    ks = sorted({int(k) for r in results for k in r["ks"]})
    for k in ks:
        for lab in labels:
            runs = [r for r in by[lab] if str(k) in r["ks"]]
            row = {c: med(runs, str(k), c) for c in cols}
            span = {c: (min(r["ks"][str(k)][c] for r in runs),
                        max(r["ks"][str(k)][c] for r in runs)) for c in cols}
            row["range"] = span

            def pct(c, fmt=".0f"):
                lo, hi = span[c]
                return f"{row[c]:{fmt}} % ({lo:{fmt}}-{hi:{fmt}})"
            row["steps"] = sorted({r["cost"][str(k)]["steps"] for r in runs})
            row["raw_spread"] = max(max(r["ks"][str(k)]["raw_attack_spread"],
                                        r["ks"][str(k)]["raw_update_spread"]) for r in runs)
            table[f"{lab}/{k}"] = row
            print(f"| {k} | {lab} | {row['raw_attack']:.0f} | {row['engine_attack']:.0f} | "
                  f"{pct('attack_pct')} | {row['raw_update']:.0f} | "
                  f"{row['engine_update']:.0f} | {pct('update_pct')} | "
                  f"{row['sec_attack']:.2f} | {row['sec_update']:.2f} | "
                  f"{row['sec_evaluate']:.2f} | {row['sec_total']:.2f} | "
                  f"{pct('eval_pct', '.1f')} | {pct('eval_pct_loop', '.1f')} | "
                  f"{'/'.join(map(str, row['steps']))} |")
    print("largest gap between the raw passes before and after an engine run: " + ", ".join(
        f"{key} {100 * row['raw_spread']:.0f} %" for key, row in table.items()))
    if len(labels) == 2:                       # same outcome before and after?
        for k in sorted({int(k) for r in results for k in r["cost"]}):
            a, b = ([r["cost"][str(k)] for r in by[lab]] for lab in labels)
            same = all(x["steps"] == y["steps"] and x["final_pred"] == y["final_pred"]
                       for x in a for y in b)
            print(f"k={k}: steps and final predictions identical {labels[0]} vs "
                  f"{labels[1]}: {same}")
    last = by[labels[-1]]
    cost = {}
    print(f"\ncost ({labels[-1]}): | k | steps | reached | attack | importance | update | "
          f"evaluate | total example-passes | retraining | % of retraining |")
    for k in sorted({int(k) for r in last for k in r["cost"]}):
        c = last[-1]["cost"][str(k)]
        cost[k] = {kk: v for kk, v in c.items() if kk != "final_pred"}
        p = c["passes"]
        print(f"| {k} | {c['steps']} | {c['reached']} | {p['attack']:,.0f} | "
              f"{p['importance']:,.0f} | {p['update']:,.0f} | {p['evaluate']:,.0f} | "
              f"{p['total']:,.0f} | {c['retrain']:,} | {c['pct_retrain']:.1f} % |")
    steps128 = last[-1]["cost"].get("128", {}).get("steps")
    proj = projection_rows(steps128)
    print("\nprojection, k = 128: | data | recipe | R | PGD steps | update steps | attack | "
          "update | evaluate | total | retraining | % of retraining |")
    for r in proj:
        print(f"| {r['data']} | {r['recipe']} | {r['R']} | {r['pgd_steps']} | {r['steps']:,} | "
              f"{r['attack']:,.0f} | {r['update']:,.0f} | {r['evaluate']:,.0f} | "
              f"{r['total']:,.0f} | {r['retrain']:,} | {r['pct_retrain']:.1f} % |")
    return {"table": table, "cost": cost, "projection": proj}


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto",
                   help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--ks", type=int, nargs="+", default=[32, 128], help="k with throughput runs")
    p.add_argument("--cost-ks", type=int, nargs="*", default=[8, 32, 128],
                   help="k with a cost row (extra untimed engine run where not in --ks)")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    p.add_argument("--seed", type=int, default=0, help="request and pre-training seed")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per k (in process), or before/after rounds with --before")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads; default 1 on CPU, 0 keeps torch's default")
    p.add_argument("--raw-attack-steps", type=int, default=5,
                   help="timed input-gradient passes per attack chunk, before and after the engine")
    p.add_argument("--raw-update-steps", type=int, default=25,
                   help="timed raw update steps, before and after the engine run")
    p.add_argument("--label", default="after", help="name of this kit in the JSON")
    p.add_argument("--expect-kit", default=None, help="fail unless kit is imported from here")
    p.add_argument("--before", type=Path, default=None,
                   help="checkout of the older kit: alternate child runs before/after")
    p.add_argument("--summarize", type=Path, nargs="+", default=None,
                   help="JSON files of earlier runs: print medians only")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def child_args(args, label, path):
    out = ["--label", label, "--expect-kit", str(path), "--device", args.device,
           "--ks", *map(str, args.ks), "--cost-ks", *map(str, args.cost_ks), "--dataset",
           args.dataset, "--arch", args.arch, "--recipe", args.recipe, "--seed", str(args.seed),
           "--raw-attack-steps", str(args.raw_attack_steps), "--raw-update-steps",
           str(args.raw_update_steps)]
    return out + ([] if args.threads is None else ["--threads", str(args.threads)])


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        results = [r for f in args.summarize for r in json.loads(f.read_text())["runs"]]
    elif args.before:
        results, tmp = [], Path(tempfile.mkdtemp(prefix="bench_throughput_"))
        t0 = time.perf_counter()
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        for i in range(args.repeats):
            for label, path in (("before", args.before.resolve()), ("after", REPO)):
                js = tmp / f"{label}_{i}.json"
                env = dict(os.environ, PYTHONPATH=str(path), KIT_QUIET="1")
                subprocess.run([sys.executable, __file__, *child_args(args, label, path),
                                "--json", str(js)], env=env, check=True)
                results += json.loads(js.read_text())["runs"]
        print(f"\n{args.repeats} rounds in {time.perf_counter() - t0:.0f} s; uptime:",
              subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    else:
        results = [measure(args)]
    summary = {} if args.expect_kit else summarize(results)   # a child: its parent sums up
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "machine": platform.platform(),
                                         "cpus": os.cpu_count(), "runs": results,
                                         "summary": summary}, indent=1, default=str))


if __name__ == "__main__":
    main()
