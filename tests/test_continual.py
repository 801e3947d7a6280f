"""kit.continual: request sequences, and continual unlearning on the pre-trained mnist5k cnn."""
import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

from kit import continual, figures
from kit.continual import continual_grid, continual_unlearn, request_sequence, retain_indices
from kit.data import gather, sample_forget
from kit.evaluate import accuracy
from kit.experiment import pretrained
from kit.unlearn import draw_new_labels

SMALL = dict(pgd_steps=5, per_instance=2, max_steps=30)   # engine overrides: seconds, not minutes
K, T = 8, 3


# ---------------------------------------------------------------- request_sequence
def test_request_sequence_disjoint_sizes_and_seed():
    reqs = request_sequence(100, k=7, n_requests=5, seed=3)
    assert len(reqs) == 5 and all(r.shape == (7,) and r.dtype == np.int64 for r in reqs)
    union = np.concatenate(reqs)
    assert len(np.unique(union)) == 35 and union.min() >= 0 and union.max() < 100
    again = request_sequence(100, k=7, n_requests=5, seed=3)
    assert all((a == b).all() for a, b in zip(reqs, again))
    other = request_sequence(100, k=7, n_requests=5, seed=4)
    assert any((a != b).any() for a, b in zip(reqs, other))
    # the first request is the single-request forget set of the same seed
    assert (reqs[0] == sample_forget(100, 7, seed=3)[0]).all()
    # exactly filling the training set is allowed: a partition
    full = request_sequence(12, k=4, n_requests=3, seed=0)
    assert sorted(np.concatenate(full).tolist()) == list(range(12))


def test_request_sequence_too_many_raises_with_range():
    with pytest.raises(ValueError, match=r"1 <= k <= 3 .*1 <= n_requests <= 2 .*disjoint=False"):
        request_sequence(10, k=4, n_requests=3)
    with pytest.raises(ValueError, match="k=11"):
        request_sequence(10, k=11, n_requests=1, disjoint=False)
    with pytest.raises(ValueError, match="n_requests"):
        request_sequence(10, k=1, n_requests=0)


def test_request_sequence_independent_may_overlap():
    reqs = request_sequence(10, k=6, n_requests=3, seed=1, disjoint=False)  # 18 > 10: must overlap
    assert all(len(np.unique(r)) == 6 for r in reqs)            # no duplicate inside a request
    assert len(np.unique(np.concatenate(reqs))) < 18
    again = request_sequence(10, k=6, n_requests=3, seed=1, disjoint=False)
    assert all((a == b).all() for a, b in zip(reqs, again))
    assert (reqs[0] == request_sequence(10, k=6, n_requests=1, seed=1)[0]).all()


def test_retain_indices_by_hand():
    assert retain_indices(8, [np.array([1, 5]), np.array([5, 7])]).tolist() == [0, 2, 3, 4, 6]
    assert retain_indices(4, []).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        retain_indices(4, [np.array([4])])


# ---------------------------------------------------------------- continual_unlearn
@pytest.fixture(scope="module")
def base(mnist5k):
    model, _, _ = pretrained(data=mnist5k)
    return model


