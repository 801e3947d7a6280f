"""kit.experiments.tables on small hand-made frames."""
import numpy as np
import pandas as pd
import pytest

from kit.experiments.tables import long_accuracies, paper_table, summarize, to_markdown

ROWS = pd.DataFrame([
    dict(method="before", k=8, seed=0, reached=np.nan, steps=0, acc_forget=1.0, acc_test=0.98),
    dict(method="before", k=8, seed=1, reached=np.nan, steps=0, acc_forget=1.0, acc_test=0.96),
    dict(method="adv", k=8, seed=0, reached=True, steps=10, acc_forget=0.0, acc_test=0.90,
         sec_total=1.0),
    dict(method="adv", k=8, seed=1, reached=False, steps=30, acc_forget=0.25, acc_test=0.80,
         sec_total=3.0),
])


def test_paper_table_mean_std_reached_by_hand():
    t = paper_table(ROWS, columns=("acc_forget", "acc_test")).set_index("method")
    assert t.loc["before", "forget"] == "100.0 ± 0.0"
    assert t.loc["before", "test"] == f"97.0 ± {np.std([98, 96], ddof=1):.1f}"    # 1.4
    assert t.loc["adv", "forget"] == f"12.5 ± {np.std([0, 25], ddof=1):.1f}"      # 17.7
    assert t.loc["adv", "reached"] == "1/2" and t.loc["before", "reached"] == "-"
    assert t.loc["adv", "steps"] == "20" and t.loc["adv", "seconds"] == "2.0"
    assert t.loc["before", "seconds"] == "-"


def test_summarize_and_long_shapes():
    s = summarize(ROWS).set_index("method")
    assert s.loc["adv", "acc_test_mean"] == pytest.approx(0.85)
    assert s.loc["adv", "reached"] == 0.5 and s.loc["adv", "runs"] == 2
    long = long_accuracies(ROWS, splits=("forget", "test"))
    assert len(long) == 8 and set(long["split"]) == {"forget", "test"}


def test_markdown_has_a_row_per_row():
    md = to_markdown(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]


def test_diverged_runs_are_counted_not_averaged():
    rows = pd.concat([ROWS.assign(diverged=False),
                      pd.DataFrame([dict(method="adv", k=8, seed=2, reached=False,
                                         diverged=True)])], ignore_index=True)
    t = paper_table(rows, columns=("acc_test",)).set_index("method")
    assert t.loc["adv", "diverged"] == 1 and t.loc["before", "diverged"] == 0
    assert t.loc["adv", "test"] == f"85.0 ± {np.std([90, 80], ddof=1):.1f}"
    assert t.loc["adv", "reached"] == "1/3"


def test_continual_final_by_hand():
    from kit.experiments.tables import continual_final
    rows = []
    # two seeds of one method, two requests; test after the last: 0.80 and 0.90; earlier
    # forget sets: at request 2 forget_1 is 0.25 (seed 0) and 0.50 (seed 1); forget_2 is
    # the current request at request 2 and does not count, nor forget_1 at request 1
    for seed, (t1, t2, f11, f12, f22) in enumerate([(0.95, 0.80, 0.0, 0.25, 0.0),
                                                    (0.96, 0.90, 0.0, 0.50, 0.0)]):
        rows += [dict(method="adv+imp", seed=seed, request=0, split="test", accuracy=0.98),
                 dict(method="adv+imp", seed=seed, request=1, split="test", accuracy=t1),
                 dict(method="adv+imp", seed=seed, request=1, split="forget_1", accuracy=f11),
                 dict(method="adv+imp", seed=seed, request=2, split="test", accuracy=t2),
                 dict(method="adv+imp", seed=seed, request=2, split="forget_1", accuracy=f12),
                 dict(method="adv+imp", seed=seed, request=2, split="forget_2", accuracy=f22)]
    out = continual_final(pd.DataFrame(rows)).set_index("method").loc["adv+imp"]
    assert out["seeds"] == 2 and out["test"] == 85.0
    assert out["test_std"] == pytest.approx(7.1)               # sample std of 80, 90
    assert out["forget_end"] == 37.5 and out["forget_any"] == 37.5
    # keep_scale as a key: one row per (method, keep_scale)
    both = pd.concat([pd.DataFrame(rows).assign(keep_scale=True),
                      pd.DataFrame(rows).assign(keep_scale=False)])
    assert len(continual_final(both)) == 2
    # remember as a further key: one row per (method, keep_scale, remember)
    three = pd.concat([both.assign(remember=False), pd.DataFrame(rows).assign(
        keep_scale=True, remember=True, accuracy=lambda d: d["accuracy"] / 2)])
    out = continual_final(three).set_index(["method", "keep_scale", "remember"])
    assert len(out) == 3 and out.loc[("adv+imp", True, True), "test"] == 42.5
