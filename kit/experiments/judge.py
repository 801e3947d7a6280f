"""Judge unlearning methods against retraining from scratch on D_r, the field's gold standard.

Driving D_f accuracy to 0 (Cha et al., AAAI 2024) is a behavioural target, not proof that
the information is gone (docs/method.md, last section). `judge` puts the paper's methods and
the baselines of `kit.baselines` beside a model retrained without D_f, on the same request:
accuracy on D_f / D_r / D_test and its gap to the retrained model, prediction agreement and
KL divergence to it (`kit.evaluation.metrics`), the membership-inference member rate on D_f and its gap
to the retrained model's (`kit.evaluation.privacy`), and the cost as a share of retraining time.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch.utils.data import Subset

from ..baselines import BASELINES
from ..core.data import DataBundle
from ..core.predict import predict_proba
from ..core.request import ForgetRequest
from ..core.utils import check_names, model_device, progress
from ..evaluation.metrics import agreement, mean_kl
from ..evaluation.neighbourhood import neighbourhood_accuracy
from ..evaluation.privacy import MIA_ATTACKS, membership_inference
from ..method.config import UnlearnConfig
from ..method.recipes import resolve
from .cache import baselined, pretrained, unlearned, weights_hash
from .runs import RUN_METHODS

DEFAULT_BASELINES = tuple(n for n in BASELINES if n != "retrain")
SPLITS = ("forget", "retain", "test")
COLUMNS = ["method", "family", "needs_retain", "k", "seed",
           "acc_forget", "acc_retain", "acc_test", "acc_forget_shift", "acc_forget_noise",
           "mia_auc", "mia_member_rate",
           "agree_forget", "agree_test", "kl_forget", "kl_test",
           "gap_forget", "gap_retain", "gap_test", "mia_gap", "seconds", "share_of_retrain", "passes",
           "passes_share_of_retrain"]


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
    row.update({f"acc_forget_{name}": v for name, v in
                neighbourhood_accuracy(model, *sets["forget"]).items()})
    mia = membership_inference(model, members=sets["retain"], non_members=sets["test"],
                               targets=sets["forget"], attack=attack, seed=seed,
                               max_samples=retain_max)
    row.update(mia_auc=mia["auc"], mia_member_rate=mia["member_rate"])
    return row, probs


def judge(base, data: DataBundle, *, methods=("neggrad", "adv", "adv+imp"),
          baselines=DEFAULT_BASELINES, ks=(32,), seeds=(0,), attack: str = "loss_logreg",
          config: UnlearnConfig | None = None, train_preset: str = "default",
          retrain_epochs: int | None = None, cache_dir: str | Path = "artifacts/checkpoints",
          retain_max: int = 2000, baseline_hp: dict | None = None) -> pd.DataFrame:
    """One row per (model, k, seed): the pre-trained model, the retrained reference, every
    paper method and every baseline, each judged against the reference on the same request.

    base: the pre-trained kit model (`base.config["arch"]`); data: its DataBundle.
    methods: names in kit.experiments.runs.RUN_METHODS (the paper's methods and "oracle"),
        run by `kit.experiments.cache.unlearned` (cached) with the resolved `config`.
    baselines: names in kit.baselines.BASELINES, each run on a copy of base by
        `kit.experiments.cache.baselined` (cached under cache_dir by the same kind of key);
        only entries flagged needs_retain get D_r. A name may carry a
        label, "NAME@LABEL" (e.g. "neggrad_plus@stop"), to run one baseline twice under
        other hyper-parameters; the row's method is the full name. baseline_hp: name (with
        its label, if any) -> hyper-parameters for that baseline (defaults: its signature).
    Reference: `pretrained(..., retain_idx=D_r, tag="retrain")` with training preset
        `train_preset` (the pre-training recipe; `retrain_epochs` overrides its epochs, e.g.
        1 in tests), cached under cache_dir; its training time (kit.core.train history, per-epoch
        test evaluation included) is the denominator of share_of_retrain; its epochs * |D_r|
        example-passes that of passes_share_of_retrain (machine-free; see
        kit.method.engine.new_passes; NaN for baselines, which do not count theirs).
    attack: a name in kit.evaluation.privacy.MIA_ATTACKS, trained on D_r (members) vs D_test.
    retain_max: D_r is evaluated on a seeded sample of at most this many instances (the MIA
        members too), so a run costs seconds of evaluation on any data set.
    Columns (accuracies, agreements and rates in [0, 1], KL in nats, seconds wall clock):
    see COLUMNS. gap_* = |acc - retrain's acc|, mia_gap = |member rate - retrain's|,
    agree_* / kl_* = agreement with / mean KL(retrain || model) on D_f and D_test. The
    pre-trained row costs 0 seconds; the retrain row is the reference (gaps 0, agreement 1).
    """
    check_names(methods, dict.fromkeys(RUN_METHODS), "method(s)")
    config = resolve("default") if config is None else config
    entry = {name: name.split("@")[0] for name in baselines}   # "NAME@LABEL" -> NAME
    check_names(list(entry.values()), BASELINES, "baseline(s)")
    check_names([attack], MIA_ATTACKS, "attack")
    baseline_hp = dict(baseline_hp or {})
    check_names([n.split("@")[0] for n in baseline_hp], BASELINES, "baseline_hp key(s)")
    for name, hp in baseline_hp.items():
        check_names(hp, BASELINES[name.split("@")[0]].defaults,
                    f"hyper-parameter(s) of {name!r}")
    if retain_max < 2:
        raise ValueError(f"retain_max must be >= 2 (the attacker needs members); got {retain_max}")
    arch = base.config["arch"]
    device = str(model_device(base))
    base_id = weights_hash(base)
    rows = []
    bar = progress(total=len(seeds) * len(ks) * (2 + len(methods) + len(baselines)),
                   desc="judge", unit="model")
    for seed in seeds:
        for k in ks:
            req = ForgetRequest.draw(data, k, seed=seed)
            r_idx, fx, fy = req.retain_idx, req.x, req.y
            r = req.retain_sample(retain_max)
            sets = {"forget": (fx, fy), "retain": Subset(data.train, r.tolist()),
                    "test": data.test}
            ref_model, _, history = pretrained(
                data=data, arch=arch, seed=seed, retain_idx=r_idx, tag="retrain",
                train_preset=train_preset, epochs=retrain_epochs, cache_dir=cache_dir,
                device=device)
            ref_seconds = float(history["seconds"].iloc[-1])  # from the cache when cached
            ref_passes = float(len(history) * len(r_idx))    # epochs * |D_r| training passes
            ref_row, ref_probs = _evaluate(ref_model, sets, None, attack=attack, seed=seed,
                                           retain_max=retain_max)
            bar.update()

            def judged(model):
                row = _evaluate(model, sets, ref_probs, attack=attack, seed=seed,
                                retain_max=retain_max)[0]
                bar.update()                               # one model judged
                return row

            # (method, family, needs_retain, measures, seconds, example-passes)
            done = [("pretrained", "reference", False, judged(base), 0.0, 0.0),
                    ("retrain", "reference", True, ref_row, ref_seconds, ref_passes)]
            for method in methods:
                model, run = unlearned(base, data, req, method=method, config=config,
                                       cache_dir=cache_dir, base_id=base_id)
                oracle = method == "oracle"
                done.append((method, "oracle" if oracle else "paper", oracle, judged(model),
                             float(run["sec_total"]), float(run["passes_total"])))
            for name in baselines:
                model, out = baselined(base, data, req, name=entry[name],
                                       hp=baseline_hp.get(name, {}), cache_dir=cache_dir,
                                       base_id=base_id)
                done.append((name, "baseline", BASELINES[entry[name]].needs_retain,
                             judged(model), float(out["seconds"]), float("nan")))
            for method, family, needs, row, seconds, passes in done:
                rows.append({"method": method, "family": family, "needs_retain": needs,
                             "k": k, "seed": seed, **row,
                             **{f"gap_{s}": abs(row[f"acc_{s}"] - ref_row[f"acc_{s}"])
                                for s in SPLITS},
                             "mia_gap": abs(row["mia_member_rate"] - ref_row["mia_member_rate"]),
                             "seconds": seconds, "share_of_retrain": seconds / ref_seconds,
                             "passes": passes, "passes_share_of_retrain": passes / ref_passes})
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)
