"""`python -m kit`: real defaults in --help, one deletion request end to end, bad input."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import save_checkpoint
from kit.cli import build_parser, main
from kit.unlearn import RECIPES


@pytest.fixture(scope="module")
def ckpt(pretrained_cnn, tmp_path_factory):
    model, data = pretrained_cnn
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(model, path, dataset=data.name, seed=0)
    return path


def test_help_shows_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["unlearn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = RECIPES["default"]
    for name in ("lr", "eps", "max_steps", "per_instance", "lam", "bn_mode"):
        flag = "--" + name.replace("_", "-")
        assert flag in text
        assert f"(default: {getattr(d, name)})" in text


def _run(args):
    return main([str(a) for a in args])


def test_unlearn_writes_model_and_results(ckpt, tmp_path):
    out = tmp_path / "run"
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-k", 8, "--seed", 1,
                 "--method", "adv+imp", "--out", out])
    row = pd.read_csv(out / "results.csv").iloc[0]
    side = json.loads((out / "results.json").read_text())
    assert (out / "model.pt").is_file() and (out / "model.json").is_file()
    assert code == (0 if row["reached"] else 1)
    assert row["acc_forget_before"] == 1.0 and row["k"] == 8
    assert {"acc_retain_after", "acc_test_after", "steps", "sec_total"} <= set(row.index)
    assert len(side["config"]["forget_ids"]) == 8 and side["config"]["method"] == "adv+imp"


def test_forget_ids_file_and_relabel(ckpt, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("3\n14\n15\n92\n")
    labels = tmp_path / "new.txt"
    from kit.data import gather
    from kit import load_dataset
    y = gather(load_dataset("mnist5k").train, [3, 14, 15, 92])[1].numpy()
    labels.write_text(" ".join(str((v + 1) % 10) for v in y))
    out = tmp_path / "rl"
    code = _run(["unlearn", "--checkpoint", ckpt, "--forget-ids", ids, "--objective", "relabel",
                 "--new-labels", labels, "--method", "adv+imp", "--out", out])
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert code == 0 and row["acc_relabel_after"] == 1.0


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: ["--forget-ids", _write(p / "ids.txt", "1 2 999999")], "out of range"),
    (lambda p: ["--forget-ids", _write(p / "ids.txt", "1 1 2")], "duplicates"),
    (lambda p: ["--forget-k", 0], "out of range"),
    (lambda p: ["--forget-k", 4, "--objective", "relabel",
                "--new-labels", _write(p / "nl.txt", "1 2 3 42")], "out of range"),
    (lambda p: ["--forget-k", 4, "--dataset", "cifar10", "--root", p], "CIFAR10 not found"),
    (lambda p: ["--forget-k", 4, "--dataset", "nope"], "valid names"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(ckpt, tmp_path, capsys, make_bad, message):
    out = tmp_path / "out"
    code = _run(["unlearn", "--checkpoint", ckpt, "--out", out, *make_bad(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
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
