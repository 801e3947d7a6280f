"""kit.judge on a tiny request: k=4, one seed, NegGrad and one baseline, a 1-epoch retrain."""
import numpy as np
import pandas as pd
import pytest

from kit.baselines import BASELINES
from kit.method.recipes import resolve
from kit.experiments.judge import COLUMNS, judge
from kit.experiments.tables import judge_summary, tradeoff_table

TINY = dict(ks=(4,), seeds=(0,), methods=("neggrad",), baselines=("random_labels",),
            retrain_epochs=1, retain_max=300, baseline_hp={"random_labels": {"epochs": 2}},
            config=resolve("fast", max_steps=20))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("judge_ckpt")


@pytest.fixture(scope="module")
def table(pretrained_cnn, cache):
    model, data = pretrained_cnn
    return judge(model, data, cache_dir=cache, **TINY)


def _row(df, method):
    rows = df[df["method"] == method]
    assert len(rows) == 1
    return rows.iloc[0]


def test_rows_and_columns(table):
    assert list(table.columns) == COLUMNS
    assert list(table["method"]) == ["pretrained", "retrain", "neggrad", "random_labels"]
    assert list(table["family"]) == ["reference", "reference", "paper", "baseline"]
    assert not table[COLUMNS[5:-2]].isna().any().any()
    base = table[table["family"] != "baseline"]
    assert not base[["passes", "passes_share_of_retrain"]].isna().any().any()


def test_retrain_row_is_its_own_reference(table):
    ref = _row(table, "retrain")
    assert ref["agree_forget"] == 1.0 and ref["agree_test"] == 1.0
    assert ref["kl_forget"] == pytest.approx(0.0, abs=1e-12)
    assert ref["kl_test"] == pytest.approx(0.0, abs=1e-12)
    for c in ("gap_forget", "gap_retain", "gap_test", "mia_gap"):
        assert ref[c] == 0.0
    assert ref["share_of_retrain"] == 1.0 and ref["seconds"] > 0
    assert ref["passes_share_of_retrain"] == 1.0 and ref["passes"] == 1 * (4000 - 4)


def test_gaps_and_cost_against_retrain(table):
    ref = _row(table, "retrain")
    for _, row in table.iterrows():
        for s in ("forget", "retain", "test"):
            assert row[f"gap_{s}"] == pytest.approx(abs(row[f"acc_{s}"] - ref[f"acc_{s}"]))
        assert row["mia_gap"] == pytest.approx(abs(row["mia_member_rate"] - ref["mia_member_rate"]))
        assert row["share_of_retrain"] == pytest.approx(row["seconds"] / ref["seconds"])
    assert _row(table, "pretrained")["seconds"] == 0.0
    # NegGrad reaches D_f accuracy 0 and disagrees with the retrained model there
    neg = _row(table, "neggrad")
    assert neg["acc_forget"] == 0.0 and neg["agree_forget"] < 1.0 and neg["kl_forget"] > 0


def test_needs_retain_flags_match_registry(table):
    for _, row in table.iterrows():
        if row["family"] == "baseline":
            assert row["needs_retain"] == BASELINES[row["method"].split("@")[0]].needs_retain
    assert list(table["needs_retain"]) == [False, True, False, False]


def test_pretrained_saw_forget_set_retrain_did_not(table):
    pre, ref = _row(table, "pretrained"), _row(table, "retrain")
    assert pre["acc_forget"] == 1.0
    assert ref["acc_forget"] <= pre["acc_forget"]
    assert 0.0 <= pre["mia_member_rate"] <= 1.0 and 0.0 <= pre["mia_auc"] <= 1.0


def test_cached_retrain_keeps_its_training_time(pretrained_cnn, cache, table):
    model, data = pretrained_cnn
    again = judge(model, data, cache_dir=cache, **{**TINY, "methods": (), "baselines": ()})
    assert list(again["method"]) == ["pretrained", "retrain"]
    assert _row(again, "retrain")["seconds"] == _row(table, "retrain")["seconds"]
    assert _row(again, "retrain")["acc_test"] == _row(table, "retrain")["acc_test"]


@pytest.mark.parametrize("bad", [dict(methods=("nope",)), dict(baselines=("nope",)),
                                 dict(attack="nope"), dict(baseline_hp={"nope": {}}),
                                 dict(baseline_hp={"random_labels": {"eps": 1.0}}),
                                 dict(retain_max=1)])
def test_bad_names_raise_before_any_training(pretrained_cnn, tmp_path, bad):
    model, data = pretrained_cnn
    with pytest.raises(ValueError):
        judge(model, data, cache_dir=tmp_path, **{**TINY, **bad})
    assert not list(tmp_path.iterdir())


def test_summary_and_tradeoff(table):
    two = table.assign(seed=1, acc_test=table["acc_test"] - 0.02)   # a second, made-up seed
    both = pd.concat([table, two], ignore_index=True)
    summ = judge_summary(both)
    assert list(summ["method"]) == ["pretrained", "retrain", "neggrad", "random_labels"]
    assert (summ["runs"] == 2).all()
    pre = summ[summ["method"] == "pretrained"].iloc[0]
    assert pre["forget %"] == "100.0 ± 0.0"
    mean = (table["acc_test"].iloc[0] - 0.01) * 100
    std = np.std([0, 2.0], ddof=1)
    assert pre["test %"] == f"{mean:.1f} ± {std:.1f}"
    trade = tradeoff_table(both)
    assert {"method", "utility", "mia_gap", "needs_retain"} <= set(trade.columns)
    assert len(trade) == 8 and (trade["utility"] == both["acc_test"].values).all()
    with pytest.raises(ValueError, match="available"):
        tradeoff_table(both, k=99)


def test_a_baseline_runs_twice_under_labelled_hyper_parameters(pretrained_cnn, cache, table):
    model, data = pretrained_cnn
    twice = judge(model, data, cache_dir=cache, **{
        **TINY, "methods": (), "baselines": ("random_labels", "random_labels@stop"),
        "baseline_hp": {"random_labels": {"epochs": 2},
                        "random_labels@stop": {"stop_at_objective": True, "max_steps": 300}}})
    assert list(twice["method"]) == ["pretrained", "retrain", "random_labels",
                                     "random_labels@stop"]
    # the same entry as the unlabelled row of the module's table, the same result
    assert _row(twice, "random_labels")["acc_test"] == _row(table, "random_labels")["acc_test"]
    assert _row(twice, "random_labels@stop")["acc_forget"] == 0.0   # stopped at the objective
    with pytest.raises(ValueError):
        judge(model, data, cache_dir=cache, **{**TINY, "baselines": ("nope@stop",)})
