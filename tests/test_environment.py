"""environment.yml (conda) must install what pyproject.toml declares, with the same pins; the
Makefile checks the disk before it creates an environment; CI builds it where the space is."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:                                       # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines):
    """{canonical name: specifier string} of requirement lines; a name may appear once."""
    reqs = [Requirement(line) for line in lines]
    names = [canonicalize_name(r.name) for r in reqs]
    assert len(names) == len(set(names)), f"duplicate requirements: {names}"
    return {canonicalize_name(r.name): str(r.specifier) for r in reqs}


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _conda_and_pip(env):
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1, "environment.yml needs exactly one pip: section"
    return conda, pips[0]


def test_environment_header(env):
    assert env["name"] == "unlearning-kit"
    assert env["channels"] == ["conda-forge"]
    conda, _ = _conda_and_pip(env)
    assert "pip" in conda and "python=3.11" in conda


def test_conda_python_satisfies_requires_python(env, project):
    conda, _ = _conda_and_pip(env)
    python = next(d.split("=", 1)[1] for d in conda if d.startswith("python="))
    assert SpecifierSet(project["requires-python"]).contains(python + ".0")


def test_pip_section_matches_pyproject_dependencies(env, project):
    _, pip = _conda_and_pip(env)
    assert pip[-1] == "-e .[dev]", "the kit itself is installed last, editable, with its dev extra"
    assert _requirements(pip[:-1]) == _requirements(project["dependencies"])
    # same order too, so a diff of the two lists reads line by line
    assert [canonicalize_name(Requirement(p).name) for p in pip[:-1]] == [
        canonicalize_name(Requirement(d).name) for d in project["dependencies"]]


def test_pins_are_exact_where_pyproject_pins(env, project):
    _, pip = _conda_and_pip(env)
    pinned = {k: v for k, v in _requirements(project["dependencies"]).items() if v}
    assert pinned, "pyproject pins torch and torchvision"
    assert {k: v for k, v in _requirements(pip[:-1]).items() if v} == pinned


def test_dev_extra_holds_the_notebook_and_test_tools(project):
    dev = _requirements(project["optional-dependencies"]["dev"])
    assert {"pytest", "nbval", "papermill", "jupyterlab", "ipykernel", "ipywidgets"} <= set(dev)
    assert not set(dev) & set(_requirements(project["dependencies"]))


def test_makefile_installs_the_dev_extra():
    assert "-e .[dev]" in (ROOT / "Makefile").read_text()


def _make(*args):
    return subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True)


def test_a_new_environment_on_a_full_disk_is_one_clear_error_and_creates_nothing(tmp_path):
    venv = tmp_path / "venv"
    r = _make(f"VENV={venv}", "VENV_GB=1e9", f"{venv}/.installed")   # more than any disk
    assert r.returncode == 2, r.stderr
    assert f"a new environment in {venv} needs about 1e+09 GB of free disk" in r.stderr
    assert "make VENV=/larger/disk/venv" in r.stderr
    assert not venv.exists()


def test_the_disk_check_passes_where_the_space_is(tmp_path):
    r = _make("--eval", 'disk-ok: ; @$(PYTHON) -c "$$DISK_CHECK" $(VENV) $(VENV_GB)',
              f"VENV={tmp_path / 'venv'}", "VENV_GB=0.001", "disk-ok")
    assert r.returncode == 0, r.stderr
    r = _make("--eval", 'disk-ok: ; @$(PYTHON) -c "$$DISK_CHECK" $(VENV) $(VENV_GB)',
              f"VENV={tmp_path / 'venv'}", "VENV_GB=1e9", "disk-ok")
    assert r.returncode != 0 and "GB free" in r.stderr


def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    # benchmarks/gpu_check.sh on a machine without CUDA: one clear line and exit 2, before
    # any test or benchmark runs (none of its logs is written)
    import sys

    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run for minutes")
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PY": sys.executable, "OUT": str(out)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no GPU" in done.stderr
    assert list(out.iterdir()) == []


def _venv_dir_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("venv_dir", ROOT / ".ci" / "venv_dir.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("checkout_gb, shm_gb, memory_gb, where", [
    (50.0, 20.0, 22.0, "checkout"),   # room beside the checkout: .venv, as make test does
    (3.6, 20.0, 22.0, "shm"),         # 2026-12-01's CI machine: 3.6 GB free, /dev/shm 24 GB
    (3.6, 5.0, 22.0, "checkout"),     # no room in /dev/shm either: the Makefile's clear error
    (3.6, 20.0, 10.0, "checkout"),    # room, but too little memory left for the tests
])
def test_ci_builds_the_environment_where_the_space_is(tmp_path, monkeypatch, checkout_gb,
                                                       shm_gb, memory_gb, where):
    mod = _venv_dir_module()
    checkout, shm = tmp_path / "clone", tmp_path / "shm"
    checkout.mkdir(), shm.mkdir()
    free = {str(checkout): checkout_gb, str(shm): shm_gb}
    usage = shutil.disk_usage(tmp_path)                  # a real one, its free space replaced
    monkeypatch.setattr(mod.shutil, "disk_usage",
                        lambda p: usage._replace(free=int(free[str(p)] * 1e9)))
    got = mod.venv_dir(str(checkout), 6.5, shm=str(shm), memory_gb=memory_gb)
    assert got == str((shm / "kit-ci-venv") if where == "shm" else (checkout / ".venv"))


def test_ci_keeps_an_existing_environment(tmp_path, monkeypatch):
    mod = _venv_dir_module()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    monkeypatch.setattr(mod.shutil, "disk_usage", lambda p: pytest.fail("no disk check needed"))
    assert mod.venv_dir(str(tmp_path), 6.5, shm=str(tmp_path)) == str(tmp_path / ".venv")


def test_ci_reads_the_memory_the_kernel_reports(tmp_path):
    mod = _venv_dir_module()
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    assert mod.available_memory_gb(str(meminfo)) == pytest.approx(20000000 * 1024 / 1e9)
    assert mod.available_memory_gb(str(tmp_path / "missing")) == 0.0


def test_ci_run_reads_the_makefiles_environment_size():
    # .ci/run passes the Makefile's VENV_GB to venv_dir.py: the two must not drift apart
    import re
    assert re.search(r"^VENV_GB \?= [0-9.]+$", (ROOT / "Makefile").read_text(), re.M)
    assert "VENV_GB" in (ROOT / ".ci" / "run").read_text()
