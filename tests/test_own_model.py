"""Your own model through the CLI: a torchvision network trained outside the kit on a
generated ImageFolder, forget ids given as file names, the unlearned weights written back as
a plain state_dict; bad input refused before any compute; `evaluate`; `--forget-class`."""
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from kit.cli import main

ARCH = "shufflenet_v2_x0_5"            # small, and fits 36 images in a few CPU seconds
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
COLOURS = {"cat": (230, 40, 40), "dog": (40, 230, 40), "owl": (40, 40, 230)}
FORGET = ["cat/img_003.png", "dog/img_005.png"]


def _run(*args):
    return main([str(a) for a in args])


def _fresh(num_classes=3):
    return torchvision.models.get_model(ARCH, weights=None, num_classes=num_classes)


def _own_transform():
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A generated ImageFolder, and a model trained on it outside the kit (its own transform,
    its own loop) until it fits every training image; its state_dict saved as users do."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for name, colour in COLOURS.items():
            folder = root / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                px = np.clip(np.array(colour) + rng.integers(-40, 40, (32, 32, 3)), 0, 255)
                Image.fromarray(px.astype(np.uint8)).save(folder / f"img_{i:03d}.png")
    train = torchvision.datasets.ImageFolder(str(root / "images" / "train"), _own_transform())
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor(train.targets)
    torch.manual_seed(0)
    net = _fresh()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for step in range(120):
        net.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            if step >= 5 and bool((net(x).argmax(1) == y).all()):
                break
    assert bool((net(x).argmax(1) == y).all()), "the user's model should fit its training images"
    torch.save(net.state_dict(), root / "my_weights.pt")
    (root / "forget.txt").write_text("\n".join(FORGET) + "\n")
    return root


def _model_args(user, weights=None):
    return ["--arch", f"torchvision:{ARCH}", "--weights", weights or user / "my_weights.pt",
            "--num-classes", 3, "--mean", ",".join(map(str, MEAN)),
            "--std", ",".join(map(str, STD)), "--dataset", f"folder:{user / 'images'}",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def unlearned(user):
    out = user / "run"
    code = _run("unlearn", *_model_args(user), "--forget-ids", user / "forget.txt",
                "--max-steps", 800, "--aug-release-from", 300, "--out", out)
    # the default, its release of the pending instances' transforms brought forward from step
    # 2,000 to 300 to keep the test short (32 transforms of two images in every step hold them)
    return code, out


def test_own_torchvision_model_unlearns_file_names_and_loads_back_strictly(user, unlearned):
    code, out = unlearned
    assert code == 0                                              # the objective was reached
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt", "results.csv",
                                                     "results.json"]
    fresh = _fresh()
    state = torch.load(out / "model.pt", weights_only=True)
    fresh.load_state_dict(state, strict=True)                     # the user's own format
    before = torch.load(user / "my_weights.pt", weights_only=True)
    assert any(not torch.equal(before[k], v) for k, v in state.items())

    side = json.loads((out / "model.json").read_text())
    train = torchvision.datasets.ImageFolder(str(user / "images" / "train"))
    ids = [[p for p, _ in train.samples].index(str(user / "images" / "train" / f))
           for f in FORGET]
    assert side["arch"] == f"torchvision:{ARCH}" and side["num_classes"] == 3
    assert side["mean"] == list(MEAN) and side["std"] == list(STD)
    assert side["method"] == "adv+imp" and side["format"] == "state_dict"
    assert side["forget_ids"] == ids and side["forget_paths"] == FORGET
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["acc_forget_before"] == 1.0 and row["acc_forget_after"] == 0.0 and row["k"] == 2

    # in the user's own pipeline (own transform, no kit), the forget images are now misclassified
    fresh.eval()
    own = torchvision.datasets.ImageFolder(str(user / "images" / "train"), _own_transform())
    with torch.no_grad():
        pred = fresh(torch.stack([own[i][0] for i in ids])).argmax(1)
    assert (pred != torch.tensor([own.targets[i] for i in ids])).all()


def _wrong_head(user):
    path = user / "five_classes.pt"
    torch.save(_fresh(num_classes=5).state_dict(), path)
    return path


