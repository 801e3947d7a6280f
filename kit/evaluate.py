"""Batched evaluation: predictions, accuracy, tidy before/after rows, results on disk."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .utils import model_device, versions

Data = Union[Dataset, tuple]  # a Dataset yielding (x, y), or a tuple of tensors (x, y)


def batches(data: Data, *, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches from a Dataset or an (x, y) tuple of tensors, in order."""
    if isinstance(data, (tuple, list)):
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
    else:
        yield from DataLoader(data, batch_size=batch_size, shuffle=False)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put `model` in eval mode inside the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def predict_logits(model: torch.nn.Module, data: Data, *, batch_size: int = 512
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) on CPU, model in eval mode, under inference_mode."""
    device = model_device(model)
    out, labels = [], []
    with eval_mode(model), torch.inference_mode():
        for x, y in batches(data, batch_size=batch_size):
            out.append(model(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    return torch.cat(out), torch.cat(labels)


def predict(model: torch.nn.Module, data: Data, *, batch_size: int = 512
            ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and labels as numpy arrays."""
    logits, labels = predict_logits(model, data, batch_size=batch_size)
    return logits.argmax(1).numpy(), labels.numpy()


def accuracy(model: torch.nn.Module, data: Data, *, batch_size: int = 512) -> float:
    """Share of examples predicted as their label, in [0, 1]; NaN for an empty set."""
    if len(data[0] if isinstance(data, (tuple, list)) else data) == 0:
        return float("nan")                               # predict has no batch to concatenate
    pred, labels = predict(model, data, batch_size=batch_size)
    return float((pred == labels).mean())


def save_results(rows, path: str | Path, *, config: dict) -> Path:
    """Write rows (a DataFrame or list of dicts) to `path` (.csv) and the config to a JSON sidecar.

    The sidecar `path.with_suffix('.json')` holds `config` plus library versions, so every
    table on disk says how it was made. Both files are written to temporary names first and
    renamed, so an error never leaves a half-written result behind.
    """
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    sidecar = path.with_suffix(".json")
    tmp_csv, tmp_json = path.with_suffix(".csv.tmp"), path.with_suffix(".json.tmp")
    frame.to_csv(tmp_csv, index=False)
    tmp_json.write_text(json.dumps({"config": config, "versions": versions()}, indent=2,
                                   default=str))
    tmp_csv.replace(path)
    tmp_json.replace(sidecar)
    return path
