"""Reliability battery: the faults a demanding user tries, each answered by a clear error (or
the right behaviour) with nothing lost and nothing half-written. Tiny untrained models and
settings keep it fast on a 2-core CPU."""
import hashlib
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.cli import commands, main
from kit.core.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from kit.core.models import create_model
from kit.core.files import atomic_dir
from kit.method.engine import Diverged, unlearn
from kit.method.recipes import resolve

REPO = Path(__file__).resolve().parents[1]
TINY = ["--pgd-steps", 2, "--per-instance", 1, "--max-steps", 3, "--retain-max", 100]


def _cnn(seed=0):
    torch.manual_seed(seed)
    return create_model("cnn", num_classes=10, in_channels=1, image_size=28).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "cnn.pt"
    save_checkpoint(_cnn(), path, dataset="mnist5k")
    return path


@pytest.fixture(autouse=True)
def cached_data(monkeypatch, mnist5k):
    """The CLI loads mnist5k once per session here (loading is not what is tested)."""
    real = commands.load_dataset
    monkeypatch.setattr(commands, "load_dataset", lambda name, root=None, **kw: (
        mnist5k if name == "mnist5k" and not kw else real(name, root=root, **kw)))


def _cli(*args):
    return main([str(a) for a in args])


def _unlearn_cli(ckpt, out, *extra):
    return _cli("unlearn", "--checkpoint", ckpt, "--out", out, "--forget-k", 2, *TINY, *extra)


def _digest(*paths):
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _no_leftovers(folder: Path, name: str):
    assert [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")] == []


# ------------------------------------------------------------------ bad settings
BAD_SETTINGS = [  # (config field, value, words of the message)
    ("adv_batch", 0, "adv_batch must be >= 1"),
    ("forget_batch", 0, "forget_batch must be >= 1"),
    ("eps", 0.0, "eps must be > 0"),
    ("eps", -1.0, "eps must be > 0"),
    ("step_size", -0.1, "step_size must be > 0"),
    ("pgd_steps", 0, "pgd_steps must be >= 1"),
    ("lam", math.nan, "lam must be finite"),
    ("lr", math.inf, "lr must be finite"),
    ("lr", "0.1", "lr must be a float"),
]


@pytest.mark.parametrize("name, value, words", BAD_SETTINGS)
def test_bad_setting_via_resolve_is_a_value_error(name, value, words):
    with pytest.raises(ValueError, match=words):
        resolve("default", "misclassify", **{name: value})


@pytest.mark.parametrize("name, value, words", [s for s in BAD_SETTINGS if s[1] != "0.1"])
def test_bad_setting_via_cli_exits_2_before_compute(ckpt, tmp_path, capsys, name, value, words):
    out = tmp_path / "out"
    flag = "--" + name.replace("_", "-")
    assert _unlearn_cli(ckpt, out, flag, value) == 2
    _one_error_line(capsys, flag + words[len(name):])
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--seed", "0.5"], "argument --seed: expected a whole number >= 0, got '0.5'"),
    (["--active-only", "maybe"], "expected true/false, 1/0 or yes/no"),
    (["--forget-k", 0], "out of range: choose 1 <= k <= 4000"),
    (["--forget-k", 4001], "out of range: choose 1 <= k <= 4000"),
])
def test_bad_value_via_cli_is_one_line(ckpt, tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    args = ["unlearn", "--checkpoint", ckpt, "--out", out, *TINY, *extra]
    if "--forget-k" not in extra:
        args += ["--forget-k", 2]
    assert _cli(*args) == 2
    _one_error_line(capsys, words)
    assert not out.exists()


# ------------------------------------------------------------------ bad tensors (python API)
@pytest.fixture
def forget(mnist5k):
    from kit.core.data import gather

    x, y = gather(mnist5k.train, [0, 1])
    return _cnn(), x, y


def _unlearn(model, x, y, **kw):
    objective = kw.pop("objective", "misclassify")
    cfg = resolve("default", objective, **{"max_steps": 2, **kw.pop("cfg", {})})
    return unlearn(model, x, y, objective=objective, method="neggrad", config=cfg, **kw)


def _unchanged(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case, words", [
    ("seed 0.5", "seed must be an integer"),
    ("nan pixels", "NaN or infinite pixels"),
    ("(k,1) labels", r"forget_y must have shape \(2,\)"),
    ("float labels 2.7", "forget_y must be an integer torch.Tensor"),
    ("numpy images", "convert with torch.as_tensor"),
    ("3-channel images", "the model expects in_channels=1"),
])
def test_bad_input_raises_before_compute(forget, case, words):
    model, x, y = forget
    before = _unchanged(model)
    nan_x = x.clone()
    nan_x[0, 0, 3, 3] = math.nan
    bad_x, bad_y, kw = {"seed 0.5": (x, y, dict(seed=0.5)), "nan pixels": (nan_x, y, {}),
                        "(k,1) labels": (x, y[:, None], {}),
                        "float labels 2.7": (x, torch.tensor([2.7, 1.0]), {}),
                        "numpy images": (x.numpy(), y, {}),
                        "3-channel images": (x.repeat(1, 3, 1, 1), y, {})}[case]
    with pytest.raises(ValueError, match=words):
        _unlearn(model, bad_x, bad_y, **kw)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_numpy_labels_are_accepted(forget):
    model, x, y = forget
    res = _unlearn(model, x, y.numpy())
    assert res.steps <= 2 and res.objective == "misclassify"


