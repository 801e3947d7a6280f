"""The held-out protocol: what is tuned on and what is reported never overlap.

Calibration (notebook 08, and any tuning anywhere) uses its own pre-trained model and its
own request seeds; the reported tables (notebooks 01-07) use a different pre-trained model
and different request seeds. A request seed draws the forget set and seeds the method.
"""
CALIBRATION = {"model_seed": 1, "request_seeds": (100, 101, 102)}
REPORT = {"model_seed": 0, "request_seeds": (0, 1, 2)}


def check_held_out(model_seed: int, seeds) -> None:
    """Raise ValueError if a reported run would reuse the calibration model or requests."""
    bad = sorted(set(seeds) & set(CALIBRATION["request_seeds"]))
    if model_seed == CALIBRATION["model_seed"] or bad:
        raise ValueError(f"model seed {model_seed} / request seeds {bad} belong to the "
                         f"calibration split {CALIBRATION}; report on {REPORT}")
