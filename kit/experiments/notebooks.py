"""Run a notebook under papermill with its parameters checked first.

papermill only warns about a parameter the notebook does not declare, so a typo (`kss`)
silently runs the default grid. `execute` reads the declared parameters with
`papermill.inspect_notebook` and refuses unknown names before any cell runs.

    python -m kit.experiments.notebooks notebooks/01_unlearn.ipynb out.ipynb \\
        [-f params/cifar10.yaml [-f more.yaml]] [-p ks "[8, 32]"] ...
Exit status: 0 done, 2 unknown parameter or bad file, 1 a cell failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def declared(notebook: str | Path) -> dict:
    """{name: inferred info} of the notebook's parameters cell (papermill's inspection)."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    """Raise ValueError naming every parameter the notebook does not declare."""
    names = declared(notebook)
    unknown = sorted(set(parameters) - set(names))
    if unknown:
        raise ValueError(f"{Path(notebook).name} declares no parameter {unknown}; valid names: "
                         f"{', '.join(names)}")


def load_parameters(parameters_files=(), pairs=()) -> dict:
    """Parameters from YAML files (later ones win), then `name value` pairs (values parsed
    as YAML).

    >>> load_parameters([], [("ks", "[8, 32]"), ("device", "cpu")])
    {'ks': [8, 32], 'device': 'cpu'}
    """
    if isinstance(parameters_files, (str, Path)):
        parameters_files = [parameters_files]
    params = {}
    for parameters_file in parameters_files:
        loaded = yaml.safe_load(Path(parameters_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{parameters_file} must hold a mapping of parameter names")
        params.update(loaded)
    for name, value in pairs:
        params[name] = yaml.safe_load(value)
    return params


def execute(notebook: str | Path, output: str | Path, parameters: dict | None = None,
            parameters_file=None, *, cwd: str | Path | None = None,
            kernel_name: str = "python3"):
    """Check the parameters against the notebook, then execute it into `output` (cwd: the
    notebook's folder unless given). Returns the executed notebook.

    parameters_file: a YAML file (or a list of them) read first; `parameters` win over it.
    """
    import papermill as pm

    parameters = {**load_parameters(parameters_file or ()), **(parameters or {})}
    check_parameters(notebook, parameters)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return pm.execute_notebook(str(notebook), str(output), parameters=parameters,
                               cwd=str(cwd or Path(notebook).parent), kernel_name=kernel_name,
                               progress_bar=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kit.experiments.notebooks",
                                 description="execute a notebook with checked parameters")
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("-f", "--parameters-file", action="append", default=[],
                    help="YAML file of parameters (repeatable; later files win)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="one parameter (value parsed as YAML)")
    args = ap.parse_args(argv)
    try:
        params = load_parameters(args.parameters_file, args.parameter)
        check_parameters(args.notebook, params)
    except (ValueError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import papermill as pm

    try:
        execute(args.notebook, args.output, params)
    except pm.PapermillExecutionError as e:
        print(f"error: {args.notebook} failed in cell {e.exec_count}: {e.ename}: {e.evalue}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
