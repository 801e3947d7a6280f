"""Membership inference attacks (population attacks on per-example statistics, scikit-learn).

An attacker is trained to tell members (D_r, label 1) from non-members (D_test, label 0) from
one scalar statistic of the model's output per example, then asked about the forget set D_f.
After good unlearning D_f should look like D_test: few of its examples predicted as members,
as for a model retrained without D_f. The attacks follow the two recipes later unlearning
work uses (Cha et al., AAAI 2024, report none; see docs/method.md, last section):

- `loss_logreg`: logistic regression on the cross-entropy loss, as `simple_mia` in the
  NeurIPS 2023 Machine Unlearning challenge starting kit.
- `confidence_svc`, `entropy_svc`, `mentropy_svc`: RBF SVC (C=3, gamma="auto") on the
  true-class confidence, the prediction entropy or the modified entropy, as `SVC_MIA` of
  Jia et al., NeurIPS 2023, "Model sparsity can simplify machine unlearning" (repository
  OPTML-Group/Unlearn-Sparse), whose statistics come from Song & Mittal, USENIX Security
  2021, "Systematic evaluation of privacy risks of machine learning models".

`membership_inference(model, members=D_r, non_members=D_test, targets=D_f)` runs one attack on
a model; `membership_inference_from_stats` runs it on precomputed statistics (no model);
`mia_table` runs several attacks on several models into one tidy table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Subset

from ..core.predict import Data, predict_logits

MENTR_EPS = 1e-30  # Song & Mittal's clamp before every log in the modified entropy


def modified_entropy(probs: torch.Tensor, labels: torch.Tensor, *, eps: float = MENTR_EPS
                     ) -> torch.Tensor:
    """Modified prediction entropy (N,) of Song & Mittal (USENIX Security 2021), in nats.

    Mentr(p, y) = -(1 - p_y) log(p_y) - sum_{i != y} p_i log(1 - p_i), with every log taken
    of max(., eps) as in the authors' code (inspire-group/membership-inference-evaluation).
    It is 0 for a confident correct prediction and grows both with uncertainty and with
    confident mistakes, which plain entropy cannot tell apart from confident hits.

    probs: (N, C) probabilities, rows summing to 1; labels: (N,) integer classes in [0, C).

    Note: OPTML-Group/Unlearn-Sparse's `m_entropy` (copied into several unlearning codes)
    computes -(1 - p_y) log(p_y) - sum_{i != y} p_i log(p_i) -- log p_i where log(1 - p_i)
    belongs -- and, for a batch, indexes `p[:, labels]`, so every class that is the label of
    any example in the batch gets the true-class term in every row.

    >>> p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    >>> round(float(modified_entropy(p, torch.tensor([0]))[0]), 6)
    0.162167
    """
    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels).long()
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, C) and labels (N,); got {tuple(probs.shape)} "
                         f"and {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}); got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    true = torch.nn.functional.one_hot(labels, probs.shape[1]).bool()  # (N, C)
    log_p = torch.log(probs.clamp(min=eps))
    log_1mp = torch.log((1 - probs).clamp(min=eps))
    terms = torch.where(true, (1 - probs) * log_p, probs * log_1mp)  # (N, C)
    return -terms.sum(1)


def example_statistics(model: torch.nn.Module, data: Data, *, batch_size: int = 0
                       ) -> dict[str, np.ndarray]:
    """Per-example statistics of the model's prediction, each an (N,) numpy array.

    data: a Dataset yielding (x, y) with x in [0, 1], or a tuple of tensors (x, y).
    Returns `loss` (cross-entropy, nats), `confidence` (softmax probability of the true
    label, in [0, 1]), `entropy` (of the softmax, nats, in [0, log C]), `modified_entropy`
    (see `modified_entropy`), `labels` (int64) and `correct` (bool: argmax == label).
    Computed in float64 from the logits, model in eval mode under inference_mode.
    """
    logits, labels = predict_logits(model, data, batch_size=batch_size)
    labels = labels.long()
    log_p = torch.log_softmax(logits.double(), dim=1)  # (N, C)
    p = log_p.exp()
    rows = torch.arange(len(labels))
    return {
        "loss": (-log_p[rows, labels]).numpy(),
        "confidence": p[rows, labels].numpy(),
        "entropy": (-(p * log_p).sum(1)).numpy(),
        "modified_entropy": modified_entropy(p, labels).numpy(),
        "labels": labels.numpy(),
        "correct": (logits.argmax(1) == labels).numpy(),
    }


# ---------------------------------------------------------------- attacks registry

@dataclass(frozen=True)
class MIAAttack:
    """An attack: which statistic of `example_statistics` it reads, and its classifier."""
    statistic: str
    make_classifier: Callable[[], object]  # a fresh, unfitted scikit-learn classifier
    description: str


def _logreg():
    from sklearn.linear_model import LogisticRegression

    # the starting kit's simple_mia: default LogisticRegression on the raw loss, no scaling
    return LogisticRegression()


def _svc():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # Jia et al.'s SVC_fit_predict classifier; they do not standardise. We do, so that
    # gamma="auto" (= 1 / n_features = 1) means the same for losses, probabilities, entropies.
    return make_pipeline(StandardScaler(), SVC(C=3, gamma="auto", kernel="rbf"))


MIA_ATTACKS: dict[str, MIAAttack] = {
    "loss_logreg": MIAAttack(
        "loss", _logreg,
        "logistic regression on the per-example cross-entropy loss "
        "(NeurIPS 2023 Machine Unlearning challenge starting kit, simple_mia)"),
    "confidence_svc": MIAAttack(
        "confidence", _svc,
        "RBF SVC (C=3, gamma='auto') on the softmax probability of the true label "
        "(Jia et al., NeurIPS 2023, SVC_MIA 'confidence')"),
    "entropy_svc": MIAAttack(
        "entropy", _svc,
        "RBF SVC (C=3, gamma='auto') on the prediction entropy "
        "(Jia et al., NeurIPS 2023, SVC_MIA 'entropy')"),
    "mentropy_svc": MIAAttack(
        "modified_entropy", _svc,
        "RBF SVC (C=3, gamma='auto') on the modified entropy of Song & Mittal 2021 "
        "(Jia et al., NeurIPS 2023, SVC_MIA 'm_entropy', with the entropy fixed)"),
}


def _get_attack(name: str) -> MIAAttack:
    if name not in MIA_ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid names: {sorted(MIA_ATTACKS)}")
    return MIA_ATTACKS[name]


# ---------------------------------------------------------------- running an attack

def _num_examples(data: Data) -> int:
    return len(data[0]) if isinstance(data, (tuple, list)) else len(data)


def _subset(data: Data, idx: np.ndarray) -> Data:
    if isinstance(data, (tuple, list)):
        x, y = data
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return x[idx_t], y[idx_t]
    return Subset(data, idx.tolist())


def _balanced_indices(n_members: int, n_non_members: int, *, max_samples: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size seeded subsamples (sorted indices) of members and non-members."""
    n = min(n_members, n_non_members, max_samples)
    rng = np.random.default_rng(seed)
    return (np.sort(rng.choice(n_members, n, replace=False)),
            np.sort(rng.choice(n_non_members, n, replace=False)))


