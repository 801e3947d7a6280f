"""`python -m kit`: the recipe's real defaults in --help (each once), choices, bool parsing,
exit codes, one deletion request end to end, bad input."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kit import save_checkpoint
from kit.cli import build_parser, main
from kit.cli.parser import parse_bool
from kit.method.config import FIELDS, METHODS
from kit.method.recipes import RECIPES, resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(pretrained_cnn, tmp_path_factory):
    model, data = pretrained_cnn
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(model, path, dataset=data.name, seed=0)
    return path


def _help(capsys, *args):
    assert main(["unlearn", *args, "--help"]) == 0
    return capsys.readouterr().out


def _blocks(text):
    """{flag: its help text, whitespace collapsed} for the hyper-parameter options."""
    flags = ["--" + n.replace("_", "-") for n in FIELDS]
    out, current = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            current = None
        m = re.match(r"  (--[a-z-]+)", line)
        if m:
            current = m.group(1) if m.group(1) in flags else None
            if current:
                out[current] = ""
        if current:
            out[current] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in out.items()}


def _shown(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("recipe, objective", [("default", "misclassify"),
                                               ("official", "misclassify"),
                                               ("default", "relabel")])
def test_help_shows_each_default_once_and_true_for_the_recipe(capsys, recipe, objective):
    text = _help(capsys, "--recipe", recipe, "--objective", objective)
    cfg = resolve(recipe, objective)
    blocks = _blocks(text)
    assert set(blocks) == {"--" + n.replace("_", "-") for n in FIELDS}
    for name in FIELDS:
        block = blocks["--" + name.replace("_", "-")]
        assert block.count("(default:") == 1, block
        assert f"(default: {_shown(getattr(cfg, name))})" in block, block
    assert "(default: None)" not in text
    assert f"recipe {recipe!r} for objective {objective!r}" in " ".join(text.split())


def test_official_help_differs_from_default_where_the_recipes_do(capsys):
    official, default = _blocks(_help(capsys, "--recipe", "official")), _blocks(_help(capsys))
    for name in ("max_steps", "budget_unit", "per_instance", "pgd_steps", "bn_mode", "loss",
                 "optimizer", "lam"):
        flag = "--" + name.replace("_", "-")
        assert getattr(RECIPES["official"], name) != getattr(RECIPES["default"], name)
        assert f"(default: {getattr(RECIPES['official'], name)})" in official[flag]
        assert f"(default: {getattr(RECIPES['default'], name)})" in default[flag]


def test_python_m_kit_help_uses_the_chosen_recipe():
    run = subprocess.run([sys.executable, "-m", "kit", "unlearn", "--recipe", "official", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert "(default: passes)" in _blocks(run.stdout)["--budget-unit"]


def test_every_option_has_help_and_string_options_list_their_values(capsys):
    text = _help(capsys)
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        if f.type in (bool, "bool"):                    # a bare flag means true
            assert f"{flag} [{{true,false}}]" in text
        elif f.metadata["choices"]:
            assert f"{flag} {{{','.join(f.metadata['choices'])}}}" in text
    for action in build_parser()._subparsers._group_actions[0].choices["unlearn"]._actions:
        assert action.help, action.option_strings
    assert "{" + ",".join(METHODS) + "}" in text and "{misclassify,relabel}" in text
    assert "{" + ",".join(RECIPES) + "}" in text


@pytest.mark.parametrize("args", [[], ["unlearn"], ["evaluate"], ["pretrain"]])
def test_exit_codes_are_documented(capsys, args):
    assert main([*args, "--help"]) == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in ("0  success", "1  unlearn: the objective was not reached", "2  bad input",
                 "3  the run diverged"):
        assert code in text


@pytest.mark.parametrize("text, value", [("true", True), ("Yes", True), ("1", True),
                                         ("false", False), ("NO", False), ("0", False)])
def test_bool_options_parse_true_false_1_0_yes_no(text, value):
    assert parse_bool(text) is value
    args = build_parser().parse_args(["unlearn", "--checkpoint", "c.pt", "--out", "o",
                                      "--forget-k", "1", "--active-only", text])
    assert args.active_only is value


def test_a_bare_bool_option_means_true():
    base = ["unlearn", "--checkpoint", "c.pt", "--out", "o", "--forget-k", "1"]
    assert build_parser().parse_args(base + ["--robust"]).robust is True
    assert build_parser().parse_args(base + ["--robust", "false"]).robust is False
    assert build_parser().parse_args(base).robust is None          # the recipe decides


def test_bad_bool_and_usage_errors_are_one_line(capsys):
    assert main(["unlearn", "--checkpoint", "c.pt", "--out", "o", "--forget-k", "1",
                 "--adv-exclude-new-label", "maybe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: argument --adv-exclude-new-label: expected true/false, 1/0 or "
                   "yes/no, got 'maybe'; see 'python -m kit unlearn --help'"]
    assert main(["unlearn", "--forget-k", "1"]) == 2
    assert "required: --out" in capsys.readouterr().err
    assert main(["unlearn", "--forget-k", "1", "--out", "o"]) == 2
    assert "one of the arguments --checkpoint --arch is required" in capsys.readouterr().err


def _run(args):
    return main([str(a) for a in args])


def test_unlearn_writes_model_and_results(ckpt, tmp_path):
    out = tmp_path / "run"
    # the default with its release brought forward (the shipped one: test_unlearn.py)
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-k", 8, "--seed", 1,
                 "--method", "adv+imp", "--aug-release-from", 300, "--out", out])
    row = pd.read_csv(out / "results.csv").iloc[0]
    side = json.loads((out / "results.json").read_text())
    assert (out / "model.pt").is_file() and (out / "model.json").is_file()
    assert code == (0 if row["reached"] else 1)
    assert row["acc_forget_before"] == 1.0 and row["k"] == 8
    assert {"acc_retain_after", "acc_test_after", "steps", "sec_total"} <= set(row.index)
    assert len(side["config"]["forget_ids"]) == 8 and side["config"]["method"] == "adv+imp"
    assert side["config"]["recipe"] == "default"
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]       # no temporary left


def test_objective_not_reached_exits_1_and_still_writes(ckpt, tmp_path):
    out = tmp_path / "run"
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-k", 4, "--method", "neggrad",
                 "--lr", 1e-9, "--max-steps", 1, "--retain-max", 100, "--out", out])
    assert code == 1
    assert not pd.read_csv(out / "results.csv").iloc[0]["reached"]


def test_unexpected_failure_exits_3_in_one_line_traceback_with_debug(ckpt, tmp_path, capsys,
                                                                      monkeypatch):
    import kit.evaluation.metrics

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(kit.evaluation.metrics, "split_accuracies", boom)
    args = ["unlearn", "--checkpoint", ckpt, "--forget-k", 2, "--out", tmp_path / "o"]
    assert _run(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unexpected failure (RuntimeError: boom)")
    assert _run([*args, "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unexpected")
    assert not (tmp_path / "o").exists()


def test_forget_ids_file_and_relabel(ckpt, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("3\n14\n15\n92\n")
    labels = tmp_path / "new.txt"
    from kit.core.data import gather
    from kit import load_dataset
    y = gather(load_dataset("mnist5k").train, IDS)[1].numpy()
    labels.write_text(" ".join(str((v + 1) % 10) for v in y))
    out = tmp_path / "rl"
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-ids", ids, "--objective", "relabel",
                 "--new-labels", labels, "--method", "adv+imp", "--aug-release-from", 300,
                 "--out", out])
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert code == 0 and row["acc_relabel_after"] == 1.0


IDS = [3, 14, 15, 92]


def test_earlier_ids_join_the_anchors_and_are_measured(ckpt, tmp_path, monkeypatch):
    # continual unlearning from the command line: the earlier instances reach the engine as
    # earlier_x (their images, in order) and, by default, as held images with their labels;
    # the results say where they stand
    import kit.method.engine
    from kit import load_dataset
    from kit.core.data import gather

    seen = {}
    real = kit.method.engine.unlearn

    def spy(*args, earlier_x=None, hold=None, **kw):
        seen.update(earlier_x=earlier_x, hold=hold)
        return real(*args, earlier_x=earlier_x, hold=hold, **kw)
    monkeypatch.setattr(kit.method.engine, "unlearn", spy)
    out = tmp_path / "run"
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-ids", _write(tmp_path / "f.txt", "5 6"),
                 "--earlier-ids", _write(tmp_path / "e.txt", " ".join(map(str, IDS))),
                 "--max-steps", 5, "--pgd-steps", 3, "--per-instance", 1, "--retain-max", 100,
                 "--out", out])
    assert code in (0, 1)
    x, y = gather(load_dataset("mnist5k").train, IDS)
    assert torch.equal(seen["earlier_x"], x)
    assert torch.equal(seen["hold"][0], x) and torch.equal(seen["hold"][1], torch.as_tensor(y))
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["acc_earlier_before"] == 1.0 and 0 <= row["acc_earlier_after"] <= 1
    side = json.loads((out / "results.json").read_text())
    assert side["config"]["earlier_ids"] == IDS and side["config"]["hold"] is True
    # --no-hold: the anchors only; neggrad (no anchors) holds them only
    for extra, method, want_x, want_hold in ((["--no-hold"], "adv+imp", True, False),
                                             ([], "neggrad", False, True)):
        code = _run(["unlearn", "--checkpoint", ckpt, "--forget-ids", tmp_path / "f.txt",
                     "--earlier-ids", tmp_path / "e.txt", "--method", method, *extra,
                     "--max-steps", 2, "--pgd-steps", 3, "--per-instance", 1,
                     "--retain-max", 100, "--out", tmp_path / f"run_{method}"])
        assert code in (0, 1)
        assert (seen["earlier_x"] is not None) == want_x
        assert (seen["hold"] is not None) == want_hold


def _relabel(p, labels):
    return ["--forget-ids", _write(p / "ids.txt", " ".join(map(str, IDS))), "--objective",
            "relabel", "--new-labels", _write(p / "nl.txt", " ".join(map(str, labels)))]


@pytest.mark.parametrize("make_bad, message", [
    (lambda p, y: ["--forget-ids", _write(p / "ids.txt", "1 2 999999")], "out of range"),
    (lambda p, y: ["--forget-ids", _write(p / "ids.txt", "1 1 2")], "duplicates"),
    (lambda p, y: ["--forget-ids", _write(p / "ids.txt", "1 2.5")], "must hold integers only"),
    (lambda p, y: ["--forget-ids", p / "missing.txt"], "does not exist"),
    (lambda p, y: ["--forget-k", 0], "out of range"),
    (lambda p, y: ["--forget-ids", _write(p / "ids.txt", "1 2"),
                   "--earlier-ids", _write(p / "e.txt", "2 7")], "share 1 instance: [2]"),
    (lambda p, y: ["--forget-k", 2, "--earlier-ids", _write(p / "e.txt", "7 999999")],
     "--earlier-ids: "),
    (lambda p, y: ["--forget-k", 2, "--method", "neggrad", "--no-hold",
                   "--earlier-ids", _write(p / "e.txt", "7")], "has none"),
    (lambda p, y: ["--forget-k", 2, "--hold"], "this run has no --earlier-ids"),
    (lambda p, y: _relabel(p, (y + 1) % 10) + ["--hold", "--earlier-ids",
                                               _write(p / "e.txt", "7")],
     "this run has --objective relabel"),
    (lambda p, y: ["--forget-k", 4, "--objective", "relabel",
                   "--new-labels", _write(p / "nl.txt", "1 2 3 42")], "out of range"),
    (lambda p, y: _relabel(p, (y + 1) % 10)[:-2] + ["--new-labels", _write(p / "n.txt", "1 2 3")],
     "--new-labels has 3 labels for 4 forget instances"),
    (lambda p, y: _relabel(p, y), "equal the true label"),
    (lambda p, y: _relabel(p, (y + 1) % 10)[:2] + ["--new-labels", p / "nl.txt"],
     "--new-labels only makes sense with --objective relabel"),
    (lambda p, y: ["--forget-k", 4, "--dataset", "cifar10", "--root", p], "CIFAR10 not found"),
    (lambda p, y: ["--forget-k", 4, "--dataset", "nope"], "valid names"),
    (lambda p, y: ["--forget-k", 4, "--checkpoint", p / "none.pt"], "does not exist; pre-train"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(ckpt, tmp_path, capsys, make_bad, message,
                                                       mnist5k):
    from kit.core.data import gather

    y = gather(mnist5k.train, IDS)[1].numpy()
    out = tmp_path / "out"
    code = _run(["unlearn", "--checkpoint", ckpt, "--out", out, *make_bad(tmp_path, y)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_checkpoint_for_another_dataset_is_refused(ckpt, tmp_path, capsys):
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes())
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    meta["dataset"] = "cifar10"
    other.with_suffix(".json").write_text(json.dumps(meta))
    code = _run(["unlearn", "--checkpoint", other, "--forget-k", 4, "--out", tmp_path / "o"])
    assert code == 2 and "trained on 'cifar10'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _write(path, text):
    path.write_text(text)
    return path


def test_folder_dataset_pretrain_and_unlearn(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, colour in enumerate(((250, 20, 20), (20, 20, 250))):
            d = tmp_path / "imgs" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255)
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.png")
    ds = f"folder:{tmp_path / 'imgs'}"
    ck = tmp_path / "ck.pt"
    assert _run(["pretrain", "--dataset", ds, "--image-size", 16, "--epochs", 3,
                 "--out", ck]) == 0
    out = tmp_path / "u"
    code = _run(["unlearn", "--checkpoint", ck, "--dataset", ds, "--image-size", 16,
                 "--forget-k", 2, "--method", "neggrad", "--out", out])
    assert code in (0, 1) and (out / "results.csv").is_file()
