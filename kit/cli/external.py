"""Your own model on the command line: `--arch NAME --weights FILE [--num-classes N]
[--mean a,b,c --std a,b,c]`, and its unlearned weights written back in the same format.

NAME is a kit registry name, `torchvision:NAME` or `timm:NAME` (`kit.core.models.build_net`);
FILE is a plain state_dict (`torch.save(model.state_dict(), FILE)`), loaded with
weights_only=True and strictly. mean/std are the normalisation of your transform; without
them the model is taken to normalise itself (mean 0, std 1). The network is wrapped with
`kit.core.models.wrap`, so the kit feeds it [0, 1] pixels; what is written back is
`wrapped.net.state_dict()`, which loads strictly into the constructor you started from,
beside a sidecar (`model.json`, marked `"format": "state_dict"`) naming arch, classes,
normalisation and the request.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
from pathlib import Path

import torch

from ..core.checkpoint import sidecar_path
from ..core.models import Classifier, build_net, wrap
from ..core.files import atomic_write_group
from ..core.utils import eval_mode, versions
from .inputs import UsageError, bad_input, existing_file, first_few

FORMAT = "state_dict"          # the sidecar marker of weights in the user's own format
_SPEC_KEYS = ("arch", "num_classes", "mean", "std")


# ------------------------------------------------------------------ options
def parse_floats(text: str, flag: str) -> list[float]:
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406]; anything else is a UsageError."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        values = None
    if not values or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} {text!r} must be finite numbers separated by commas, one per "
                         f"channel, e.g. {flag} 0.485,0.456,0.406")
    return values


def model_spec(args) -> dict | None:
    """Check the model options before any file is read: None for --checkpoint, else
    {arch, num_classes, mean, std} of --arch (None where not given)."""
    given = [f for f, v in (("--weights", args.weights), ("--num-classes", args.num_classes),
                            ("--mean", args.mean), ("--std", args.std)) if v is not None]
    if args.checkpoint is not None:
        if given:
            raise UsageError(f"{', '.join(given)} only go with --arch: a kit checkpoint records "
                             f"its architecture, classes and normalisation; drop them, or give "
                             f"--arch NAME --weights FILE instead of --checkpoint")
        return None
    if args.weights is None:
        raise UsageError(f"--arch {args.arch} needs --weights FILE, your model's state_dict "
                         f"(saved with torch.save(model.state_dict(), FILE))")
    if (args.mean is None) != (args.std is None):
        raise UsageError("--mean and --std go together: give both (the normalisation of your "
                         "transform) or neither (the model normalises itself)")
    mean = parse_floats(args.mean, "--mean") if args.mean is not None else None
    std = parse_floats(args.std, "--std") if args.std is not None else None
    if mean is not None and len(mean) != len(std):
        raise UsageError(f"--mean has {len(mean)} values but --std has {len(std)}; give one "
                         f"value per channel to each")
    if std is not None and min(std) <= 0:
        raise UsageError(f"--std values must be > 0, got {std}")
    return {"arch": args.arch, "num_classes": args.num_classes, "mean": mean, "std": std}


def complete(spec: dict, data) -> dict:
    """The spec with defaults from the data set (classes; mean 0 / std 1), checked against it."""
    channels = data.in_channels
    mean = spec["mean"] if spec["mean"] is not None else [0.0] * channels
    std = spec["std"] if spec["std"] is not None else [1.0] * channels
    if len(mean) != channels or len(std) != channels:
        raise UsageError(f"--mean/--std give {len(mean)} values but {data.name} has {channels} "
                         f"channels; give one value per channel")
    n = spec["num_classes"] if spec["num_classes"] is not None else data.num_classes
    if n != data.num_classes:
        raise UsageError(f"the model has {n} classes but {data.name} has {data.num_classes} "
                         f"({first_few(data.class_names)}); pass --num-classes "
                         f"{data.num_classes} with weights for that many classes")
    return {**spec, "num_classes": n, "mean": list(mean), "std": list(std),
            "in_channels": channels, "image_size": data.image_size}


# ------------------------------------------------------------------ reading weights
def load_state(path, what: str) -> dict:
    """A plain state_dict from `path` (weights_only=True), else a UsageError."""
    existing_file(path, what)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise UsageError(f"{what} '{path}' holds pickled objects, not a plain state_dict "
                             f"(was it saved with torch.save(model)?); the kit loads weights "
                             f"only (weights_only=True): save torch.save(model.state_dict(), "
                             f"FILE)") from None
        raise UsageError(f"{what} '{path}' is not a torch weights file; save the weights with "
                         f"torch.save(model.state_dict(), FILE)") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        detail = (str(e).strip().splitlines() or ["the file is empty or cut short"])[0]
        raise UsageError(f"{what} '{path}' cannot be read as torch weights ({type(e).__name__}: "
                         f"{detail}); save them with torch.save(model.state_dict(), FILE)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("state_dict", "model", "model_state_dict")
                  if isinstance(state, dict) and isinstance(state.get(k), dict)]
        hint = f" (it holds a dict under {nested[0]!r}: save that one)" if nested else ""
        raise UsageError(f"{what} '{path}' is not a plain state_dict (a dict of tensors){hint}; "
                         f"save the weights with torch.save(model.state_dict(), FILE)")
    return state


def check_fits(net: torch.nn.Module, state: dict, path, what: str, spec: dict) -> None:
    """Raise a UsageError naming the first missing, unexpected and misshapen keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or wrong):
        return
    parts = [f"{name} {first_few(keys, 3)}" for name, keys in
             (("missing keys", missing), ("unexpected keys", unexpected),
              ("wrong shapes", wrong)) if keys]
    hint = "check --arch and --num-classes"
    if "normalize.mean" in state:
        hint = "these are a kit checkpoint's weights: pass them with --checkpoint"
    elif unexpected and all(k.startswith("module.") for k in unexpected):
        hint = "they were saved from DataParallel: strip the 'module.' prefix of every key"
    raise UsageError(f"{what} '{path}' do not fit {spec['arch']} with {spec['num_classes']} "
                     f"classes: {'; '.join(parts)}; {hint}")