def _feature(stats, statistic: str, role: str) -> np.ndarray:
    """The attack's statistic as an (N,) float array, from a stats dict or a 1-D array."""
    if isinstance(stats, dict):
        if statistic not in stats:
            raise ValueError(f"{role} has no {statistic!r} statistic; keys: {sorted(stats)}")
        stats = stats[statistic]
    values = np.asarray(stats, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{role} must be a dict of (N,) statistics or an (N,) array; "
                         f"got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{role} {statistic!r} has {int((~np.isfinite(values)).sum())} "
                         "non-finite values")
    return values


def _run_attack(x_members: np.ndarray, x_non_members: np.ndarray, x_targets: np.ndarray, *,
                attack: str, seed: int, cv_folds: int) -> dict:
    """Cross-validate and fit the attacker on balanced features; score the targets."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    spec = _get_attack(attack)
    n = len(x_members)
    if len(x_non_members) != n:
        raise ValueError(f"members ({n}) and non-members ({len(x_non_members)}) must be balanced")
    if cv_folds < 2 or n < cv_folds:
        raise ValueError(f"need 2 <= cv_folds <= examples per side; got cv_folds={cv_folds} "
                         f"with {n} members and non-members")
    if len(x_targets) == 0:
        raise ValueError("targets is empty; pass the forget set D_f")
    X = np.concatenate([x_members, x_non_members])[:, None]  # (2n, 1)
    y = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    cv = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    scores = cross_validate(spec.make_classifier(), X, y, cv=cv,
                            scoring=("roc_auc", "accuracy"))
    clf = spec.make_classifier().fit(X, y)
    member_rate = float(clf.predict(x_targets[:, None]).mean())
    return {
        "attack": attack,
        "auc": float(scores["test_roc_auc"].mean()),
        "auc_std": float(scores["test_roc_auc"].std()),
        "accuracy": float(scores["test_accuracy"].mean()),
        "member_rate": member_rate,
        "mia_efficacy": 1.0 - member_rate,
        "n_members": n,
        "n_non_members": n,
        "n_targets": len(x_targets),
    }


def membership_inference_from_stats(*, members, non_members, targets,
                                    attack: str = "loss_logreg", seed: int = 0,
                                    max_samples: int = 2000, cv_folds: int = 5) -> dict:
    """Run one attack on precomputed statistics (no model needed).

    members, non_members, targets: each either a dict as returned by `example_statistics`
        (the attack's statistic is taken from it) or an (N,) array of that statistic.
    attack: a name in MIA_ATTACKS. seed: seeds the balancing subsample and the folds.
    max_samples: at most this many members and as many non-members are drawn (without
        replacement, seeded) so both sides have min(len(members), len(non_members),
        max_samples) examples. cv_folds: folds for the AUC (>= 2).

    Returns a dict: `attack`; `auc` (ROC AUC of the attacker on members vs non-members,
    mean over `cv_folds` stratified folds, in [0, 1], 0.5 = no membership signal) and
    `auc_std` over folds; `accuracy` (cross-validated, balanced classes, as simple_mia
    reports); `member_rate` (share of targets predicted as members by the attacker fitted on
    all balanced pairs, in [0, 1]); `mia_efficacy` = 1 - member_rate (share of targets
    predicted as non-members: Jia et al.'s "MIA-Efficacy", higher = more forgotten);
    `n_members` = `n_non_members` (examples used per side after balancing) and `n_targets`.
    """
    spec = _get_attack(attack)
    x_m = _feature(members, spec.statistic, "members")
    x_n = _feature(non_members, spec.statistic, "non_members")
    x_t = _feature(targets, spec.statistic, "targets")
    idx_m, idx_n = _balanced_indices(len(x_m), len(x_n), max_samples=max_samples, seed=seed)
    return _run_attack(x_m[idx_m], x_n[idx_n], x_t, attack=attack, seed=seed, cv_folds=cv_folds)


def membership_inference(model: torch.nn.Module, *, members: Data, non_members: Data,
                         targets: Data, attack: str = "loss_logreg", seed: int = 0,
                         max_samples: int = 2000, cv_folds: int = 5,
                         batch_size: int = 0) -> dict:
    """Attack `model`: learn members (D_r) vs non-members (D_test), then ask about targets (D_f).

    members, non_members, targets: Datasets yielding (x, y) with x in [0, 1], or tuples of
        tensors (x, y). Only the balanced subsample of members and non-members is passed
        through the model, so a 50k-example D_r costs max_samples forward passes.
    attack, seed, max_samples, cv_folds: as in `membership_inference_from_stats`, which this
        equals when given `example_statistics` of the full members and non-members.
    batch_size: examples per forward pass (0: auto for the device).
    Returns the dict described in `membership_inference_from_stats`.
    """
    spec = _get_attack(attack)
    idx_m, idx_n = _balanced_indices(_num_examples(members), _num_examples(non_members),
                                     max_samples=max_samples, seed=seed)
    stats = [example_statistics(model, d, batch_size=batch_size)
             for d in (_subset(members, idx_m), _subset(non_members, idx_n), targets)]
    features = [_feature(s, spec.statistic, role)
                for s, role in zip(stats, ("members", "non_members", "targets"))]
    return _run_attack(*features, attack=attack, seed=seed, cv_folds=cv_folds)


def mia_table(models: dict[str, torch.nn.Module], *, members: Data, non_members: Data,
              targets: Data, attacks: tuple[str, ...] = tuple(MIA_ATTACKS), seed: int = 0,
              max_samples: int = 2000, cv_folds: int = 5, batch_size: int = 0):
    """Tidy pandas DataFrame, one row per (model, attack), of `membership_inference` results.

    models: name -> model (e.g. {"pretrained": f0, "unlearned": f, "retrained": f_r}).
    Every model and attack sees the same balanced members / non-members (same seed), and
    each model's statistics are computed once for all attacks. Other arguments as in
    `membership_inference`. Columns: model, attack, auc, auc_std, accuracy, member_rate,
    mia_efficacy, n_members, n_non_members, n_targets.
    """
    import pandas as pd

    if not models:
        raise ValueError("models is empty; pass e.g. {'unlearned': model, 'retrained': reference}")
    specs = {name: _get_attack(name) for name in attacks}
    idx_m, idx_n = _balanced_indices(_num_examples(members), _num_examples(non_members),
                                     max_samples=max_samples, seed=seed)
    sets = {"members": _subset(members, idx_m), "non_members": _subset(non_members, idx_n),
            "targets": targets}
    rows = []
    for model_name, model in models.items():
        stats = {role: example_statistics(model, d, batch_size=batch_size)
                 for role, d in sets.items()}
        for name, spec in specs.items():
            features = [_feature(stats[role], spec.statistic, role) for role in sets]
            rows.append({"model": model_name,
                         **_run_attack(*features, attack=name, seed=seed, cv_folds=cv_folds)})
    return pd.DataFrame(rows)

