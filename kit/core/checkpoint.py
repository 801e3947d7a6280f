"""Checkpoints: weights (.pt, loaded with weights_only=True) plus a JSON sidecar."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from .models import Classifier, create_model
from .files import atomic_write_group, folder_lock
from .utils import versions


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the requested architecture or data set, or its weights
    are not the ones its sidecar describes (torn, truncated or swapped)."""


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(model: Classifier, path: str | Path, *, dataset: str, seed: int | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Save weights to `path` (.pt) and {architecture, data set, classes, normalisation,
    seed, metrics, versions, sha256 of the weights file} to the sidecar `path` with .json.

    Both files are written to unique temporary names, fsynced, then renamed together under
    a lock on their folder: a failure never leaves a torn file, concurrent savers of one
    path never leave weights beside another save's sidecar, and a reader that still meets
    such a pair (e.g. a copied file) notices it by the hash.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"a checkpoint path must end in .pt (its sidecar is the .json beside "
                         f"it); got '{path}'")
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    blob = buf.getvalue()
    meta = {**model.config, "dataset": dataset, "seed": seed, "metrics": metrics or {},
            **(extra or {}), "sha256": hashlib.sha256(blob).hexdigest(), "versions": versions()}
    text = json.dumps(meta, indent=2, default=str)
    atomic_write_group({path: lambda t: t.write_bytes(blob),
                        sidecar_path(path): lambda t: t.write_text(text)})
    return path


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist; pre-train one with "
                                f"`python -m kit pretrain --out {path}` or notebook 00")
    if not side.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' has no sidecar '{side}'; the kit needs it "
                                f"to rebuild the architecture (save with kit.save_checkpoint)")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointMismatch(f"sidecar '{side}' is not valid JSON ({e}); it was cut short "
                                 f"or edited: re-save the checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointMismatch(f"sidecar '{side}' holds a JSON {type(meta).__name__}, not the "
                                 f"object save_checkpoint writes: re-save the checkpoint")
    return meta


_MODEL_KEYS = ("arch", "num_classes", "in_channels", "image_size", "mean", "std")


def load_checkpoint(path: str | Path, *, arch: str | None = None, dataset: str | None = None,
                    num_classes: int | None = None, map_location="cpu") -> Classifier:
    """Rebuild the model recorded in the sidecar and load its weights (weights_only=True).

    arch/dataset/num_classes, when given, must match the checkpoint; a mismatch raises
    `CheckpointMismatch` naming both sides, instead of a shape traceback.
    """
    with folder_lock(Path(path).parent, shared=True):  # not between a saver's two renames
        meta = read_sidecar(path)
        blob = Path(path).read_bytes()
    missing_keys = [k for k in _MODEL_KEYS if k not in meta]
    if missing_keys:
        raise CheckpointMismatch(f"sidecar '{sidecar_path(path)}' lacks {missing_keys}; it was "
                                 f"cut short or edited: re-save the checkpoint")
    for key, want in (("arch", arch), ("dataset", dataset), ("num_classes", num_classes)):
        if want is not None and meta.get(key) != want:
            raise CheckpointMismatch(
                f"checkpoint '{path}' was trained with {key}={meta.get(key)!r}, but "
                f"{key}={want!r} was requested; use a checkpoint made for {want!r} or pre-train one")
    model = create_model(meta["arch"], num_classes=meta["num_classes"],
                         in_channels=meta["in_channels"], image_size=meta["image_size"],
                         mean=meta["mean"], std=meta["std"])
    if "sha256" in meta and hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointMismatch(f"weights in '{path}' are not the ones its sidecar describes "
                                 f"(sha256 differs): the file is torn, truncated or swapped; "
                                 f"re-save the checkpoint")
    try:
        state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError) as e:
        raise CheckpointMismatch(f"weights in '{path}' cannot be read ({type(e).__name__}: "
                                 f"{e}); re-save the checkpoint") from None
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