@pytest.fixture(scope="module")
def run(base, mnist5k):
    """One continual run of T=3 requests of k=8 (request 2 relabels), spying on D_r."""
    n = len(mnist5k.train)
    reqs = request_sequence(n, k=K, n_requests=T, seed=0)
    model = copy.deepcopy(base)
    retain_seen = []

    def spy(m, data, **kw):
        if isinstance(data, Subset) and data.dataset is mnist5k.train:
            retain_seen.append(np.asarray(data.indices))
        return accuracy(m, data, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(continual, "accuracy", spy)
        table = continual_unlearn(model, mnist5k, reqs, method="adv+imp", relabel_requests=(2,),
                                  seed=0, **SMALL)
    return dict(n=n, reqs=reqs, model=model, table=table, retain_seen=retain_seen)


def test_rows_per_request(run):
    table = run["table"]
    assert list(table.columns) == continual.COLUMNS
    assert sorted(table["request"].unique()) == list(range(T + 1))
    assert (table["method"] == "adv+imp").all() and (table["seed"] == 0).all()
    for t in range(T + 1):
        got = table.loc[table["request"] == t, "split"].tolist()
        want = ["retain", "test"] + [f"forget_{j}" for j in range(1, t + 1)]
        want += ["relabel_2"] if t >= 2 else []
        assert got == want, (t, got)
        if t:
            obj = table.loc[table["request"] == t, "objective"].unique().tolist()
            assert obj == (["relabel"] if t == 2 else ["misclassify"])
    steps = table[table["request"] > 0].groupby("request")["steps"].unique()
    assert all(len(s) == 1 and 1 <= s[0] <= SMALL["max_steps"] for s in steps)
    assert table["accuracy"].between(0, 1).all()


def test_retain_excludes_every_forget_set_so_far(run):
    n, reqs = run["n"], run["reqs"]
    for t in range(T + 1):
        r = retain_indices(n, reqs[:t])
        union = np.concatenate(reqs[:t]) if t else np.array([], dtype=int)
        assert len(np.intersect1d(r, union)) == 0 and len(r) == n - t * K
    # the accuracy really was measured on exactly those examples, one D_r per request
    assert [len(s) for s in run["retain_seen"]] == [n - t * K for t in range(T + 1)]
    for t, seen in enumerate(run["retain_seen"]):
        assert (seen == retain_indices(n, reqs[:t])).all()
    table = run["table"]
    assert table.loc[table["split"] == "retain", "n"].tolist() == [n - t * K for t in range(T + 1)]


def test_model_modified_in_place_and_table_reflects_it(run, base, mnist5k):
    model, table = run["model"], run["table"]
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))
    last = table[table["request"] == T].set_index("split")["accuracy"]
    for j, idx in enumerate(run["reqs"], start=1):        # the final model is the one passed in
        assert last[f"forget_{j}"] == pytest.approx(accuracy(model, gather(mnist5k.train, idx)))
    assert last["test"] == pytest.approx(accuracy(model, mnist5k.test))
    # request 1 did unlearn something on its forget set
    fx, fy = gather(mnist5k.train, run["reqs"][0])
    after1 = table.query("request == 1 and split == 'forget_1'")["accuracy"].item()
    assert after1 < accuracy(base, (fx, fy))
    before = table[table["request"] == 0].set_index("split")["accuracy"]
    assert before["test"] == pytest.approx(accuracy(base, mnist5k.test))


def test_relabel_split_is_agreement_with_drawn_labels(run, mnist5k):
    fx, fy = gather(mnist5k.train, run["reqs"][1])
    new = draw_new_labels(fy, mnist5k.num_classes, seed=0 + 2)
    assert (new != fy).all()
    final = run["table"].query(f"request == {T} and split == 'relabel_2'")["accuracy"].item()
    assert final == pytest.approx(accuracy(run["model"], (fx, new)))


def test_table_feeds_plot_continual(run, tmp_path):
    paths = figures.plot_continual(run["table"], tmp_path / "continual")
    png = paths[0].read_bytes()
    assert paths[0].suffix == ".png" and png.startswith(b"\x89PNG") and len(png) > 1000


@pytest.fixture(scope="module")
def small_data(mnist5k):
    """mnist5k cut to 600 training and 200 test digits: evaluation is most of a run's time."""
    return dataclasses.replace(mnist5k, train=Subset(mnist5k.train, range(600)),
                               test=Subset(mnist5k.test, range(200)))


def test_deterministic_under_seed(base, small_data):
    reqs = request_sequence(len(small_data.train), k=K, n_requests=2, seed=5)
    a, b = (continual_unlearn(copy.deepcopy(base), small_data, reqs, method="adv+imp",
                              relabel_requests=(1,), seed=5, retain_max=300, **SMALL)
            for _ in range(2))
    assert (a["seconds"] > 0).any()
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert (a.loc[a["split"] == "retain", "n"] == 300).all()          # retain_max sub-sample


def test_bad_arguments_raise_before_any_work(base, small_data):
    model = copy.deepcopy(base)
    reqs = request_sequence(len(small_data.train), k=4, n_requests=2)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        continual_unlearn(model, small_data, reqs, relabel_requests=(3,))
    with pytest.raises(ValueError, match="out of range"):
        continual_unlearn(model, small_data, [np.array([0, 600])])
    with pytest.raises(ValueError, match="empty"):
        continual_unlearn(model, small_data, [])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))


def test_grid_copies_base_and_concatenates(base, small_data):
    state = {k: v.clone() for k, v in base.state_dict().items()}
    table = continual_grid(base, small_data, methods=("neggrad", "adv"), seeds=(0, 1), k=4,
                           n_requests=2, max_steps=5, pgd_steps=3, per_instance=1)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in state.items())
    combos = table[["method", "seed"]].drop_duplicates().values.tolist()
    assert combos == [["neggrad", 0], ["adv", 0], ["neggrad", 1], ["adv", 1]]
    assert len(table) == 4 * (2 + 3 + 4)                       # requests 0, 1, 2 per run
    zero = table[table["request"] == 0].drop(columns="method")
    pd.testing.assert_frame_equal(zero.iloc[0:2].reset_index(drop=True),   # same base, same seed:
                                  zero.iloc[2:4].reset_index(drop=True))   # same request-0 rows
    assert table.index.is_unique
