"""Every notebook runs under papermill with tiny parameters, and nbval (lax) reproduces the
cells marked `# NBVAL_CHECK_OUTPUT` when the executed copy is run again.

The committed notebooks carry the outputs of their default run (`make notebooks`); a test
checks that they were executed without errors and that each has a tagged parameters cell.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FAST = {"pgd_steps": 5, "per_instance": 2, "max_steps": 20}
TINY = {  # per notebook: parameters small enough for seconds on a CPU
    "00_pretrain": dict(epochs=1),
    "01_unlearn": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                       retain_max=300),
    "02_relabel": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                       retain_max=300),
    "03_confusion": dict(k=4, seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST),
    "04_tsne": dict(k=4, methods=["neggrad", "adv+imp"], overrides=FAST, retain_sample=60),
    "05_cka": dict(k=4, methods=["neggrad", "adv+imp"], overrides=FAST, retain_sample=60),
    "06_continual": dict(k=4, n_requests=2, seeds=[0], methods=["neggrad", "adv+imp"],
                         overrides=FAST, retain_max=300),
    "08_hparams": dict(ks=[4], seeds=[0], max_steps=10,
                       chain=[["official, cheap attack", {"pgd_steps": 5, "per_instance": 2}],
                              ["frozen BN", {"bn_mode": "frozen"}]]),
    "07_baselines": dict(ks=[4], seeds=[0], methods=["neggrad", "adv+imp"], overrides=FAST,
                         baselines=["finetune", "random_labels"], retrain_epochs=1,
                         retain_max=300, baseline_hp={"random_labels": {"epochs": 2}}),
}


def _names():
    return [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, pretrained_cnn):
    """A scratch artifacts folder that already holds the default pre-trained checkpoint."""
    work = tmp_path_factory.mktemp("nb")
    ckpts = work / "artifacts" / "checkpoints"
    ckpts.mkdir(parents=True)
    for f in (ROOT / "artifacts" / "checkpoints").glob("pretrained_*"):
        shutil.copy(f, ckpts / f.name)
    return work


@pytest.mark.parametrize("name", _names())
def test_committed_notebook_was_executed_cleanly(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no parameters cell"
    assert all(c.execution_count is not None for c in code), "commit the executed notebook"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert not any("def " in c.source.split("\n")[0] or "sys.path" in c.source for c in code)


@pytest.mark.parametrize("name", _names())
def test_notebook_runs_with_tiny_parameters_and_reproduces(name, workdir):
    assert name in TINY, f"add tiny parameters for {name} to TINY in this file"
    params = dict(TINY[name], out_dir=str(workdir / "artifacts"), fig_dir=str(workdir / "figures"),
                  data_root=str(workdir / "data"))
    executed = workdir / f"{name}.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(executed),
                        parameters=params, cwd=str(ROOT / "notebooks"), kernel_name="python3",
                        progress_bar=False)
    assert list((workdir / "figures").glob("*.png")), "the notebook drew no figure"
    # nbval re-executes the executed copy and compares the cells marked for checking
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--nbval-lax", str(executed)], cwd=workdir, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
