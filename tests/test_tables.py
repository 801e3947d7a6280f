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