def _replace(args, flag, value):
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize("change, message", [
    (lambda u, a: _replace(a, "--arch", "torchvision:resnet81"), "did you mean resnet18"),
    (lambda u, a: _replace(a, "--arch", "resnet18"), "missing keys ['conv1.weight'"),
    (lambda u, a: _replace(a, "--weights", _wrong_head(u)),
     "wrong shapes ['fc.weight: file (5, 1024) vs model (3, 1024)', 'fc.bias"),
    (lambda u, a: _replace(a, "--weights", u / "none.pt"), "does not exist"),
    (lambda u, a: _replace(a, "--num-classes", 4), "the model has 4 classes but"),
    (lambda u, a: _replace(_replace(a, "--mean", "0.5,0.5"), "--std", "1,1"),
     "give one value per channel"),
    (lambda u, a: _replace(a, "--std", "0.25,0.25"), "--mean has 3 values but --std has 2"),
    (lambda u, a: _replace(a, "--mean", "0.5,red,0.5"), "must be finite numbers"),
    (lambda u, a: _replace(a, "--std", "0.25,0,0.25"), "--std values must be > 0"),
    (lambda u, a: a[:a.index("--mean")] + a[a.index("--mean") + 2:], "go together"),
    (lambda u, a: a[:a.index("--weights")] + a[a.index("--weights") + 2:], "needs --weights"),
    (lambda u, a: ["--checkpoint", u / "my_weights.pt", *a], "not allowed with argument"),
    (lambda u, a: a[a.index("--num-classes"):], "one of the arguments --checkpoint --arch"),
    (lambda u, a: [*a, "--forget-ids", _text(u / "bad.txt", "cat/img_003.png\ncat/nope.png\n"
                                                            "bird/x.png\n")],
     "2 of 3 entries are not training images"),
    (lambda u, a: [*a, "--forget-ids", _text(u / "ids.txt", "1 2 99")], "out of range: [99]"),
    (lambda u, a: [*a, "--forget-ids", _text(u / "twice.txt", "cat/img_003.png\n"
                                                              "./cat/img_003.png\n")],
     "names some images twice"),
    (lambda u, a: [*a, "--forget-class", "bird"], "is not a class"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(user, tmp_path, capsys, change,
                                                             message):
    args = change(user, _model_args(user))
    if not any(str(a).startswith("--forget-") for a in args):
        args += ["--forget-ids", user / "forget.txt"]
    listing = sorted(p.name for p in user.iterdir())
    assert _run("unlearn", *args, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in user.iterdir()) == listing


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_without_timm_names_the_extra(user, tmp_path, capsys):
    args = _replace(_model_args(user), "--arch", "timm:resnet18")
    assert _run("unlearn", *args, "--forget-k", 2, "--out", tmp_path / "o") == 2
    assert "pip install timm" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _text(path, text):
    path.write_text(text)
    return path


def test_evaluate_writes_one_report_with_reference(user, unlearned, tmp_path, capsys):
    _, run = unlearned
    out = tmp_path / "report"
    # the unlearned weights come back in with the sidecar the kit wrote; the reference is
    # plain weights of the same architecture
    code = _run("evaluate", "--checkpoint", run / "model.pt", "--dataset",
                f"folder:{user / 'images'}", "--forget-ids", user / "forget.txt",
                "--reference", user / "my_weights.pt", "--out", out)
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.json"]
    row = pd.read_csv(out / "report.csv").iloc[0]
    fractions = ["acc_forget", "acc_retain", "acc_test", "acc_forget_shift", "acc_forget_noise",
                 "mia_auc", "mia_member_rate", "mia_efficacy", "mia_member_rate_ref",
                 *(f"{m}_{s}" for m in ("acc_ref", "agreement")
                   for s in ("forget", "retain", "test"))]
    for col in fractions:
        assert 0.0 <= row[col] <= 1.0, col
    assert row["acc_forget"] == 0.0 and row["acc_ref_forget"] == 1.0   # forgotten vs before
    assert row["agreement_forget"] == 0.0
    assert all(row[f"kl_{s}"] >= 0 for s in ("forget", "retain", "test"))
    assert row["k"] == 2 and row["n_retain"] == 34 and row["n_test"] == 18
    config = json.loads((out / "report.json").read_text())["config"]
    assert config["forget_paths"] == FORGET and config["attack"] == "loss_logreg"


def test_forget_class_selects_exactly_the_class(user, tmp_path):
    train = torchvision.datasets.ImageFolder(str(user / "images" / "train"))
    dogs = [i for i, t in enumerate(train.targets) if train.classes[t] == "dog"]
    for i, which in enumerate(("dog", "1")):                   # a name, or an index
        out = tmp_path / f"r{i}"
        assert _run("evaluate", *_model_args(user), "--forget-class", which, "--out", out) == 0
        config = json.loads((out / "report.json").read_text())["config"]
        assert config["forget_ids"] == dogs
        assert all(p.startswith("dog/") for p in config["forget_paths"])
        assert pd.read_csv(out / "report.csv").iloc[0]["k"] == 12
    out = tmp_path / "u"
    code = _run("unlearn", *_model_args(user), "--forget-class", "owl", "--method", "neggrad",
                "--max-steps", 1, "--out", out)
    assert code in (0, 1)
    owls = [i for i, t in enumerate(train.targets) if train.classes[t] == "owl"]
    assert json.loads((out / "model.json").read_text())["forget_ids"] == owls
