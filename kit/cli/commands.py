"""The commands of `python -m kit`: validate everything, then compute, then write.

Each command checks its options, its output place and its inputs before it loads data or
trains (bad input raises `UsageError`: exit status 2, nothing written). `unlearn` (and
`evaluate`, `kit.cli.evaluate`) then computes without touching the disk and writes the model
and the results into a temporary sibling folder that is renamed into place
(`kit.core.files.atomic_dir`): --out holds one whole run or none. The model is a kit
checkpoint or the user's own (`kit.cli.external`); the request comes from `kit.cli.forget`.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from ..core.checkpoint import (check_compatible, load_checkpoint, read_sidecar, save_checkpoint,
                               sidecar_path)
from ..core.data import default_root, load_dataset
from ..core.results import save_results
from ..core.files import atomic_dir, check_output
from ..core.utils import resolve_device
from ..method.config import FIELDS, METHODS
from ..method.recipes import resolve
from .external import (build_user_model, check_dataset, check_sha, complete, model_spec,
                       save_user_model, user_spec)
from .forget import build_request, earlier_request, request_record
from .inputs import UsageError, bad_input, existing_file, read_ints
from .grid import cmd_grid
from .parser import flag

__all__ = ["COMMANDS", "UsageError", "bad_input", "prepare", "read_ints"]


def _device(name: str):
    import torch

    try:
        dev = resolve_device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use auto, cpu, cuda, "
                         f"cuda:N or mps") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if dev.type in available and not available[dev.type]():
        raise UsageError(f"--device {name} is not available on this machine; use --device "
                         f"auto or cpu")
    return dev


def _load_data(args):
    return load_dataset(args.dataset, root=args.root,
                        **({"image_size": args.image_size} if args.image_size else {}))


def _config(args):
    """The resolved config; a bad value is reported with its flag (--adv-batch ...)."""
    overrides = {n: getattr(args, n) for n in FIELDS if getattr(args, n) is not None}
    try:
        return resolve(args.recipe, args.objective, **overrides)
    except ValueError as e:
        msg = str(e)
        name = re.match(r"\w*", msg).group(0)
        raise UsageError(flag(name) + msg[len(name):] if name in FIELDS else msg) from None


# ------------------------------------------------------------------ output places
def check_out_folder(out, inputs, *, overwrite: bool) -> None:
    """--out must not be (or hold) any input, and must be new or empty unless overwrite."""
    out_r = Path(out).resolve()
    for what, p in inputs:
        p_r = Path(p).resolve()
        if out_r == p_r or out_r in p_r.parents:
            raise UsageError(f"--out '{out}' {'is' if out_r == p_r else 'holds'} the {what} "
                             f"'{p}'; writing the run there would replace or delete it: "
                             f"choose another output folder")
    with bad_input("--out: "):
        check_output(out, overwrite=overwrite, folder=True)


def check_out_file(out, *, overwrite: bool) -> None:
    """A checkpoint path: ends in .pt; it and its sidecar are new unless overwrite."""
    out = Path(out)
    if out.suffix != ".pt":
        raise UsageError(f"--out '{out}' must be a checkpoint path ending in .pt (its sidecar "
                         f".json is written beside it); e.g. --out {out.with_suffix('.pt')}")
    with bad_input("--out: "):
        for p in (out, sidecar_path(out)):
            check_output(p, overwrite=overwrite)


# ------------------------------------------------------------------ commands
def cmd_pretrain(args) -> int:
    from ..core.predict import accuracy
    from ..experiments.cache import pretrained

    out = Path(args.out)
    with bad_input():
        check_out_file(out, overwrite=args.overwrite)
        _device(args.device)
        data = _load_data(args)
    model, data, _ = pretrained(dataset=args.dataset, arch=args.arch, seed=args.seed,
                                train_preset=args.preset, epochs=args.epochs, data=data,
                                device=args.device, cache_dir=out.parent / ".cache")
    metrics = {"train_acc": accuracy(model, data.train), "test_acc": accuracy(model, data.test)}
    save_checkpoint(model, out, dataset=data.name, seed=args.seed, metrics=metrics,
                    extra={"preset": args.preset, "epochs": args.epochs})
    print(f"saved {out} (train acc {metrics['train_acc']:.4f}, test acc {metrics['test_acc']:.4f})")
    return 0


def prepare(args, *, inputs=()) -> SimpleNamespace:
    """The checks `unlearn` and `evaluate` share, cheapest first: the model options, the
    output place, the checkpoint's sidecar, the device, the data set, the request, then the
    model itself (a kit checkpoint, or the user's weights for --arch). Nothing is written.

    inputs: more (what, path) pairs that --out must not be or hold.
    """
    spec = model_spec(args)
    files = ([("input checkpoint", args.checkpoint),
              ("checkpoint sidecar", sidecar_path(args.checkpoint))] if args.checkpoint
             else [("--weights file", args.weights)])
    files += [("data folder", args.root or default_root()), ("current folder", Path.cwd()),
              *inputs]
    files += [(f"{name} file", v) for name, v in (("--forget-ids", args.forget_ids),
                                                  ("--new-labels", args.new_labels),
                                                  ("--earlier-ids", args.earlier_ids)) if v]
    if args.dataset.startswith("folder:"):
        files.append(("data set folder", args.dataset.split(":", 1)[1]))
    check_out_folder(args.out, files, overwrite=args.overwrite)
    meta = None
    if args.checkpoint:
        meta = read_sidecar(args.checkpoint)
        spec = user_spec(meta)                      # weights the kit wrote for a user model
    else:
        existing_file(args.weights, "--weights")
    device = _device(args.device)
    data = _load_data(args)
    if meta is not None:
        check_dataset(meta, data, args.checkpoint)
    if spec is None:
        check_compatible(meta, data)
    else:
        spec = complete(spec, data)
    req = build_request(args, data)
    earlier = earlier_request(args, data, req)
    if spec is None:
        model = load_checkpoint(args.checkpoint)
    elif meta is not None:
        check_sha(args.checkpoint, meta)
        model = build_user_model(spec, args.checkpoint, "--checkpoint")
    else:
        model = build_user_model(spec, args.weights)
    return SimpleNamespace(spec=spec, data=data, req=req, model=model.to(device), device=device,
                           source=str(args.checkpoint or args.weights), earlier=earlier)


def prepare_unlearn(args) -> SimpleNamespace:
    """Every check of `unlearn`, cheapest first; nothing is computed or written."""
    cfg = _config(args)
    if args.new_labels and args.objective != "relabel":
        raise UsageError("--new-labels only makes sense with --objective relabel")
    job = prepare(args)
    job.cfg = cfg
    return job


def cmd_unlearn(args) -> int:
    from ..core.predict import accuracy
    from ..evaluation.metrics import split_accuracies
    from ..method.engine import unlearn

    with bad_input():
        job = prepare_unlearn(args)
    model, data, req = job.model, job.data, job.req
    before = split_accuracies(model, data, req, retain_max=args.retain_max)
    if job.earlier is not None:                  # do earlier requests stay forgotten?
        before["earlier"] = accuracy(model, (job.earlier.x, job.earlier.y))
    res = unlearn(model, req.x, req.y, objective=args.objective, new_labels=req.new_labels,
                  method=args.method, config=job.cfg, seed=args.seed,
                  earlier_x=None if job.earlier is None or not METHODS[args.method]["adv"]
                  else job.earlier.x,
                  hold=(job.earlier.x, job.earlier.y) if args.hold else None)
    after = split_accuracies(model, data, req, retain_max=args.retain_max)
    if job.earlier is not None:
        after["earlier"] = accuracy(model, (job.earlier.x, job.earlier.y))

    record = request_record(req, data)
    if job.earlier is not None:
        record.update(earlier_ids=job.earlier.forget_idx.tolist(), hold=args.hold)
    source = ({"checkpoint": job.source} if job.spec is None
              else {"weights": job.source, "arch": job.spec["arch"]})
    row = {**res.summary(), "k": req.k, "seed": args.seed, "dataset": data.name, **source,
           **{f"acc_{s}_before": v for s, v in before.items()},
           **{f"acc_{s}_after": v for s, v in after.items()}}
    config = {**res.config, **source, "dataset": data.name, "recipe": args.recipe, **record,
              "new_labels": None if req.new_labels is None else req.new_labels.tolist(),
              "flip_step": res.flip_step.tolist()}
    extra = {"unlearned_from": job.source, "method": args.method, "objective": args.objective,
             **record}
    try:
        with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
            if job.spec is None:
                save_checkpoint(model, tmp / "model.pt", dataset=data.name, seed=args.seed,
                                metrics=after, extra=extra)
            else:
                save_user_model(model, tmp / "model.pt", dataset=data.name,
                                extra={"seed": args.seed, "metrics": after, **extra})
            save_results([row], tmp / "results.csv", config=config)
    except FileExistsError as e:                     # another run wrote --out meanwhile
        raise UsageError(f"--out: {e}") from e
    status = "reached" if res.reached else "NOT reached"
    print(f"{args.method}/{args.objective}: objective {status} after {res.steps} steps "
          f"({res.seconds['total']:.1f} s); forget {before['forget']:.3f} -> "
          f"{after['forget']:.3f}, retain {before['retain']:.3f} -> {after['retain']:.3f}, "
          f"test {before['test']:.3f} -> {after['test']:.3f}; wrote {args.out}")
    return 0 if res.reached else 1


def cmd_evaluate(args) -> int:
    from .evaluate import run_evaluate        # imported here: it builds on this module

    return run_evaluate(args)


def cmd_download(args) -> int:
    from torchvision import datasets

    ctor = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[args.name]
    for train in (True, False):
        ctor(args.root, train=train, download=True)
    print(f"downloaded {args.name} to {args.root}")
    return 0


COMMANDS = {"pretrain": cmd_pretrain, "unlearn": cmd_unlearn, "evaluate": cmd_evaluate,
            "download": cmd_download, "grid": cmd_grid}
