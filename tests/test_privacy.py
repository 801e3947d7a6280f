import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kit.evaluation.privacy import (MIA_ATTACKS, example_statistics, membership_inference,
                                    membership_inference_from_stats, mia_table,
                                    modified_entropy)


from _tiny import tiny_data as _data  # noqa: E402
from _tiny import tiny_model as _tiny_model  # noqa: E402


# ---------------------------------------------------------------- modified entropy

def test_modified_entropy_matches_hand_computation():
    # p = (0.7, 0.2, 0.1). Song & Mittal: -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    y0 = -(0.3 * math.log(0.7)) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)  # 0.162167
    y1 = -(0.8 * math.log(0.2)) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9)  # 2.141...
    assert float(modified_entropy(p, torch.tensor([0]))[0]) == pytest.approx(y0, abs=1e-12)
    assert float(modified_entropy(p, torch.tensor([1]))[0]) == pytest.approx(y1, abs=1e-12)
    assert y0 == pytest.approx(0.162167, abs=1e-6)


def test_modified_entropy_differs_from_unlearn_sparse_variant():
    # OPTML-Group/Unlearn-Sparse m_entropy: log p_i where log(1 - p_i) belongs (i != y):
    # -(1 - p_y) log p_y - sum_{i != y} p_i log p_i
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    broken = -(0.3 * math.log(0.7)) - 0.2 * math.log(0.2) - 0.1 * math.log(0.1)  # 0.659
    assert abs(float(modified_entropy(p, torch.tensor([0]))[0]) - broken) > 0.4


def test_modified_entropy_batch_equals_rows():
    # Unlearn-Sparse also writes p[:, labels], mixing up rows of a batch with distinct labels
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    batch = modified_entropy(p, labels)
    rows = torch.cat([modified_entropy(p[i:i + 1], labels[i:i + 1]) for i in range(3)])
    assert torch.equal(batch, rows)


def test_modified_entropy_clamps_and_orders():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    m = modified_entropy(p, torch.tensor([0, 0]))
    assert float(m[0]) == 0.0  # confident and right
    assert float(m[1]) == pytest.approx(-2 * math.log(1e-30))  # confident and wrong: finite
    with pytest.raises(ValueError, match="labels must lie"):
        modified_entropy(p, torch.tensor([0, 3]))


# ---------------------------------------------------------------- statistics

def test_example_statistics_hand_and_input_forms():
    model = _tiny_model()
    x, y = _data(20, seed=1)
    model.train()
    stats = example_statistics(model, (x, y), batch_size=7)
    assert model.training  # mode restored
    with torch.no_grad():
        logits = model(x).double()
    p = logits.softmax(1)
    rows = torch.arange(20)
    np.testing.assert_allclose(stats["loss"], nn.functional.cross_entropy(logits, y, reduction="none"), rtol=1e-6)
    np.testing.assert_allclose(stats["confidence"], p[rows, y], rtol=1e-6)
    np.testing.assert_allclose(stats["entropy"], -(p * p.log()).sum(1), rtol=1e-6)
    np.testing.assert_allclose(stats["modified_entropy"], modified_entropy(p, y), rtol=1e-6)
    np.testing.assert_array_equal(stats["correct"], (logits.argmax(1) == y).numpy())
    from_dataset = example_statistics(model, TensorDataset(x, y), batch_size=5)
    for key in stats:
        np.testing.assert_allclose(from_dataset[key], stats[key], rtol=1e-6)


# ---------------------------------------------------------------- attacks on statistics

@pytest.mark.parametrize("attack", sorted(MIA_ATTACKS))
def test_attack_separates_separated_losses(attack):
    rng = np.random.default_rng(0)
    members, non_members = rng.normal(0.1, 0.05, 300), rng.normal(2.0, 0.5, 300)
    like_members, like_non_members = rng.normal(0.1, 0.05, 100), rng.normal(2.0, 0.5, 100)
    r = membership_inference_from_stats(members=members, non_members=non_members,
                                        targets=like_members, attack=attack)
    assert r["auc"] > 0.95
    assert r["member_rate"] > 0.95 and r["mia_efficacy"] < 0.05
    r = membership_inference_from_stats(members=members, non_members=non_members,
                                        targets=like_non_members, attack=attack)
    assert r["member_rate"] < 0.05 and r["mia_efficacy"] > 0.95


