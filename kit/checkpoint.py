"""Checkpoints: weights (.pt, loaded with weights_only=True) plus a JSON sidecar."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import Classifier, create_model
from .utils import versions


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the requested architecture or data set."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(model: Classifier, path: str | Path, *, dataset: str, seed: int | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Save weights to `path` and {architecture, data set, classes, normalisation, seed,
    metrics, versions} to the sidecar `path.with_suffix('.json')`. Writes temporary files
    first and renames them, so a failure never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**model.config, "dataset": dataset, "seed": seed, "metrics": metrics or {},
            **(extra or {}), "versions": versions()}
    tmp_pt, tmp_js = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".json.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp_pt)
    tmp_js.write_text(json.dumps(meta, indent=2, default=str))
    tmp_pt.replace(path)
    tmp_js.replace(sidecar_path(path))
    return path


def read_sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist; pre-train one with "
                                f"`python -m kit pretrain --out {path}` or notebook 00")
    if not side.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' has no sidecar '{side}'; the kit needs it "
                                f"to rebuild the architecture (save with kit.save_checkpoint)")
    return json.loads(side.read_text())


def load_checkpoint(path: str | Path, *, arch: str | None = None, dataset: str | None = None,
                    num_classes: int | None = None, map_location="cpu") -> Classifier:
    """Rebuild the model recorded in the sidecar and load its weights (weights_only=True).

    arch/dataset/num_classes, when given, must match the checkpoint; a mismatch raises
    `CheckpointMismatch` naming both sides, instead of a shape traceback.
    """
    meta = read_sidecar(path)
    for key, want in (("arch", arch), ("dataset", dataset), ("num_classes", num_classes)):
        if want is not None and meta.get(key) != want:
            raise CheckpointMismatch(
                f"checkpoint '{path}' was trained with {key}={meta.get(key)!r}, but "
                f"{key}={want!r} was requested; use a checkpoint made for {want!r} or pre-train one")
    model = create_model(meta["arch"], num_classes=meta["num_classes"],
                         in_channels=meta["in_channels"], image_size=meta["image_size"],
                         mean=meta["mean"], std=meta["std"])
    state = torch.load(path, map_location=map_location, weights_only=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointMismatch(
            f"weights in '{path}' do not fit architecture {meta['arch']!r} with "
            f"{meta['num_classes']} classes (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}); the sidecar and the weights disagree: re-save the model")
    model.load_state_dict(state)
    return model.eval()


def check_compatible(meta_or_model, data) -> None:
    """Raise CheckpointMismatch if a model/sidecar does not fit a DataBundle."""
    cfg = meta_or_model.config if isinstance(meta_or_model, Classifier) else meta_or_model
    for key, want in (("num_classes", data.num_classes), ("in_channels", data.in_channels),
                      ("image_size", data.image_size)):
        if cfg.get(key) != want:
            raise CheckpointMismatch(
                f"the model has {key}={cfg.get(key)} but data set {data.name!r} has {key}={want}; "
                f"use a checkpoint pre-trained on {data.name!r}")