def build_user_model(spec: dict, path, what: str = "--weights") -> Classifier:
    """The user's network built from a completed spec, its weights loaded strictly, wrapped,
    and checked with one forward pass on a blank image of the data set's shape."""
    state = load_state(path, what)
    with bad_input("--arch: "):
        net = build_net(spec["arch"], num_classes=spec["num_classes"],
                        in_channels=spec["in_channels"], image_size=spec["image_size"])
    check_fits(net, state, path, what, spec)
    net.load_state_dict(state, strict=True)
    model = wrap(net, mean=spec["mean"], std=spec["std"], num_classes=spec["num_classes"],
                 image_size=spec["image_size"], arch=spec["arch"])
    shape = (1, spec["in_channels"], spec["image_size"], spec["image_size"])
    try:
        with eval_mode(model), torch.inference_mode():
            out = model(torch.zeros(shape))
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"{spec['arch']} cannot take images of shape {shape} "
                         f"({str(e).strip().splitlines()[0]}); check --image-size and that "
                         f"--mean/--std have one value per input channel") from None
    if tuple(out.shape) != (1, spec["num_classes"]):
        raise UsageError(f"{spec['arch']} returns shape {tuple(out.shape)} for one image, not "
                         f"(1, {spec['num_classes']}) class scores; pass a classifier")
    return model.eval()


# ------------------------------------------------------------------ sidecars
def user_spec(meta: dict) -> dict | None:
    """The spec recorded in a sidecar the kit wrote for a user model; None for a kit checkpoint."""
    if meta.get("format") != FORMAT:
        return None
    missing = [k for k in _SPEC_KEYS if k not in meta]
    if missing:
        raise UsageError(f"sidecar lacks {missing}; it was cut short or edited")
    return {k: meta[k] for k in _SPEC_KEYS}


def check_sha(path, meta: dict) -> None:
    if "sha256" in meta and hashlib.sha256(Path(path).read_bytes()).hexdigest() != meta["sha256"]:
        raise UsageError(f"weights in '{path}' are not the ones its sidecar describes (sha256 "
                         f"differs): the file is torn, truncated or swapped")


def check_dataset(meta: dict, data, path) -> None:
    if meta.get("dataset") not in (None, data.name):
        raise UsageError(f"checkpoint '{path}' was trained on {meta['dataset']!r}, not "
                         f"{data.name!r}; pass --dataset {meta['dataset']} or another checkpoint")


def how_to_load(arch: str, num_classes: int) -> str:
    kind, _, name = arch.rpartition(":")
    ctor = {"torchvision": f"torchvision.models.get_model({name!r}, weights=None, "
                           f"num_classes={num_classes})",
            "timm": f"timm.create_model({name!r}, pretrained=False, num_classes={num_classes})"}
    net = ctor.get(kind, f"kit.core.models.build_net({arch!r}, num_classes={num_classes})")
    return f"net = {net}; net.load_state_dict(torch.load('model.pt', weights_only=True))"


def save_user_model(model: Classifier, path, *, dataset: str, extra: dict) -> Path:
    """Write `model.net.state_dict()` to `path` and the sidecar (.json) beside it."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.net.state_dict().items()}, buf)
    blob = buf.getvalue()
    cfg = model.config
    meta = {"format": FORMAT, **{k: cfg[k] for k in _SPEC_KEYS}, "in_channels": cfg["in_channels"],
            "image_size": cfg["image_size"], "dataset": dataset, **extra,
            "load": how_to_load(cfg["arch"], cfg["num_classes"]),
            "sha256": hashlib.sha256(blob).hexdigest(), "versions": versions()}
    text = json.dumps(meta, indent=2, default=str)
    atomic_write_group({Path(path): lambda t: t.write_bytes(blob),
                        sidecar_path(path): lambda t: t.write_text(text)})
    return Path(path)
