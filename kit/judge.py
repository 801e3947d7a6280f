"""Judge unlearning methods against retraining from scratch on D_r, the field's gold standard.

Driving D_f accuracy to 0 (Cha et al., AAAI 2024) is a behavioural target, not proof that
the information is gone (docs/method.md, last section). `judge` puts the paper's methods and
the baselines of `kit.baselines` beside a model retrained without D_f, on the same request:
accuracy on D_f / D_r / D_test and its gap to the retrained model, prediction agreement and
KL divergence to it (`kit.compare`), the membership-inference member rate on D_f and its gap
to the retrained model's (`kit.privacy`), and the cost as a share of retraining time.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Subset

from .baselines import BASELINES, run_baseline
from .compare import agreement, mean_kl, predict_proba
from .data import DataBundle
from .experiment import forget_request, pretrained, unlearned, weights_hash
from .privacy import MIA_ATTACKS, membership_inference
from .unlearn import METHODS
from .utils import model_device

DEFAULT_BASELINES = tuple(n for n in BASELINES if n != "retrain")
SPLITS = ("forget", "retain", "test")
COLUMNS = ["method", "family", "needs_retain", "k", "seed",
           "acc_forget", "acc_retain", "acc_test", "mia_auc", "mia_member_rate",
           "agree_forget", "agree_test", "kl_forget", "kl_test",
           "gap_forget", "gap_retain", "gap_test", "mia_gap", "seconds", "share_of_retrain"]


def _check_names(names, registry: dict, what: str) -> None:
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid names: {', '.join(registry)}")


def _evaluate(model, sets: dict, ref: dict | None, *, attack: str, seed: int,
              retain_max: int) -> tuple[dict, dict]:
    """Accuracies, agreement/KL to the reference probabilities `ref`, MIA on D_f.

    sets: split -> data (forget, retain sample, test). Returns (row, probabilities per split).
    """
    probs, row = {}, {}
    for split, d in sets.items():
        p, y = predict_proba(model, d)                     # (N, C), (N,)
        probs[split] = p
        row[f"acc_{split}"] = float((p.argmax(1) == y).mean())
    ref = probs if ref is None else ref                    # the reference against itself
    for split in ("forget", "test"):
        row[f"agree_{split}"] = agreement(probs[split], ref[split])
        row[f"kl_{split}"] = mean_kl(ref[split], probs[split])
    mia = membership_inference(model, members=sets["retain"], non_members=sets["test"],
                               targets=sets["forget"], attack=attack, seed=seed,
                               max_samples=retain_max)
    row.update(mia_auc=mia["auc"], mia_member_rate=mia["member_rate"])
    return row, probs


def judge(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"),
          baselines=DEFAULT_BASELINES, ks=(32,), seeds=(0,), attack: str = "loss_logreg",
          recipe: str = "default", train_preset: str = "default",
          retrain_epochs: int | None = None, cache_dir: str | Path = "artifacts/checkpoints",
          retain_max: int = 2000, baseline_hp: dict | None = None, **overrides) -> pd.DataFrame:
    """One row per (model, k, seed): the pre-trained model, the retrained reference, every
    paper method and every baseline, each judged against the reference on the same request.

    base: the pre-trained kit model (`base.config["arch"]`); data: its DataBundle.
    methods: names in kit.unlearn.METHODS, run by `kit.experiment.unlearned` (cached) with
        `recipe` and `overrides`. baselines: names in kit.baselines.BASELINES, each run on a
        deep copy of base; only entries flagged needs_retain get D_r. baseline_hp: name ->
        hyper-parameters for that baseline (defaults: its signature).
    Reference: `pretrained(..., retain_idx=D_r, tag="retrain")` with training preset
        `train_preset` (the pre-training recipe; `retrain_epochs` overrides its epochs, e.g.
        1 in tests), cached under cache_dir; its training time (kit.train history, per-epoch
        test evaluation included) is the denominator of share_of_retrain.
    attack: a name in kit.privacy.MIA_ATTACKS, trained on D_r (members) vs D_test.
    retain_max: D_r is evaluated on a seeded sample of at most this many instances (the MIA
        members too), so a run costs seconds of evaluation on any data set.
    Columns (accuracies, agreements and rates in [0, 1], KL in nats, seconds wall clock):
    see COLUMNS. gap_* = |acc - retrain's acc|, mia_gap = |member rate - retrain's|,
    agree_* / kl_* = agreement with / mean KL(retrain || model) on D_f and D_test. The
    pre-trained row costs 0 seconds; the retrain row is the reference (gaps 0, agreement 1).
    """
    _check_names(methods, METHODS, "method(s)")
    _check_names(baselines, BASELINES, "baseline(s)")
    _check_names([attack], MIA_ATTACKS, "attack")
    baseline_hp = dict(baseline_hp or {})
    _check_names(baseline_hp, BASELINES, "baseline_hp key(s)")
    for name, hp in baseline_hp.items():
        _check_names(hp, BASELINES[name].defaults, f"hyper-parameter(s) of {name!r}")
    if retain_max < 2:
        raise ValueError(f"retain_max must be >= 2 (the attacker needs members); got {retain_max}")
    arch = base.config["arch"]
    device = str(model_device(base))
    base_id = weights_hash(base)
    rows = []
    for seed in seeds:
        for k in ks:
            _, r_idx, fx, fy = forget_request(data, k=k, seed=seed)
            r = np.asarray(r_idx)
            if len(r) > retain_max:
                r = np.sort(np.random.default_rng(seed).choice(r, retain_max, replace=False))
            sets = {"forget": (fx, fy), "retain": Subset(data.train, r.tolist()),
                    "test": data.test}
            ref_model, _, history = pretrained(
                data=data, arch=arch, seed=seed, retain_idx=r_idx, tag="retrain",
                train_preset=train_preset, epochs=retrain_epochs, cache_dir=cache_dir,
                device=device)
            ref_seconds = float(history["seconds"].iloc[-1])  # from the cache when cached
            ref_row, ref_probs = _evaluate(ref_model, sets, None, attack=attack, seed=seed,
                                           retain_max=retain_max)

            def judged(model):
                return _evaluate(model, sets, ref_probs, attack=attack, seed=seed,
                                 retain_max=retain_max)[0]

            # (method, family, needs_retain, measures, seconds)
            done = [("pretrained", "reference", False, judged(base), 0.0),
                    ("retrain", "reference", True, ref_row, ref_seconds)]
            for method in methods:
                model, run = unlearned(base, data, method=method, k=k, seed=seed, recipe=recipe,
                                       cache_dir=cache_dir, base_id=base_id, **overrides)
                done.append((method, "paper", False, judged(model), float(run["sec_total"])))
            for name in baselines:
                model, needs = copy.deepcopy(base), BASELINES[name].needs_retain
                retain = Subset(data.train, list(map(int, r_idx))) if needs else None
                out = run_baseline(name, model, fx, fy, retain=retain, num_classes=data.num_classes,
                                   seed=seed, **baseline_hp.get(name, {}))
                done.append((name, "baseline", needs, judged(model), float(out["seconds"])))
            for method, family, needs, row, seconds in done:
                rows.append({"method": method, "family": family, "needs_retain": needs,
                             "k": k, "seed": seed, **row,
                             **{f"gap_{s}": abs(row[f"acc_{s}"] - ref_row[f"acc_{s}"])
                                for s in SPLITS},
                             "mia_gap": abs(row["mia_member_rate"] - ref_row["mia_member_rate"]),
                             "seconds": seconds, "share_of_retrain": seconds / ref_seconds})
    return pd.DataFrame(rows, columns=COLUMNS)


# metric -> (summary column, scale, decimals)
SUMMARY = {"acc_forget": ("forget %", 100, 1), "acc_retain": ("retain %", 100, 1),
           "acc_test": ("test %", 100, 1), "mia_auc": ("MIA AUC %", 100, 1),
           "mia_member_rate": ("MIA member %", 100, 1),
           "mia_gap": ("MIA gap %", 100, 1), "agree_test": ("agree test %", 100, 1),
           "kl_test": ("KL test", 1, 3), "gap_test": ("gap test %", 100, 1),
           "share_of_retrain": ("cost % retrain", 100, 1)}


def judge_summary(df: pd.DataFrame, *, metrics=tuple(SUMMARY)) -> pd.DataFrame:
    """Mean ± std over seeds per (method, k), as 'mean ± std' strings (like `paper_table`).

    metrics: columns of `judge`'s table, among SUMMARY (rates shown in %, KL in nats).
    Keeps family and needs_retain; rows in the order of the table.
    """
    _check_names(metrics, SUMMARY, "metric(s)")
    g = df.groupby(["method", "k"], sort=False)
    out = g[["family", "needs_retain"]].first()
    for m in metrics:
        name, scale, dec = SUMMARY[m]
        mean, std = g[m].mean() * scale, g[m].std().fillna(0.0) * scale
        out[name] = [f"{a:.{dec}f} ± {b:.{dec}f}" for a, b in zip(mean, std)]
    out["runs"] = g.size()
    return out.reset_index()


def tradeoff_table(df: pd.DataFrame, *, k: int | None = None) -> pd.DataFrame:
    """Rows for `kit.figures.plot_tradeoff`: method, utility (acc_test), mia_gap, needs_retain.

    k: the forget-set size to draw (None: the largest in df); one row per seed.
    """
    k = int(df["k"].max()) if k is None else k
    if k not in set(df["k"]):
        raise ValueError(f"k={k} is not in the table; available: {sorted(set(df['k']))}")
    sel = df[df["k"] == k]
    return pd.DataFrame({"method": sel["method"], "utility": sel["acc_test"],
                         "mia_gap": sel["mia_gap"], "needs_retain": sel["needs_retain"],
                         "k": sel["k"], "seed": sel["seed"]}).reset_index(drop=True)
