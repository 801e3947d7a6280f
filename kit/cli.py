"""Command line: `python -m kit pretrain | unlearn | download`.

The unlearning options are generated from `kit.unlearn.UnlearnConfig`, so `--help` shows
the real defaults of the chosen recipe and there is no second copy of them here.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from .unlearn import METHODS, RECIPES, UnlearnConfig


class UsageError(ValueError):
    """Bad input on the command line; printed without a traceback, exit status 2."""


def read_ints(path: str, what: str) -> np.ndarray:
    """Integers from a .npy file or a text file (one per line, or comma/space separated)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file '{path}' does not exist")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        tokens = p.read_text().replace(",", " ").split()
        try:
            arr = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise UsageError(f"{what} file '{path}' must hold integers only ({e})") from None
    return np.asarray(arr).reshape(-1)


def _add_config_options(parser: argparse.ArgumentParser, base: UnlearnConfig) -> None:
    group = parser.add_argument_group("unlearning hyper-parameters (defaults: recipe 'default')")
    for f in dataclasses.fields(base):
        default = getattr(base, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            group.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"),
                               default=None, metavar="BOOL", help=f"(default: {default})")
        else:
            group.add_argument(flag, type=type(default), default=None,
                               help=f"(default: {default})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kit", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train a classifier and save a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", help="registry name or folder:PATH")
    p.add_argument("--root", default=None, help="data folder (default $KIT_DATA or ./data)")
    p.add_argument("--arch", default="cnn", help="model registry name")
    p.add_argument("--preset", default="default", help="training preset: default | cifar")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--image-size", type=int, default=None, help="folder/imagenet image size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="checkpoint path (.pt; sidecar .json beside it)")

    u = sub.add_parser("unlearn", help="apply one deletion request to a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    u.add_argument("--checkpoint", required=True)
    u.add_argument("--dataset", default="mnist5k", help="registry name or folder:PATH")
    u.add_argument("--root", default=None, help="data folder (default $KIT_DATA or ./data)")
    u.add_argument("--image-size", type=int, default=None, help="folder/imagenet image size")
    who = u.add_mutually_exclusive_group(required=True)
    who.add_argument("--forget-k", type=int, help="forget k training instances drawn at random")
    who.add_argument("--forget-ids", help="file of training-set indices to forget")
    u.add_argument("--seed", type=int, default=0, help="seeds the draw and the method")
    u.add_argument("--method", default="adv+imp", choices=list(METHODS))
    u.add_argument("--objective", default="misclassify", choices=["misclassify", "relabel"])
    u.add_argument("--new-labels", help="relabel: file of new labels, one per forget instance "
                                        "(default: drawn at random among the other classes)")
    u.add_argument("--recipe", default="default", choices=list(RECIPES))
    u.add_argument("--device", default="auto")
    u.add_argument("--out", required=True, help="output folder (model.pt, results.csv/json)")
    _add_config_options(u, RECIPES["default"])

    d = sub.add_parser("download", help="download CIFAR-10/100 with torchvision (needs internet)")
    d.add_argument("name", choices=["cifar10", "cifar100"])
    d.add_argument("--root", default="data")
    return ap


def _data_options(args) -> dict:
    return {"image_size": args.image_size} if args.image_size else {}


def cmd_pretrain(args) -> int:
    from .experiment import pretrained
    from .data import load_dataset
    from .checkpoint import save_checkpoint
    from .evaluate import accuracy

    data = load_dataset(args.dataset, root=args.root, **_data_options(args))
    out = Path(args.out)
    model, data, history = pretrained(dataset=args.dataset, arch=args.arch, seed=args.seed,
                                      train_preset=args.preset, epochs=args.epochs, data=data,
                                      device=args.device, cache_dir=out.parent / ".cache")
    metrics = {"train_acc": accuracy(model, data.train), "test_acc": accuracy(model, data.test)}
    save_checkpoint(model, out, dataset=data.name, seed=args.seed, metrics=metrics,
                    extra={"preset": args.preset, "epochs": args.epochs})
    print(f"saved {out} (train acc {metrics['train_acc']:.4f}, test acc {metrics['test_acc']:.4f})")
    return 0


def cmd_unlearn(args) -> int:
    import torch

    from .checkpoint import check_compatible, load_checkpoint, read_sidecar, save_checkpoint
    from .data import check_indices, gather, labels_of, load_dataset, sample_forget
    from .evaluate import save_results
    from .experiment import split_accuracies
    from .unlearn import draw_new_labels, unlearn
    from .utils import resolve_device

    # --- validate everything before anything is written
    data = load_dataset(args.dataset, root=args.root, **_data_options(args))
    meta = read_sidecar(args.checkpoint)
    if meta.get("dataset") not in (None, data.name):
        raise UsageError(f"checkpoint '{args.checkpoint}' was trained on {meta['dataset']!r}, "
                         f"not {data.name!r}; pass --dataset {meta['dataset']} or another checkpoint")
    check_compatible(meta, data)
    n = len(data.train)
    if args.forget_ids:
        f_idx = check_indices(read_ints(args.forget_ids, "forget ids"), n)
        mask = np.ones(n, bool)
        mask[f_idx] = False
        r_idx = np.flatnonzero(mask)
    else:
        f_idx, r_idx = sample_forget(n, args.forget_k, seed=args.seed)
    fx, fy = gather(data.train, f_idx)
    new = None
    if args.objective == "relabel":
        if args.new_labels:
            new = torch.as_tensor(read_ints(args.new_labels, "new labels"))
            if len(new) != len(f_idx):
                raise UsageError(f"--new-labels has {len(new)} labels for {len(f_idx)} forget ids")
            if (new < 0).any() or (new >= data.num_classes).any():
                raise UsageError(f"new labels out of range: valid labels are 0..{data.num_classes - 1}")
            if (new == fy).any():
                raise UsageError("a new label equals the instance's true label; each must differ")
        else:
            new = draw_new_labels(fy, data.num_classes, seed=args.seed)
    elif args.new_labels:
        raise UsageError("--new-labels only makes sense with --objective relabel")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(UnlearnConfig)
                 if getattr(args, f.name, None) is not None}
    RECIPES[args.recipe].replace(**overrides)  # fail early on a bad value combination

    model = load_checkpoint(args.checkpoint).to(resolve_device(args.device))
    before = split_accuracies(model, data, f_idx, r_idx, new_labels=new)
    res = unlearn(model, fx, fy, objective=args.objective, new_labels=new, method=args.method,
                  recipe=args.recipe, seed=args.seed, **overrides)
    after = split_accuracies(model, data, f_idx, r_idx, new_labels=new)

    out = Path(args.out)
    row = {**res.summary(), "k": len(f_idx), "seed": args.seed, "dataset": data.name,
           "checkpoint": str(args.checkpoint),
           **{f"acc_{s}_before": v for s, v in before.items()},
           **{f"acc_{s}_after": v for s, v in after.items()}}
    config = {**res.config, "checkpoint": str(args.checkpoint), "dataset": data.name,
              "forget_ids": f_idx.tolist(),
              "new_labels": None if new is None else new.tolist(),
              "flip_step": res.flip_step.tolist()}
    save_checkpoint(model, out / "model.pt", dataset=data.name, seed=args.seed,
                    metrics=after, extra={"unlearned_from": str(args.checkpoint),
                                          "method": args.method, "objective": args.objective,
                                          "forget_ids": f_idx.tolist()})
    save_results([row], out / "results.csv", config=config)
    status = "reached" if res.reached else "NOT reached"
    print(f"{args.method}/{args.objective}: objective {status} after {res.steps} steps "
          f"({res.seconds['total']:.1f} s); forget {before['forget']:.3f} -> {after['forget']:.3f}, "
          f"retain {before['retain']:.3f} -> {after['retain']:.3f}, "
          f"test {before['test']:.3f} -> {after['test']:.3f}; wrote {out}")
    return 0 if res.reached else 1


def cmd_download(args) -> int:
    from torchvision import datasets

    ctor = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[args.name]
    for train in (True, False):
        ctor(args.root, train=train, download=True)
    print(f"downloaded {args.name} to {args.root}")
    return 0


def main(argv=None) -> int:
    from .checkpoint import CheckpointMismatch
    from .data import DatasetNotFound

    args = build_parser().parse_args(argv)
    try:
        return {"pretrain": cmd_pretrain, "unlearn": cmd_unlearn,
                "download": cmd_download}[args.command](args)
    except (UsageError, DatasetNotFound, CheckpointMismatch, FileNotFoundError, ValueError,
            TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
