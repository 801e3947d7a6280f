"""Grids on Ray: a local Ray gives the serial path's rows, a rerun loads its cells from the
cache, a failing cell is an error row beside the others, and `python -m kit grid` refuses a
bad parameters file with one line and exit status 2."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kit.cli import main
from kit.experiments.grid import GRID_METHODS, Cell, load_grid, run_cells, start_ray

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(max_steps=5, pgd_steps=2, per_instance=1)      # seconds, not minutes, per cell
CELLS = [Cell("mnist5k", "cnn", method, 4, 0, overrides=tuple(sorted(TINY.items())),
              retain_max=500) for method in ("neggrad", "adv+imp")]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (RAY_ADDRESS set by the user is ignored); at teardown
    it is shut down and every process it started must be gone."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    assert start_ray()
    yield
    spawned = [p for p in me.children(recursive=True) if p.pid not in before]
    ray.shutdown()
    _, alive = psutil.wait_procs(spawned, timeout=20)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:                                  # never leave them behind, even on failure
        p.kill()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved
    assert not alive, f"Ray left processes behind: {[p.pid for p in alive]}"


@pytest.fixture
def cache(pretrained_cnn, tmp_path):
    """make(name): a fresh cache folder holding the session's pre-trained mnist5k CNN, so
    the cells only unlearn (pretrained_cnn's cache_dir is artifacts/checkpoints)."""
    def make(name):
        folder = tmp_path / name
        folder.mkdir()
        for f in Path("artifacts/checkpoints").glob("pretrained_mnist5k_cnn_*"):
            shutil.copy(f, folder)
        return folder
    return make


def _entries(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("unlearned_*")
            if p.suffix != ".lock"}            # the lock file each entry is filled under


def test_local_ray_gives_the_serial_rows_and_a_rerun_loads_them(local_ray, cache):
    serial = run_cells(CELLS, backend="serial", cache_dir=cache("serial"))
    on_ray_dir = cache("ray")
    on_ray = run_cells(CELLS, backend="ray", cache_dir=on_ray_dir)
    assert (serial["error"] == "").all() and serial["steps"].tolist() == [5, 5]
    # Ray workers are other processes, but run_cells gives each cell torch at one thread,
    # as this process has (conftest): the same operations in the same order on the same
    # CPU, so the rows are equal exactly, with no tolerance; only wall-clock seconds differ.
    same = [c for c in serial.columns if not c.startswith("sec_")]
    pd.testing.assert_frame_equal(on_ray[same], serial[same])

    entries = _entries(on_ray_dir)
    assert len(entries) == 3 * len(CELLS)            # .pt, .json and .run.json per cell
    assert len(list(on_ray_dir.glob("unlearned_*.lock"))) == len(CELLS)
    again = run_cells(CELLS, backend="ray", cache_dir=on_ray_dir)
    assert _entries(on_ray_dir) == entries           # loaded: no entry rewritten
    pd.testing.assert_frame_equal(again, on_ray)     # the recorded seconds included


@pytest.mark.parametrize("backend", ["ray", "serial"])
def test_a_failing_cell_is_an_error_row_and_the_others_are_kept(local_ray, cache, backend):
    bad_config = dataclasses.replace(CELLS[0], overrides=(("pgd_steps", 0),))
    bad_arch = dataclasses.replace(CELLS[0], arch="no_such_net")
    table = run_cells([bad_config, CELLS[1], bad_arch], backend=backend,
                      cache_dir=cache(backend))
    assert table["method"].tolist() == ["neggrad", "adv+imp", "neggrad"]
    assert "pgd_steps must be >= 1" in table["error"][0]
    assert table["error"][1] == "" and 0 <= table["acc_test"][1] <= 1
    assert table["error"][2].startswith("pre-training failed") and "no_such_net" in table["error"][2]


def test_the_grid_command_writes_the_table_and_its_sidecar(local_ray, cache, tmp_path, capsys):
    params = tmp_path / "grid.yaml"
    params.write_text(f"methods: [before, neggrad]\nks: [4]\nretain_max: 500\nconfig: {TINY}\n"
                      f"cache_dir: {cache('cli')}\n")
    assert main(["grid", params, "--out", tmp_path / "out"]) == 0
    table = pd.read_csv(tmp_path / "out" / "grid.csv", keep_default_na=False)
    assert table["method"].tolist() == ["before", "neggrad"] and (table["error"] == "").all()
    side = json.loads((tmp_path / "out" / "grid.json").read_text())["config"]
    assert side["backend"] == "ray" and side["params"]["config"] == TINY
    assert "2 of 2 cells done" in capsys.readouterr().out


@pytest.mark.parametrize("text, says", [
    ("methods: [neggrad\nks: [4]\n", "not valid YAML"),
    ("- neggrad\n", "mapping"),
    ("methods: [neggrad]\nks: [4]\nbatch: 3\n", "unknown key(s) ['batch']"),
    ("methods: [neggrad, nope]\nks: [4]\n", "unknown method(s) ['nope']"),
    ("methods: [neggrad]\n", "must name the grid's ks"),
    ("methods: [neggrad]\nks: [0]\n", "ks: expected a whole number >= 1"),
    ("methods: [neggrad]\nks: [4]\nconfig: {lr: -1}\n", "lr must be > 0"),
    ("methods: [neggrad]\nks: [4]\ndatasets: [mnist6k]\n", "unknown dataset 'mnist6k'"),
    ("methods: [neggrad]\nks: [4]\nvariants: {a: {R: 20}}\n",
     "variant 'a': unknown hyper-parameter(s) ['R']"),
    ("methods: [neggrad]\nks: [4]\nvariants: {a: {recipe: nope}}\n", "variant 'a': unknown recipe"),
    ("methods: [neggrad]\nks: [4]\nvariants: {a: {eps: 0}}\n", "variant 'a': eps must be > 0"),
    ("methods: [neggrad]\nks: [4]\nvariants: [a, b]\n", "variants must be a non-empty mapping"),
    ("methods: [neggrad]\nks: [4]\nvariants: {a: 3}\n", "variant 'a' must be a mapping"),
])
def test_a_bad_parameters_file_is_one_error_line_and_exit_2(tmp_path, capsys, text, says):
    params = tmp_path / "grid.yaml"
    params.write_text(text)
    assert main(["grid", params, "--out", tmp_path / "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and says in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_example_parameters_file_is_a_valid_grid():
    cells, place, params = load_grid(ROOT / "params" / "grids" / "example.yaml")
    assert len(cells) == len(params["datasets"]) * len(params["archs"]) * len(
        params["methods"]) * len(params["ks"]) * len(params["seeds"])
    assert {c.method for c in cells} <= set(GRID_METHODS) and place["threads"] == 1


def test_variants_cross_the_methods_over_recipe_and_config_and_before_runs_once(tmp_path):
    params = tmp_path / "grid.yaml"
    params.write_text("methods: [before, adv+imp, oracle]\nks: [4, 8]\nseeds: [0]\n"
                      "config: {max_steps: 7, lr: 0.001}\n"
                      "variants: {R2: {per_instance: 2}, distil: {recipe: distil, lr: 0.0002}}\n")
    cells, _, params = load_grid(params)
    got = [(c.k, c.method, c.variant, c.recipe, dict(c.overrides)) for c in cells]
    assert got == [
        (k, m, v, r, o) for k in (4, 8) for m, v, r, o in [
            ("before", "", "default", {"max_steps": 7, "lr": 0.001}),
            ("adv+imp", "R2", "default", {"max_steps": 7, "lr": 0.001, "per_instance": 2}),
            ("oracle", "R2", "default", {"max_steps": 7, "lr": 0.001, "per_instance": 2}),
            ("adv+imp", "distil", "distil", {"max_steps": 7, "lr": 0.0002}),
            ("oracle", "distil", "distil", {"max_steps": 7, "lr": 0.0002})]]
    assert params["variants"]["distil"] == {"recipe": "distil", "lr": 0.0002}


def test_each_variant_reaches_the_engine(cache):
    """Two variants differing only in the step budget: the serial rows carry the variant's
    name and each run stopped within its own budget."""
    from kit.experiments.grid import grid_cells

    cells = grid_cells(methods=["adv+imp"], ks=[4], config=dict(TINY, lr=1e-9),
                       variants={"one step": {"max_steps": 1}, "three": {"max_steps": 3}},
                       retain_max=500)
    table = run_cells(cells, backend="serial", cache_dir=cache("variants"))
    assert (table["error"] == "").all()
    assert table["variant"].tolist() == ["one step", "three"]
    assert table["steps"].tolist() == [1, 3]         # lr 1e-9: never reached, budget spent


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "explore").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_each_exploration_grid_is_valid_and_documented(path):
    """The sweeps behind docs/exploration.md load as grids, say how to run themselves, and
    the document names them."""
    cells, _, params = load_grid(path)
    assert cells and all(c.method in GRID_METHODS for c in cells)
    command = f"python -m kit grid params/explore/{path.name} --out artifacts/explore/{path.stem}"
    assert command in path.read_text()
    assert f"params/explore/{path.name}" in (ROOT / "docs" / "exploration.md").read_text()
    from kit.experiments.protocol import CALIBRATION, SECOND
    for split in (CALIBRATION, SECOND):              # a calibration model: its own requests
        if params["model_seed"] == split["model_seed"]:
            assert set(params["seeds"]) <= set(split["request_seeds"])


def test_a_notebooks_sweep_reads_the_runs_a_grid_made(cache, pretrained_cnn):
    """What `make run`'s idle core relies on: a cell the grid made is the entry the
    notebook's `sweep` of the same model, request, method and config reads (no entry
    rewritten, the recorded run), whatever the order they are made in."""
    from kit.experiments.runs import sweep
    from kit.method.recipes import resolve

    folder = cache("shared")
    grid = run_cells(CELLS, backend="serial", cache_dir=folder)
    entries = _entries(folder)
    model, data = pretrained_cnn
    rows = sweep(model, data, {"tiny": resolve("default", **TINY)}, methods=["neggrad", "adv+imp"],
                 ks=[4], seeds=[0], retain_max=500, cache_dir=folder)
    assert _entries(folder) == entries
    same = ["method", "steps", "reached", "sec_total", "acc_forget", "acc_test"]
    pd.testing.assert_frame_equal(rows[same], grid[same])


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "run").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_make_runs_grids_make_only_notebook_08s_robust_runs(path):
    """`make run`'s grid (the idle core's share of notebook 08's robust study) holds only
    runs that notebook makes with its defaults: same model, request, method and config, so
    the two meet in the same cache entries and nothing is made that no table shows."""
    import ast

    from kit.experiments.notebooks import declared
    from kit.experiments.protocol import REPORT
    from kit.method.recipes import resolve

    nb = {name: ast.literal_eval(p["default"])
          for name, p in declared(ROOT / "notebooks" / "08_hparams.ipynb").items()}
    ours = {(m, k, s, resolve(r, **nb["robust_overrides"])) for r in nb["robust_recipes"]
            for m in nb["robust_methods"] for k in nb["ks"] for s in nb["robust_seeds"]}
    cells, place, _ = load_grid(path)
    assert cells and (ROOT / place["cache_dir"]).resolve() == (    # the notebook's cache
        ROOT / "notebooks" / nb["out_dir"] / "checkpoints").resolve()
    for c in cells:
        assert (c.dataset, c.arch, c.model_seed, c.train_preset, c.epochs) == (
            nb["dataset"], nb["arch"], REPORT["model_seed"], nb["train_preset"], None)
        assert (c.method, c.k, c.seed, resolve(c.recipe, c.objective, **dict(c.overrides))) in ours
    assert str(path.relative_to(ROOT)) in (ROOT / "Makefile").read_text()   # make run uses it
