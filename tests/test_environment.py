"""environment.yml (conda) must install what pyproject.toml declares, with the same pins."""
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
