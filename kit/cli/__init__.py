"""Command line: `python -m kit pretrain | unlearn | evaluate | grid | download`.

The unlearning options are generated from `kit.method.config.UnlearnConfig` (see
`kit.cli.parser`), so `--help` shows the real defaults of the chosen recipe and objective
and there is no second copy of them here. `unlearn` and `evaluate` take a kit checkpoint or
your own model (`--arch torchvision:resnet18 --weights FILE`; see `kit.cli.external`).
Exit codes: 0 success (objective reached), 1 objective not reached, 2 bad input (one
`error: ...` line; nothing written), 3 diverged or unexpected failure (one line; the
traceback with --debug; nothing written).
"""
from __future__ import annotations

import sys
import traceback

from .commands import COMMANDS, UsageError, read_ints
from .parser import EXIT_CODES, build_parser, chosen_recipe

__all__ = ["EXIT_CODES", "UsageError", "build_parser", "main", "read_ints"]


def main(argv=None) -> int:
    """Run one command; returns the exit status (see EXIT_CODES)."""
    from ..method.engine import Diverged

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = build_parser(*chosen_recipe(argv)).parse_args(argv)
    except SystemExit as e:                         # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    debug = getattr(args, "debug", False)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        failure, code, message = e, 2, f"error: {e}"
    except Diverged as e:
        failure, code, message = e, 3, f"error: {e}"
    except KeyboardInterrupt as e:
        failure, code, message = e, 130, "interrupted; the output was not written"
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 3
        failure, code, message = e, 3, (f"error: unexpected failure ({type(e).__name__}: {e}); "
                                        f"the output was not written; rerun with --debug for "
                                        f"the traceback")
    if debug:
        traceback.print_exception(failure)
    print(message, file=sys.stderr)
    return code