@pytest.mark.parametrize("attack", ["loss_logreg", "mentropy_svc"])
def test_attack_finds_nothing_in_identical_distributions(attack):
    rng = np.random.default_rng(1)
    r = membership_inference_from_stats(members=rng.normal(1, 1, 500),
                                        non_members=rng.normal(1, 1, 500),
                                        targets=rng.normal(1, 1, 50), attack=attack)
    assert abs(r["auc"] - 0.5) < 0.08


def test_balancing_and_seeds():
    rng = np.random.default_rng(2)
    members, non_members = rng.normal(0, 1, 900), rng.normal(0.5, 1, 300)
    kwargs = dict(members=members, non_members=non_members, targets=members[:40],
                  attack="confidence_svc", max_samples=200)
    a = membership_inference_from_stats(**kwargs, seed=3)
    assert a == membership_inference_from_stats(**kwargs, seed=3)
    assert a["n_members"] == a["n_non_members"] == 200 and a["n_targets"] == 40
    assert a != membership_inference_from_stats(**kwargs, seed=4)
    b = membership_inference_from_stats(**{**kwargs, "max_samples": 10_000})
    assert b["n_members"] == b["n_non_members"] == 300


def test_stats_dict_picks_the_attack_statistic():
    rng = np.random.default_rng(3)
    members = {"loss": rng.normal(0.1, 0.05, 200), "entropy": rng.normal(1, 1, 200)}
    non_members = {"loss": rng.normal(2, 0.5, 200), "entropy": rng.normal(1, 1, 200)}
    kw = dict(members=members, non_members=non_members, targets=members)
    assert membership_inference_from_stats(**kw, attack="loss_logreg")["auc"] > 0.95
    assert membership_inference_from_stats(**kw, attack="entropy_svc")["auc"] < 0.65
    with pytest.raises(ValueError, match="'confidence'"):
        membership_inference_from_stats(**kw, attack="confidence_svc")


def test_bad_inputs_raise():
    x = np.zeros(10)
    with pytest.raises(ValueError, match="unknown attack 'nope'.*loss_logreg"):
        membership_inference_from_stats(members=x, non_members=x, targets=x, attack="nope")
    with pytest.raises(ValueError, match="cv_folds"):
        membership_inference_from_stats(members=x[:3], non_members=x, targets=x)
    with pytest.raises(ValueError, match="targets is empty"):
        membership_inference_from_stats(members=x, non_members=x, targets=x[:0])
    with pytest.raises(ValueError, match="non-finite"):
        membership_inference_from_stats(members=np.r_[x, np.nan], non_members=x, targets=x)


# ---------------------------------------------------------------- attacks on a model

@pytest.mark.parametrize("attack", sorted(MIA_ATTACKS))
def test_every_attack_runs_on_a_model(attack):
    model = _tiny_model()
    members, non_members, targets = _data(60, 1), TensorDataset(*_data(40, 2)), _data(10, 3)
    r = membership_inference(model, members=members, non_members=non_members,
                             targets=targets, attack=attack, seed=0)
    assert r["attack"] == attack and r["n_members"] == r["n_non_members"] == 40
    assert r["n_targets"] == 10 and 0 <= r["auc"] <= 1 and 0 <= r["member_rate"] <= 1
    # same balanced subsample as the statistics route, given the full sets' statistics
    s = membership_inference_from_stats(
        members=example_statistics(model, members), non_members=example_statistics(model, non_members),
        targets=example_statistics(model, targets), attack=attack, seed=0)
    assert s["auc"] == pytest.approx(r["auc"], abs=1e-6)
    assert s["member_rate"] == pytest.approx(r["member_rate"], abs=1e-6)


def test_mia_table_rows_and_determinism():
    models = {"a": _tiny_model(0), "b": _tiny_model(1)}
    kw = dict(members=_data(50, 1), non_members=_data(50, 2), targets=_data(10, 3),
              attacks=("loss_logreg", "entropy_svc"), seed=5)
    table = mia_table(models, **kw)
    assert list(table[["model", "attack"]].itertuples(index=False, name=None)) == [
        ("a", "loss_logreg"), ("a", "entropy_svc"), ("b", "loss_logreg"), ("b", "entropy_svc")]
    assert {"auc", "member_rate", "mia_efficacy"} <= set(table.columns)
    assert table.equals(mia_table(models, **kw))
    single = membership_inference(models["b"], members=kw["members"], non_members=kw["non_members"],
                                  targets=kw["targets"], attack="entropy_svc", seed=5)
    assert table.iloc[3]["auc"] == pytest.approx(single["auc"])
    with pytest.raises(ValueError, match="valid names"):
        mia_table(models, **{**kw, "attacks": ("loss_logreg", "bogus")})