def _relabel_targets(model, x, y):
    """New labels that are neither the true label nor the untrained model's prediction."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    return torch.tensor([next(c for c in range(10) if c not in (int(a), int(b)))
                         for a, b in zip(y, pred)])


def test_diverging_lr_raises_diverged(forget):
    model, x, y = forget
    new = _relabel_targets(model, x, y)
    with pytest.raises(Diverged, match="diverged; lower lr") as err:
        _unlearn(model, x, y, objective="relabel", new_labels=new,
                 cfg=dict(lr=1e10, optimizer="sgd", max_steps=3))
    assert isinstance(err.value, FloatingPointError)


def test_diverging_cli_run_exits_3_and_writes_nothing(ckpt, tmp_path, capsys, mnist5k):
    from kit.core.data import gather

    x, y = gather(mnist5k.train, [0, 1])
    (tmp_path / "ids.txt").write_text("0 1")
    (tmp_path / "new.txt").write_text(" ".join(map(str, _relabel_targets(_cnn(), x, y).tolist())))
    out = tmp_path / "out"
    code = _cli("unlearn", "--checkpoint", ckpt, "--out", out, "--forget-ids", tmp_path / "ids.txt",
                "--objective", "relabel", "--new-labels", tmp_path / "new.txt",
                "--method", "neggrad", "--lr", 1e10, "--optimizer", "sgd", *TINY)
    assert code == 3
    _one_error_line(capsys, "diverged", "nothing was written")
    assert not out.exists()
    _no_leftovers(tmp_path, "out")


# ------------------------------------------------------------------ output places
@pytest.mark.parametrize("where", ["checkpoint folder", "checkpoint file", "above it, --overwrite"])
def test_output_onto_the_input_is_refused(ckpt, capsys, where):
    side = ckpt.with_suffix(".json")
    before = _digest(ckpt, side)
    out, extra = {"checkpoint folder": (ckpt.parent, []), "checkpoint file": (ckpt, []),
                  "above it, --overwrite": (ckpt.parent.parent, ["--overwrite"])}[where]
    assert _unlearn_cli(ckpt, out, *extra) == 2
    _one_error_line(capsys, "input checkpoint", "choose another output folder")
    assert _digest(ckpt, side) == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["cnn.json", "cnn.pt"]


def test_existing_output_needs_overwrite_then_is_replaced_whole(ckpt, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("an older run")
    assert _unlearn_cli(ckpt, out) == 2
    _one_error_line(capsys, "already exists and is not empty", "--overwrite")
    assert (out / "notes.txt").read_text() == "an older run"
    assert _unlearn_cli(ckpt, out, "--method", "neggrad", "--overwrite") in (0, 1)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt", "results.csv",
                                                     "results.json"]
    load_checkpoint(out / "model.pt")
    _no_leftovers(tmp_path, "run")


def test_an_empty_output_folder_is_used(ckpt, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _unlearn_cli(ckpt, out, "--method", "neggrad") in (0, 1)
    assert (out / "results.csv").is_file()


@pytest.mark.parametrize("out, extra, words", [
    ("x.json", [], "must be a checkpoint path ending in .pt"),
    ("old.pt", [], "already exists; allow replacing it (--overwrite)"),
    ("old.json/x.pt", [], "is a file, not a folder"),
])
def test_pretrain_output_is_checked_first(tmp_path, capsys, out, extra, words):
    (tmp_path / "old.pt").write_bytes(b"weights")
    (tmp_path / "old.json").write_text("{}")
    assert _cli("pretrain", "--out", tmp_path / out, "--epochs", 1, *extra) == 2
    _one_error_line(capsys, words)
    assert (tmp_path / "old.pt").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "old.pt"]


@pytest.mark.parametrize("command", ["unlearn", "pretrain"])
def test_unwritable_output_place_is_refused_up_front(ckpt, tmp_path, capsys, monkeypatch,
                                                     command):
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)   # as a non-root user
    if command == "unlearn":
        code = _unlearn_cli(ckpt, tmp_path / "new" / "run")
    else:
        code = _cli("pretrain", "--out", tmp_path / "new" / "m.pt")
    assert code == 2
    _one_error_line(capsys, f"cannot write into '{tmp_path}' (permission denied)")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ fault injection
def _boom(*args, **kwargs):
    raise OSError(28, "No space left on device (injected)")


def test_failure_between_model_and_results_leaves_no_partial_run(ckpt, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(commands, "save_results", _boom)
    out = tmp_path / "run"
    assert _unlearn_cli(ckpt, out, "--method", "neggrad") == 3
    _one_error_line(capsys, "unexpected failure", "No space left", "--debug")
    assert not out.exists()
    _no_leftovers(tmp_path, "run")


def test_failure_during_overwrite_keeps_the_old_run(ckpt, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert _unlearn_cli(ckpt, out, "--method", "neggrad") in (0, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(commands, "save_results", _boom)
    assert _unlearn_cli(ckpt, out, "--method", "neggrad", "--overwrite", "--debug") == 3
    assert "Traceback" in capsys.readouterr().err               # --debug shows it
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _no_leftovers(tmp_path, "run")


def test_atomic_dir_is_all_or_nothing(tmp_path):
    with pytest.raises(KeyError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a.txt").write_text("half")
            raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a.txt").write_text("whole")
    assert (tmp_path / "d" / "a.txt").read_text() == "whole"
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(tmp_path / "d"):
            pass


# ------------------------------------------------------------------ checkpoints on disk
SAVER = textwrap.dedent("""
    import sys, time, pathlib, torch
    from kit.core.checkpoint import save_checkpoint
    from kit.core.models import create_model
    path, seed = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(seed)
    model = create_model("cnn", num_classes=10, in_channels=1, image_size=28)
    (path.parent / f"ready{seed}").touch()
    while not (path.parent / "go").exists():
        time.sleep(0.01)
    for _ in range(30):
        save_checkpoint(model, path, dataset="mnist5k", seed=seed)
