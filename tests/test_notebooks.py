"""The notebooks: committed clean, parameters papermill can parse, parameter files that name
only declared parameters, and every notebook run with tiny parameters then re-run by nbval
(lax), comparing the summary cells marked `# NBVAL_CHECK_OUTPUT`."""
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from kit.experiments.notebooks import check_parameters, declared, execute, load_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]
FAST = {"pgd_steps": 5, "per_instance": 2, "max_steps": 20}
STUDY = dict(k=4, methods=["neggrad", "adv+imp"], overrides=FAST)
TINY = {  # per notebook: parameters small enough for seconds on a CPU
    "00_pretrain": dict(model_seeds=[0]),      # the cached default (training: test_train.py)
    "01_unlearn": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp", "oracle"],
                       overrides=FAST, retain_max=300),
    "02_relabel": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                       retain_max=300),
    "03_confusion": dict(STUDY, seeds=[0]),
    "04_tsne": dict(STUDY, retain_sample=60),
    "05_cka": dict(STUDY, retain_sample=60),
    "06_continual": dict(STUDY, n_requests=2, seeds=[0], retain_max=300, plain_methods=["neggrad"],
                         unheld_methods=["neggrad"], forgetful_methods=["neggrad"]),
    "07_baselines": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                         baselines=["finetune", "random_labels", "random_labels@stop"],
                         retrain_epochs=1, retain_max=300,
                         baseline_hp={"random_labels": {"epochs": 2}, "random_labels@stop":
                                      {"stop_at_objective": True, "max_steps": 20}}),
    "08_hparams": dict(ks=[4], calibration_seeds=[100], heldout_seeds=[0], retain_max=300,
                       robust_methods=["neggrad"], robust_overrides=FAST, robust_seeds=[0],
                       robust_calibration_seeds=[100],
                       tune_grids={"random_labels": {"lr": [0.01]}},
                       chain=[["official, cheap", {"pgd_steps": 5, "per_instance": 2,
                                                   "max_steps": 10}],
                              ["frozen BN", {"bn_mode": "frozen"}]]),
    "09_transfer": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                        transfer_image_size=8, retain_max=300),
}


@pytest.mark.parametrize("name", NAMES)
def test_committed_clean_and_orchestrating_only(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])], "no parameters cell"
    assert all(c.execution_count is None and not c.outputs for c in code), \
        "commit the notebook without outputs (make run writes executed copies to artifacts/)"
    for c in code:
        lines = c.source.splitlines()
        assert not any(line.lstrip().startswith(("def ", "class ", "%run")) for line in lines)
        assert "sys.path" not in c.source
    assert "NBVAL_CHECK_OUTPUT" in code[-1].source, "end with a checked summary cell"


@pytest.mark.parametrize("name", NAMES)
def test_papermill_parses_every_parameter(name, caplog):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [line.split("=")[0].strip() for line in cell.source.splitlines()
                if line and not line.startswith((" ", "#")) and "=" in line.split("#")[0]]
    with caplog.at_level(logging.WARNING):
        params = declared(path)
    assert list(params) == assigned
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [n for n, p in params.items() if not p["help"]] == [], \
        "every parameter carries a comment naming its allowed values"
    assert "<=" not in cell.source and ">=" not in cell.source  # papermill's parser chokes


# the parameters every notebook shares, with one meaning and one default
SHARED = ("dataset", "arch", "train_preset", "device", "data_root", "out_dir", "fig_dir")
SAME_DEFAULT = SHARED + ("model_seed", "recipe", "overrides")


def test_one_parameter_vocabulary():
    params = {name: declared(ROOT / "notebooks" / f"{name}.ipynb") for name in NAMES}
    for name, p in params.items():
        assert set(SHARED) <= set(p), f"{name} lacks {sorted(set(SHARED) - set(p))}"
        assert not {"k", "ks"} <= set(p) and not {"seed", "seeds"} <= set(p), name
    for key in SAME_DEFAULT:
        defaults = {name: p[key]["default"] for name, p in params.items() if key in p}
        assert len(set(defaults.values())) == 1, f"{key} defaults differ: {defaults}"


def _applies_to(path: Path) -> list[str]:
    head = path.read_text().splitlines()[0]
    assert head.startswith("# notebooks:"), f"{path.name} must start with '# notebooks: ...'"
    listed = head.split(":", 1)[1].split()
    return NAMES if listed == ["all"] else listed


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_parameter_files_name_only_declared_parameters(path):
    params = yaml.safe_load(path.read_text())
    for name in _applies_to(path):
        assert name in NAMES, f"{path.name} names a notebook that does not exist: {name}"
        check_parameters(ROOT / "notebooks" / f"{name}.ipynb", params)
    assert not str(params.get("fig_dir", "x")).rstrip("/").endswith("../figures"), \
        "a parameter file must not overwrite the committed figures"


def test_unknown_parameter_is_an_error_before_running(tmp_path):
    nb = ROOT / "notebooks" / "01_unlearn.ipynb"
    with pytest.raises(ValueError, match=r"kss.*valid names: dataset"):
        execute(nb, tmp_path / "out.ipynb", {"kss": [8]})
    assert not (tmp_path / "out.ipynb").exists()
    res = subprocess.run([sys.executable, "-m", "kit.experiments.notebooks", str(nb),
                          str(tmp_path / "o.ipynb"), "-p", "kss", "[8]"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "kss" in res.stderr
    assert load_parameters([], [("ks", "[8, 32]")]) == {"ks": [8, 32]}
    typo = tmp_path / "typo.yaml"
    typo.write_text("ks: [8]\nseed: 0\n")                 # 01 takes seeds, not seed
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        execute(nb, tmp_path / "out.ipynb", {"ks": [4]}, parameters_file=typo)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, pretrained_cnn):
    """A scratch artifacts folder that already holds the default pre-trained checkpoint."""
    work = tmp_path_factory.mktemp("nb")
    ckpts = work / "artifacts" / "checkpoints"
    ckpts.mkdir(parents=True)
    for f in (ROOT / "artifacts" / "checkpoints").glob("pretrained_*"):
        shutil.copy(f, ckpts / f.name)
    return work


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_with_tiny_parameters_and_reproduces(name, workdir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")        # the kernel: one thread, as the caches
    params = dict(TINY[name], out_dir=str(workdir / "artifacts"),
                  fig_dir=str(workdir / "figures"), data_root=str(workdir / "data"))
    executed = workdir / f"{name}.ipynb"
    execute(ROOT / "notebooks" / f"{name}.ipynb", executed, params)
    assert list((workdir / "figures").glob("*.png")), "the notebook drew no figure"
    # nbval re-executes the executed copy and compares the cells marked for checking
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--nbval-lax", str(executed)], cwd=workdir, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
