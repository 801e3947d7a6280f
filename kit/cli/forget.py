"""The deletion request of a command line: --forget-k, --forget-ids or --forget-class.

--forget-ids FILE holds training-set indices (a .npy file, or text: one per line or
comma/space separated) or, for a `folder:PATH` data set, one image path per line relative
to PATH/train (`cat/img_003.png`), mapped through ImageFolder's sorted `samples`.
--forget-class C selects every training instance of class C (an index, or a class name).
--earlier-ids FILE (unlearn, continual unlearning) names, in the same format, the instances
earlier requests made the model forget.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from ..core.data import labels_of
from ..core.request import ForgetRequest
from ..method.config import METHODS
from .inputs import UsageError, existing_file, first_few, read_ints


def _image_folder(data):
    """The ImageFolder behind data.train, or None (only those have file names)."""
    train = data.train
    return train if hasattr(train, "samples") and hasattr(train, "root") else None


def _key(path: str) -> str:
    return os.path.normpath(path.replace("\\", "/")).replace(os.sep, "/")


def train_paths(data) -> list[str]:
    """The training images of a folder data set as paths relative to its train folder, in
    index order (forget id i is the file `train_paths(data)[i]`)."""
    folder = _image_folder(data)
    root = os.path.abspath(folder.root)
    return [_key(os.path.relpath(os.path.abspath(p), root)) for p, _ in folder.samples]


def ids_from_paths(data, lines: list[str], path: str, flag: str = "--forget-ids") -> np.ndarray:
    """Training indices of image paths (relative to the train folder, or absolute)."""
    known = {p: i for i, p in enumerate(train_paths(data))}
    root = os.path.abspath(_image_folder(data).root)
    ids, bad = [], []
    for line in lines:
        key = line if not os.path.isabs(line) else os.path.relpath(line, root)
        i = known.get(_key(key))
        if i is None:
            bad.append(line)
        else:
            ids.append(i)
    if bad:
        example = next(iter(known), "CLASS/IMAGE.png")
        raise UsageError(f"{flag} file '{path}': {len(bad)} of {len(lines)} entries are not "
                         f"training images of {data.name}: {first_few(bad)} (give integer ids, "
                         f"or paths relative to the train folder '{root}', e.g. '{example}')")
    return np.asarray(ids, dtype=np.int64)


def read_forget_ids(path: str, data, flag: str = "--forget-ids") -> np.ndarray:
    """Forget ids from a file of integers, or of image paths for a folder data set."""
    p = existing_file(path, flag)
    if p.suffix == ".npy" or _image_folder(data) is None:
        return read_ints(path, flag)
    text = p.read_text()
    tokens = text.replace(",", " ").split()
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        pass
    lines = [s.strip() for s in text.splitlines()]
    lines = [s for s in lines if s and not s.startswith("#")]
    counts = Counter(map(_key, lines))
    if len(counts) != len(lines):
        dup = [k for k, n in counts.items() if n > 1]
        raise UsageError(f"{flag} file '{path}' names some images twice: {first_few(dup)}; "
                         f"each instance can be forgotten once")
    return ids_from_paths(data, lines, path, flag)


def class_index(text: str, data) -> int:
    """A class given by name (as in data.class_names) or by index."""
    names = list(data.class_names)
    if text in names:
        return names.index(text)
    try:
        c = int(text)
    except ValueError:
        c = None
    if c is None or not 0 <= c < data.num_classes:
        raise UsageError(f"--forget-class {text!r} is not a class of {data.name}: give an index "
                         f"0..{data.num_classes - 1} or a name among {first_few(names, 10)}")
    return c


def class_ids(text: str, data) -> np.ndarray:
    """Every training index of class `text` (name or index), sorted."""
    c = class_index(text, data)
    ids = np.flatnonzero(labels_of(data.train) == c)
    if not len(ids):
        raise UsageError(f"--forget-class {text!r}: class {c} ({data.class_names[c]!r}) has no "
                         f"training instances in {data.name}")
    if len(ids) == len(data.train):
        raise UsageError(f"--forget-class {text!r} would forget the whole training set")
    return ids


def build_request(args, data) -> ForgetRequest:
    """The ForgetRequest of --forget-k/--forget-ids/--forget-class (+ --objective and
    --new-labels); every id is checked against the data set."""
    new = read_ints(args.new_labels, "--new-labels") if args.new_labels else None
    if args.forget_ids is not None:
        ids = read_forget_ids(args.forget_ids, data)
    elif getattr(args, "forget_class", None) is not None:
        ids = class_ids(args.forget_class, data)
    else:
        req = ForgetRequest.draw(data, args.forget_k, seed=args.seed, objective=args.objective)
        if new is None:
            return req
        ids = req.forget_idx
    if new is not None and len(new) != len(ids):
        raise UsageError(f"--new-labels has {len(new)} labels for {len(ids)} forget instances; "
                         f"give one new label per instance, in order")
    return ForgetRequest.from_ids(data, ids, objective=args.objective, new_labels=new,
                                  seed=args.seed)


def earlier_request(args, data, req: ForgetRequest) -> ForgetRequest | None:
    """The instances of --earlier-ids as a ForgetRequest (ids checked like --forget-ids), or
    None; refused when the method has no anchors and they are not held (--hold), or an id is
    also in this request. Sets args.hold: None becomes True with --objective misclassify."""
    relabel, args.hold = args.objective == "relabel", getattr(args, "hold", None)
    if args.hold and (relabel or not args.earlier_ids):
        why = "--objective relabel" if relabel else "no --earlier-ids"
        raise UsageError(f"--hold keeps earlier forgotten instances misclassified, and this "
                         f"run has {why}; leave --hold out")
    args.hold = bool(args.earlier_ids) and not relabel and args.hold is not False
    if not getattr(args, "earlier_ids", None):
        return None
    if not METHODS[args.method]["adv"] and not args.hold:
        raise UsageError(f"--earlier-ids joins the ADV anchors, and --method {args.method} has "
                         f"none; use --method adv or adv+imp, --hold, or leave --earlier-ids "
                         f"out")
    ids = read_forget_ids(args.earlier_ids, data, "--earlier-ids")
    try:
        earlier = ForgetRequest.from_ids(data, ids, seed=args.seed)
    except ValueError as e:
        raise UsageError(f"--earlier-ids: {e}") from e
    both = np.intersect1d(earlier.forget_idx, req.forget_idx)
    if len(both):
        raise UsageError(f"--earlier-ids and this request share {len(both)} "
                         f"instance{'s' * (len(both) > 1)}: "
                         f"{first_few(both.tolist())}; an instance is forgotten once, so leave "
                         f"them out of one of the two")
    return earlier


def request_record(req: ForgetRequest, data) -> dict:
    """The request for a sidecar: forget ids, and their file names for a folder data set."""
    out = {"forget_ids": req.forget_idx.tolist()}
    if _image_folder(data) is not None:
        paths = train_paths(data)
        out["forget_paths"] = [paths[i] for i in req.forget_idx]
    return out
