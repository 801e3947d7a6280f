"""Continual unlearning on the pre-trained mnist5k cnn (kit.experiments.continual)."""
import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

from kit.core.data import gather
from kit.core.predict import accuracy
from kit.core.request import ForgetRequest, draw_new_labels, retain_complement
from kit.experiments import continual, figures
from kit.experiments.cache import pretrained
from kit.experiments.continual import continual_grid, continual_unlearn
from kit.method.recipes import resolve

# engine overrides: seconds, not minutes (8 transformed anchors per step, not the default's
# 32, so that 30 steps move the forget images)
SMALL = dict(pgd_steps=5, per_instance=2, max_steps=30, aug_batch=8)
CFG = dict(config=resolve("default", "misclassify", **SMALL),
           relabel_config=resolve("default", "relabel", **SMALL))
K, T = 8, 3


# ---------------------------------------------------------------- continual_unlearn
@pytest.fixture(scope="module")
def base(mnist5k):
    model, _, _ = pretrained(data=mnist5k)
    return model


@pytest.fixture(scope="module")
def run(base, mnist5k):
    """One continual run of T=3 requests of k=8 (request 2 relabels), spying on D_r."""
    n = len(mnist5k.train)
    reqs = ForgetRequest.sequence(mnist5k, k=K, n_requests=T, seed=0, relabel=(2,))
    model = copy.deepcopy(base)
    retain_seen = []

    def spy(m, data, **kw):
        if isinstance(data, Subset) and data.dataset is mnist5k.train:
            retain_seen.append(np.asarray(data.indices))
        return accuracy(m, data, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(continual, "accuracy", spy)
        table = continual_unlearn(model, mnist5k, reqs, method="adv+imp", **CFG)
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
        r = retain_complement(n, *[q.forget_idx for q in reqs[:t]])
        union = np.concatenate([q.forget_idx for q in reqs[:t]]) if t else np.array([], dtype=int)
        assert len(np.intersect1d(r, union)) == 0 and len(r) == n - t * K
    # the accuracy really was measured on exactly those examples, one D_r per request
    assert [len(s) for s in run["retain_seen"]] == [n - t * K for t in range(T + 1)]
    for t, seen in enumerate(run["retain_seen"]):
        assert (seen == retain_complement(n, *[q.forget_idx for q in reqs[:t]])).all()
    table = run["table"]
    assert table.loc[table["split"] == "retain", "n"].tolist() == [n - t * K for t in range(T + 1)]


def test_model_modified_in_place_and_table_reflects_it(run, base, mnist5k):
    model, table = run["model"], run["table"]
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))
    last = table[table["request"] == T].set_index("split")["accuracy"]
    for j, q in enumerate(run["reqs"], start=1):          # the final model is the one passed in
        assert last[f"forget_{j}"] == pytest.approx(accuracy(model, gather(mnist5k.train,
                                                                           q.forget_idx)))
    assert last["test"] == pytest.approx(accuracy(model, mnist5k.test))
    # request 1 did unlearn something on its forget set
    fx, fy = gather(mnist5k.train, run["reqs"][0].forget_idx)
    after1 = table.query("request == 1 and split == 'forget_1'")["accuracy"].item()
    assert after1 < accuracy(base, (fx, fy))
    before = table[table["request"] == 0].set_index("split")["accuracy"]
    assert before["test"] == pytest.approx(accuracy(base, mnist5k.test))


def test_relabel_split_is_agreement_with_drawn_labels(run, mnist5k):
    fx, fy = gather(mnist5k.train, run["reqs"][1].forget_idx)
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
    reqs = ForgetRequest.sequence(small_data, k=K, n_requests=2, seed=5, relabel=(1,))
    a, b = (continual_unlearn(copy.deepcopy(base), small_data, reqs, method="adv+imp",
                              retain_max=300, **CFG)
            for _ in range(2))
    assert (a["seconds"] > 0).any()
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert (a.loc[a["split"] == "retain", "n"] == 300).all()          # retain_max sub-sample


def test_a_cached_sequence_is_read_back_without_running_the_engine(base, small_data, tmp_path,
                                                                   monkeypatch):
    # every request is cached under the weights it starts from: a second run of the same
    # sequence reads every entry and ends at the same weights, with the same table (the
    # seconds included: those of the run that made the entry)
    reqs = ForgetRequest.sequence(small_data, k=4, n_requests=2, seed=3)
    cfg = dict(config=resolve("default", max_steps=5, pgd_steps=3, per_instance=1),
               retain_max=100, cache_dir=tmp_path)
    first, second = copy.deepcopy(base), copy.deepcopy(base)
    a = continual_unlearn(first, small_data, reqs, method="adv", **cfg)
    assert len(list(tmp_path.glob("unlearned_adv_k4_*.run.json"))) == 2

    def no_engine(*args, **kw):
        raise AssertionError("the engine ran although every request was cached")
    monkeypatch.setattr("kit.experiments.runs.unlearn", no_engine)
    b = continual_unlearn(second, small_data, reqs, method="adv", **cfg)
    pd.testing.assert_frame_equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(first.parameters(), base.parameters()))
    # another model before the sequence: another entry, not a stale one read back
    other = copy.deepcopy(base)
    with torch.no_grad():
        next(other.parameters()).mul_(0.5)
    with pytest.raises(AssertionError, match="every request was cached"):
        continual_unlearn(other, small_data, reqs, method="adv", **cfg)


def test_bad_arguments_raise_before_any_work(base, small_data):
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        ForgetRequest.sequence(small_data, k=4, n_requests=2, relabel=(3,))
    with pytest.raises(ValueError, match="out of range"):
        ForgetRequest.from_ids(small_data, [0, 600])
    with pytest.raises(ValueError, match="empty"):
        continual_unlearn(model, small_data, [])
    with pytest.raises(ValueError, match="valid names"):
        continual_unlearn(model, small_data, ForgetRequest.sequence(small_data, k=4, n_requests=1),
                          method="nope")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))


def test_grid_copies_base_and_concatenates(base, small_data):
    state = {k: v.clone() for k, v in base.state_dict().items()}
    table = continual_grid(base, small_data, methods=("neggrad", "adv"), seeds=(0, 1), k=4,
                           n_requests=2,
                           config=resolve("default", max_steps=5, pgd_steps=3, per_instance=1))
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in state.items())
    combos = table[["method", "seed"]].drop_duplicates().values.tolist()
    assert combos == [["neggrad", 0], ["adv", 0], ["neggrad", 1], ["adv", 1]]
    assert len(table) == 4 * (2 + 3 + 4)                       # requests 0, 1, 2 per run
    zero = table[table["request"] == 0].drop(columns="method")
    pd.testing.assert_frame_equal(zero.iloc[0:2].reset_index(drop=True),   # same base, same seed:
                                  zero.iloc[2:4].reset_index(drop=True))   # same request-0 rows
    assert table.index.is_unique
