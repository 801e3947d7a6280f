"""The verified cache: a missing, corrupt, stale or swapped entry is recomputed with a
warning naming the file; a good entry is reused as it is."""
import json

import pytest
import torch

from kit.core.request import ForgetRequest
from kit.experiments.cache import machine_key, unlearned
from kit.method.recipes import resolve

CFG = resolve("default", max_steps=5, pgd_steps=2, per_instance=1)


@pytest.fixture
def entry(pretrained_cnn, tmp_path):
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 4, seed=0)
    m, run = unlearned(model, data, req, method="adv+imp", config=CFG, cache_dir=tmp_path)
    (pt,) = tmp_path.glob("unlearned_*.pt")
    return model, data, req, m, run, pt


def _again(entry, tmp_path):
    model, data, req, *_ = entry
    return unlearned(model, data, req, method="adv+imp", config=CFG, cache_dir=tmp_path)


def test_a_good_entry_is_reused_without_warning(entry, tmp_path, recwarn):
    _, _, _, m, run, pt = entry
    m2, run2 = _again(entry, tmp_path)
    assert not [w for w in recwarn if "cache entry" in str(w.message)]
    assert run2 == json.loads(pt.with_suffix(".run.json").read_text())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    assert json.loads(pt.with_suffix(".json").read_text())["cache_key"]["threads"] == \
        machine_key("cpu")["threads"]


@pytest.mark.parametrize("damage", ["truncate_pt", "empty_run", "swap_run", "half_sidecar"])
def test_a_damaged_entry_is_recomputed_with_a_warning(entry, tmp_path, damage):
    _, _, _, m, run, pt = entry
    if damage == "truncate_pt":
        pt.write_bytes(pt.read_bytes()[:100])
    elif damage == "empty_run":
        pt.with_suffix(".run.json").write_text("")
    elif damage == "swap_run":
        pt.with_suffix(".run.json").write_text(json.dumps({**run, "sha256": "0" * 64}))
    else:
        side = pt.with_suffix(".json")
        side.write_text(side.read_text()[:50])
    with pytest.warns(UserWarning, match=pt.name):
        m2, run2 = _again(entry, tmp_path)
    assert run2["steps"] == run["steps"] and run2["reached"] == run["reached"]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    _again(entry, tmp_path)                      # repaired: loads cleanly now


def test_baseline_runs_are_cached_by_their_hyper_parameters(pretrained_cnn, tmp_path, monkeypatch):
    import kit.experiments.cache as cache
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 4, seed=0)
    hp = {"stop_at_objective": True, "max_steps": 3}
    m, out = cache.baselined(model, data, req, name="random_labels", hp=hp, cache_dir=tmp_path)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                      m.state_dict().values()))  # a copy moved
    calls = []
    monkeypatch.setattr(cache, "run_baseline", lambda *a, **k: calls.append(k) or {})
    m2, out2 = cache.baselined(model, data, req, name="random_labels", hp=hp, cache_dir=tmp_path)
    assert not calls and out2["steps"] == out["steps"] and out2["reached"] == out["reached"]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    _, out3 = cache.baselined(model, data, req, name="random_labels", hp={**hp, "lr": 0.123},
                              cache_dir=tmp_path)          # another learning rate: run again
    assert len(calls) == 1 and calls[0]["lr"] == 0.123 and calls[0]["retain"] is None
    assert "steps" not in out3 and len(list(tmp_path.glob("baseline_random_labels_*.pt"))) == 2
    with pytest.raises(ValueError, match="unknown baseline"):
        cache.baselined(model, data, req, name="nope", cache_dir=tmp_path)


def test_file_lock_makes_a_second_holder_wait(tmp_path):
    import threading

    from kit.core.files import file_lock
    path, held, release, order = tmp_path / "e.lock", threading.Event(), threading.Event(), []

    def first():
        with file_lock(path) as locked:
            order.append(("first", locked))
            held.set()
            release.wait(10)
            order.append(("first leaves", locked))

    def second():
        held.wait(10)
        with file_lock(path) as locked:
            order.append(("second", locked))
    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start(), b.start()
    held.wait(10)
    b.join(0.3)
    assert b.is_alive() and order == [("first", True)]     # waits while the first holds it
    release.set()
    a.join(10), b.join(10)
    assert order == [("first", True), ("first leaves", True), ("second", True)]


def test_two_processes_needing_one_entry_compute_it_once(pretrained_cnn, tmp_path, monkeypatch):
    import threading
    import time

    import kit.experiments.runs as runs
    model, data = pretrained_cnn
    req = ForgetRequest.draw(data, 4, seed=1)
    calls, real = [], runs.apply_method

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)                     # the second caller arrives while this one works
        return real(*args, **kwargs)
    monkeypatch.setattr(runs, "apply_method", slow)
    out = [None, None]

    def go(i):
        out[i] = unlearned(model, data, req, method="adv+imp", config=CFG, cache_dir=tmp_path)
    threads = [threading.Thread(target=go, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and out[0][1] == out[1][1]
    assert all(torch.equal(a, b) for a, b in zip(out[0][0].state_dict().values(),
                                                  out[1][0].state_dict().values()))
