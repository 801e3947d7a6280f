"""`python -m kit grid PARAMS.yaml --out DIR`: an experiment grid on Ray (or --serial).

The parameters file names the grid's axes (data sets x architectures x methods x k x
seeds, optionally variants) and its options; its format is in `kit.experiments.grid_spec`
and the README. Cells run as Ray tasks on a local Ray (this machine's cores), or on a
cluster with --address or $RAY_ADDRESS; cached cells are loaded, so a rerun resumes an
interrupted grid. --out gets grid.csv (one row per cell, a failed cell with its `error`)
and grid.json, all or nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .inputs import UsageError, bad_input

EXIT_CODES = """\
exit codes:
  0  every cell ran (grid.csv and grid.json written)
  1  some cells failed: their rows carry the error, the others are kept and written
  2  bad input (parameters file, --address, --out): one line 'error: ...'; nothing written
  3  unexpected failure; nothing written (add --debug for the traceback)
"""


def add_grid_parser(sub) -> None:
    """Register the `grid` command on the subparsers `sub` of `python -m kit`."""
    if isinstance(sub.metavar, str) and "grid" not in sub.metavar:   # the usage line's list
        sub.metavar = sub.metavar.rstrip("}") + ",grid}"
    g = sub.add_parser("grid", help="run a grid of unlearning runs as Ray tasks (many cores "
                                    "or a cluster)",
                       description="Run every cell of a grid (data sets x architectures x "
                                   "methods x k x seeds)\nas a Ray task; write grid.csv + "
                                   "grid.json into --out.", epilog=EXIT_CODES)
    g.add_argument("params", metavar="PARAMS.yaml",
                   help="the grid: datasets, archs, methods, ks, seeds and options (see "
                        "params/grids/example.yaml)")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to run on: ray://HEAD:10001 (Ray Client) or HOST:6379 "
                        "from a cluster node (default: $RAY_ADDRESS, else a local Ray on "
                        "this machine's cores)")
    g.add_argument("--serial", action="store_true",
                   help="run the cells one after another in this process, without Ray")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="output folder for grid.csv and grid.json; a non-empty one needs "
                        "--overwrite")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only once the new one is complete)")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the full traceback of an unexpected failure")


def cmd_grid(args) -> int:
    from ..experiments.grid import load_grid, run_cells, save_grid, start_ray
    from .commands import check_out_folder   # imported here: commands registers this one

    if args.serial and args.address:
        raise UsageError("--serial runs without Ray; drop --address (or --serial)")
    if not Path(args.params).is_file():
        raise UsageError(f"parameters file '{args.params}' does not exist or is not a file")
    with bad_input():
        cells, place, params = load_grid(args.params)
    check_out_folder(args.out, [("parameters file", args.params),
                                ("cache folder", place["cache_dir"]),
                                ("current folder", Path.cwd())], overwrite=args.overwrite)
    started = False
    if not args.serial:
        try:
            import ray
        except ImportError:
            raise UsageError("the grid runs on Ray, which is not installed: pip install "
                             "'ray[client]' (or add --serial)") from None
        with bad_input("--address: "):
            started = start_ray(args.address)
    try:
        table = run_cells(cells, backend="serial" if args.serial else "ray", **place)
    finally:
        if started:
            ray.shutdown()
    address = None if args.serial else args.address or os.environ.get("RAY_ADDRESS") or "local"
    config = {"params": params, "params_file": str(args.params),
              "backend": "serial" if args.serial else "ray", "address": address}
    try:
        path = save_grid(table, args.out, config=config, overwrite=args.overwrite)
    except FileExistsError as e:                     # another run wrote --out meanwhile
        raise UsageError(f"--out: {e}") from e
    failed = table[table["error"] != ""]
    for _, row in failed.iterrows():
        print(f"cell {row['dataset']}/{row['arch']}/{row['method']} k={row['k']} "
              f"seed={row['seed']} failed: {row['error']}", file=sys.stderr)
    print(f"{len(table) - len(failed)} of {len(table)} cells done; wrote {path}")
    return 1 if len(failed) else 0
