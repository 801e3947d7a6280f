"""The commands of `python -m kit`: validate everything, then compute, then write.

Each command checks its options, its output place and its inputs before it loads data or
trains (bad input raises `UsageError`: exit status 2, nothing written). `unlearn` then
computes without touching the disk and writes the model and the results into a temporary
sibling folder that is renamed into place (`kit.core.utils.atomic_dir`): --out holds one
whole run or none.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..core.checkpoint import (check_compatible, load_checkpoint, read_sidecar, save_checkpoint,
                               sidecar_path)
from ..core.data import default_root, load_dataset
from ..core.request import ForgetRequest
from ..core.results import save_results
from ..core.utils import atomic_dir, check_output, resolve_device
from ..method.config import FIELDS, resolve
from .parser import flag


class UsageError(ValueError):
    """Bad input on the command line; printed as one line, exit status 2."""


@contextlib.contextmanager
def bad_input(prefix: str = ""):
    """Report the library's input errors raised in the block (ValueError, TypeError and
    OSError: bad values, missing files or data sets, mismatched checkpoints) as UsageError."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(f"{prefix}{e}") from e


def read_ints(path: str, what: str) -> np.ndarray:
    """Integers from a .npy file or a text file (one per line, or comma/space separated)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file '{path}' does not exist or is not a file")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if not np.issubdtype(arr.dtype, np.integer):
            raise UsageError(f"{what} file '{path}' must hold integers, got dtype {arr.dtype}")
    else:
        tokens = p.read_text().replace(",", " ").split()
        try:
            arr = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise UsageError(f"{what} file '{path}' must hold integers only ({e})") from None
    return np.asarray(arr).reshape(-1)


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


def _request(args, data) -> ForgetRequest:
    new = read_ints(args.new_labels, "--new-labels") if args.new_labels else None
    if args.forget_ids is None:
        req = ForgetRequest.draw(data, args.forget_k, seed=args.seed, objective=args.objective)
        if new is None:
            return req
        ids = req.forget_idx
    else:
        ids = read_ints(args.forget_ids, "--forget-ids")
    if new is not None and len(new) != len(ids):
        raise UsageError(f"--new-labels has {len(new)} labels for {len(ids)} forget instances; "
                         f"give one new label per instance, in order")
    return ForgetRequest.from_ids(data, ids, objective=args.objective, new_labels=new,
                                  seed=args.seed)


def prepare_unlearn(args) -> SimpleNamespace:
    """Every check of `unlearn`, cheapest first; nothing is computed or written."""
    cfg = _config(args)
    if args.new_labels and args.objective != "relabel":
        raise UsageError("--new-labels only makes sense with --objective relabel")
    inputs = [("input checkpoint", args.checkpoint),
              ("checkpoint sidecar", sidecar_path(args.checkpoint)),
              ("data folder", args.root or default_root()), ("current folder", Path.cwd())]
    inputs += [(f"{name} file", v) for name, v in (("--forget-ids", args.forget_ids),
                                                   ("--new-labels", args.new_labels)) if v]
    if args.dataset.startswith("folder:"):
        inputs.append(("data set folder", args.dataset.split(":", 1)[1]))
    check_out_folder(args.out, inputs, overwrite=args.overwrite)
    meta = read_sidecar(args.checkpoint)
    device = _device(args.device)
    data = _load_data(args)
    if meta.get("dataset") not in (None, data.name):
        raise UsageError(f"checkpoint '{args.checkpoint}' was trained on {meta['dataset']!r}, "
                         f"not {data.name!r}; pass --dataset {meta['dataset']} or another "
                         f"checkpoint")
    check_compatible(meta, data)
    req = _request(args, data)
    model = load_checkpoint(args.checkpoint).to(device)
    return SimpleNamespace(cfg=cfg, data=data, req=req, model=model)


def cmd_unlearn(args) -> int:
    from ..evaluation.metrics import split_accuracies
    from ..method.engine import unlearn

    with bad_input():
        job = prepare_unlearn(args)
    model, data, req = job.model, job.data, job.req
    before = split_accuracies(model, data, req, retain_max=args.retain_max)
    res = unlearn(model, req.x, req.y, objective=args.objective, new_labels=req.new_labels,
                  method=args.method, config=job.cfg, seed=args.seed)
    after = split_accuracies(model, data, req, retain_max=args.retain_max)

    ids = req.forget_idx.tolist()
    row = {**res.summary(), "k": req.k, "seed": args.seed, "dataset": data.name,
           "checkpoint": str(args.checkpoint),
           **{f"acc_{s}_before": v for s, v in before.items()},
           **{f"acc_{s}_after": v for s, v in after.items()}}
    config = {**res.config, "checkpoint": str(args.checkpoint), "dataset": data.name,
              "recipe": args.recipe, "forget_ids": ids,
              "new_labels": None if req.new_labels is None else req.new_labels.tolist(),
              "flip_step": res.flip_step.tolist()}
    try:
        with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
            save_checkpoint(model, tmp / "model.pt", dataset=data.name, seed=args.seed,
                            metrics=after, extra={"unlearned_from": str(args.checkpoint),
                                                  "method": args.method,
                                                  "objective": args.objective,
                                                  "forget_ids": ids})
            save_results([row], tmp / "results.csv", config=config)
    except FileExistsError as e:                     # another run wrote --out meanwhile
        raise UsageError(f"--out: {e}") from e
    status = "reached" if res.reached else "NOT reached"
    print(f"{args.method}/{args.objective}: objective {status} after {res.steps} steps "
          f"({res.seconds['total']:.1f} s); forget {before['forget']:.3f} -> "
          f"{after['forget']:.3f}, retain {before['retain']:.3f} -> {after['retain']:.3f}, "
          f"test {before['test']:.3f} -> {after['test']:.3f}; wrote {args.out}")
    return 0 if res.reached else 1


def cmd_download(args) -> int:
    from torchvision import datasets

    ctor = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[args.name]
    for train in (True, False):
        ctor(args.root, train=train, download=True)
    print(f"downloaded {args.name} to {args.root}")
    return 0


COMMANDS = {"pretrain": cmd_pretrain, "unlearn": cmd_unlearn, "download": cmd_download}