""")


def test_two_processes_saving_one_checkpoint(tmp_path):
    path = tmp_path / "shared" / "cnn.pt"
    save_checkpoint(_cnn(5), path, dataset="mnist5k", seed=5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(seed)], cwd=REPO,
                              env=env, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    deadline = time.time() + 60
    while not all((path.parent / f"ready{s}").exists() for s in (1, 2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    (path.parent / "go").touch()
    loads = 0
    while any(p.poll() is None for p in procs):              # a reader meanwhile
        load_checkpoint(path)
        loads += 1
    errors = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    model = load_checkpoint(path)
    assert any(all(torch.equal(v, _cnn(s).state_dict()[k]) for k, v in model.state_dict().items())
               for s in (1, 2))
    assert loads >= 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["cnn.json", "cnn.pt", "go",
                                                             "ready1", "ready2"]


@pytest.fixture
def saved(tmp_path):
    return save_checkpoint(_cnn(), tmp_path / "cnn.pt", dataset="mnist5k")


def test_truncated_weights_are_refused(saved):
    blob = saved.read_bytes()
    saved.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointMismatch, match="sha256 differs"):
        load_checkpoint(saved)


@pytest.mark.parametrize("text, words", [("", "not valid JSON"),
                                         ('{"arch": "cnn", "num_cl', "not valid JSON"),
                                         ('{"arch": "cnn"}', "lacks"),
                                         ("[1, 2]", "holds a JSON list")])
def test_empty_or_half_written_sidecar_is_named(saved, text, words):
    side = saved.with_suffix(".json")
    side.write_text(text)
    with pytest.raises(CheckpointMismatch, match=words) as err:
        load_checkpoint(saved)
    assert str(side) in str(err.value)


def test_cli_refuses_a_torn_checkpoint(tmp_path, capsys):
    path = save_checkpoint(_cnn(), tmp_path / "ck" / "cnn.pt", dataset="mnist5k")
    path.write_bytes(path.read_bytes()[:1000])
    assert _unlearn_cli(path, tmp_path / "out") == 2
    _one_error_line(capsys, "sha256 differs", "re-save")
    assert not (tmp_path / "out").exists()
