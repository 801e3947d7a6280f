"""Retrain from scratch on D_r: exact unlearning, the reference of every comparison."""
from __future__ import annotations

from ..core.models import create_model
from ..core.train import preset, train
from ..core.utils import model_device, seed_everything


def retrain(model, forget_x, forget_y, *, retain, num_classes, seed,
            train_preset: str = "default",    # kit.core.train.PRESETS: recipe of the original model
            epochs: int | None = None,        # None: the preset's (default 10); tests use 1
            lr: float | None = None,
            batch_size: int | None = None,
            augment: str | None = None):
    """Exact unlearning: train a fresh model of the same architecture on D_r only, load it.

    The gold standard every approximate method is compared with (e.g. Golatkar et al.,
    CVPR 2020; Kurmanji et al., NeurIPS 2023). Recipe: `kit.core.train.train`, preset
    `train_preset` (the pre-training recipe); None keeps the preset's value. D_f is never
    seen. Needs a kit model (`model.config` from `kit.core.models.create_model`).
    """
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise ValueError("retrain needs a model built by kit.core.models.create_model (it reads "
                         "model.config to build a fresh one of the same architecture)")
    recipe = preset(train_preset)
    recipe.update({k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size,
                                         augment=augment).items() if v is not None})
    seed_everything(seed)
    kwargs = {k: cfg[k] for k in ("num_classes", "in_channels", "image_size", "mean", "std")}
    fresh = create_model(cfg["arch"], **kwargs).to(model_device(model))
    history = train(fresh, retain, seed=seed, **recipe)
    model.load_state_dict(fresh.state_dict())
    n, bs = len(retain), recipe["batch_size"]
    per_epoch = n // bs if n > bs else 1                   # kit.core.train drops the last batch
    return {"steps": recipe["epochs"] * per_epoch,
            "train_loss": float(history.train_loss.iloc[-1])}
