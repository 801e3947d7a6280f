"""The argument parser of `python -m kit`.

Every unlearning hyper-parameter option is generated from the fields of
`kit.method.config.UnlearnConfig`: the help is `describe(name)`, string fields get their
`choices`, booleans parse true/false/1/0/yes/no, and the one default shown is the value of
the recipe and objective chosen on the same command line (`chosen_recipe` reads them in a
first pass), so `unlearn --recipe official --help` shows the official values.
"""
from __future__ import annotations

import argparse

from ..core.data import DATASETS
from ..core.models import MODELS
from ..core.train import PRESETS
from ..evaluation.privacy import MIA_ATTACKS
from ..core.utils import check_name
from ..method.config import FIELDS, METHODS, OBJECTIVES
from ..method.recipes import RECIPES, resolve

PROG = "python -m kit"
EXIT_CODES = """\
exit codes:
  0  success (unlearn: the objective was reached)
  1  unlearn: the objective was not reached within the step budget (the model and the
     results are still written)
  2  bad input: one line 'error: ...' names the problem and the fix; nothing is written
  3  the run diverged (NaN/inf loss) or failed unexpectedly; nothing is written
     (add --debug for the full traceback)
"""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, 'error: ...' (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


# ------------------------------------------------------------------ value types
def parse_bool(text: str) -> bool:
    """true/false, 1/0, yes/no (any case); anything else is a usage error."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, 1/0 or yes/no, got {text!r}")


def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value
    return parse


non_negative, positive = _whole(0), _whole(1)


def flag(name: str) -> str:
    """The command-line flag of a config field: lr -> --lr, adv_batch -> --adv-batch."""
    return "--" + name.replace("_", "-")


def _help(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


# ------------------------------------------------------------------ the parser
def chosen_recipe(argv) -> tuple[str, str]:
    """(recipe, objective) named on a command line, else the defaults (first pass)."""

    class Quiet(argparse.ArgumentParser):
        def error(self, message):
            raise ValueError(message)

    pre = Quiet(add_help=False)
    pre.add_argument("--recipe", default="default")
    pre.add_argument("--objective", default="misclassify")
    try:
        ns, _ = pre.parse_known_args(list(argv))
    except ValueError:
        return "default", "misclassify"
    return (ns.recipe if ns.recipe in RECIPES else "default",
            ns.objective if ns.objective in OBJECTIVES else "misclassify")


def describe(name: str) -> str:
    """One line of help for a field: what, unit, allowed values or range.

    >>> describe("eps")
    'attack radius ([0,1] pixel units; > 0)'
    """
    md = check_name(name, FIELDS, "hyper-parameter").metadata
    bits = [md["unit"]] if md["unit"] else []
    if md["choices"]:
        bits.append("one of " + ", ".join(md["choices"]))
    elif md["low"] is not None or md["high"] is not None:
        lo = "" if md["low"] is None else f"{'>' if md['low_open'] else '>='} {md['low']}"
        hi = "" if md["high"] is None else f"<= {md['high']}"
        bits.append(" and ".join(b for b in (lo, hi) if b))
    return md["help"] + (f" ({'; '.join(bits)})" if bits else "")


def _add_config_options(parser, recipe: str, objective: str) -> None:
    cfg = resolve(recipe, objective)
    group = parser.add_argument_group(
        f"unlearning hyper-parameters (defaults: recipe {recipe!r} for objective "
        f"{objective!r}; --recipe and --objective change them)")
    for name, f in FIELDS.items():
        kind, choices = type(f.default), f.metadata["choices"]
        default = getattr(cfg, name)
        shown = str(default).lower() if kind is bool else default
        opts = dict(default=None, help=_help(f"{describe(name)} (default: {shown})"))
        if kind is bool:
            opts.update(type=parse_bool, metavar="{true,false}", nargs="?", const=True)  # bare: true
        elif choices:
            opts.update(choices=choices)
        else:
            opts.update(type=kind, metavar=kind.__name__.upper())
        group.add_argument(flag(name), **opts)


def _add_common(p, *, out_help: str) -> None:
    p.add_argument("--dataset", default="mnist5k", metavar="NAME",
                   help=f"data set: one of {', '.join(DATASETS)}, or folder:PATH for an "
                        f"ImageFolder tree with train/ and test/ (default: mnist5k, embedded)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="folder of downloaded data sets (default: $KIT_DATA, else ./data)")
    p.add_argument("--image-size", type=positive, default=None, metavar="N",
                   help="image size for imagenet and folder: data sets (default: 224 for "
                        "imagenet, 32 for folder:)")
    p.add_argument("--seed", type=non_negative, default=0, metavar="N", help="random seed, >= 0 (default: 0)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when available, else cpu), cpu, cuda, "
                        "cuda:N or mps (default: auto)")
    p.add_argument("--out", required=True, metavar="PATH", help=out_help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only once the new one is complete)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the full traceback of an unexpected failure")


def _add_model_options(p) -> None:
    g = p.add_argument_group("the model: a kit checkpoint, or your own (--arch with --weights)")
    which = g.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", metavar="PATH",
                       help="kit checkpoint (.pt with its .json sidecar), e.g. from pretrain, "
                            "or a model.pt the kit wrote for your own model")
    which.add_argument("--arch", metavar="NAME",
                       help=f"your model's architecture: a kit name ({', '.join(MODELS)}), "
                            f"torchvision:NAME (any torchvision classification model, e.g. "
                            f"torchvision:resnet18) or timm:NAME (needs pip install timm)")
    g.add_argument("--weights", metavar="FILE",
                   help="your model's weights (with --arch): a plain state_dict saved with "
                        "torch.save(model.state_dict(), FILE); loaded strictly, weights_only")
    g.add_argument("--num-classes", type=positive, default=None, metavar="N",
                   help="classes of your model (default: the data set's)")
    g.add_argument("--mean", metavar="a,b,c",
                   help="per-channel mean of your transform's normalisation, for [0, 1] "
                        "pixels (default: 0 per channel, i.e. the model normalises itself)")
    g.add_argument("--std", metavar="a,b,c",
                   help="per-channel std of your transform's normalisation (default: 1 per "
                        "channel; give --mean and --std together)")


def _add_request_options(p) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--forget-k", type=int, metavar="K",
                     help="forget K training instances drawn at random with --seed")
    who.add_argument("--forget-ids", metavar="FILE",
                     help="file of training-set indices to forget (.npy, or text: one per "
                          "line or comma/space separated); for a folder: data set also image "
                          "paths relative to its train folder, one per line (cat/img_003.png)")
    who.add_argument("--forget-class", metavar="C",
                     help="forget every training instance of class C (an index, or a class "
                          "name such as a folder: data set's class folder)")


def build_parser(recipe: str = "default", objective: str = "misclassify") -> Parser:
    """The parser; the unlearning options show the defaults of `recipe` for `objective`."""
    ap = Parser(prog=PROG, epilog=EXIT_CODES,
                description="Instance-wise machine unlearning kit: pre-train a classifier,"
                            "\napply a deletion request to it (or to your own model), "
                            "evaluate a model\nagainst a request, download data.")
    ap.add_argument("--debug", action="store_true", default=False,
                    help="print the full traceback of an unexpected failure")
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{pretrain,unlearn,evaluate,download}")

    p = sub.add_parser("pretrain", help="pre-train a classifier and save a checkpoint",
                       description="Pre-train a classifier and save a kit checkpoint "
                                   "(weights .pt + sidecar .json).", epilog=EXIT_CODES)
    _add_common(p, out_help="checkpoint path ending in .pt; its sidecar .json is written "
                            "beside it (an existing one needs --overwrite)")
    p.add_argument("--arch", default="cnn", choices=list(MODELS), metavar="ARCH",
                   help=f"model architecture: one of {', '.join(MODELS)} (default: cnn)")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="training preset (default: default)")
    p.add_argument("--epochs", type=positive, default=None, metavar="N",
                   help="number of epochs (default: the preset's)")

    u = sub.add_parser("unlearn", help="apply one deletion request to a model",
                       description="Apply one deletion request to a kit checkpoint or to your "
                                   "own model (--arch, --weights);\nwrite model.pt (+ .json) "
                                   "and results.csv (+ .json) into --out, all or nothing.\n"
                                   "Your own model's unlearned weights are written as you gave "
                                   "them: a plain\nstate_dict that loads strictly into the "
                                   "same constructor.", epilog=EXIT_CODES)
    _add_model_options(u)
    _add_common(u, out_help="output folder for model.pt, model.json, results.csv and "
                            "results.json; it must not hold the inputs, and a non-empty one "
                            "needs --overwrite")
    _add_request_options(u)
    u.add_argument("--method", default="adv+imp", choices=list(METHODS),
                   help="unlearning method; adv+imp is the paper's (default: adv+imp)")
    u.add_argument("--objective", default="misclassify", choices=list(OBJECTIVES),
                   help="misclassify the forget set, or relabel it (default: misclassify)")
    u.add_argument("--new-labels", metavar="FILE",
                   help="relabel: file of new labels, one per forget instance in order "
                        "(default: drawn among the other classes with --seed)")
    u.add_argument("--earlier-ids", metavar="FILE",
                   help="continual unlearning: training-set indices that earlier requests "
                        "already made this model forget (the format of --forget-ids); their "
                        "images join the anchors so that they stay forgotten (adv, adv+imp; "
                        "default: none)")
    u.add_argument("--hold", action=argparse.BooleanOptionalAction, default=None,
                   help="with --earlier-ids: the objective and the stopping rule cover those "
                        "instances too, so the run ends with them misclassified (any method; "
                        "--objective misclassify only); --no-hold: the anchors only (default: "
                        "hold with --objective misclassify)")
    u.add_argument("--recipe", default="default", choices=list(RECIPES),
                   help="named hyper-parameter set; single options below override it "
                        "(default: default)")
    u.add_argument("--retain-max", type=positive, default=None, metavar="N",
                   help="measure retain accuracy on a seeded sample of at most N instances "
                        "(default: all)")
    _add_config_options(u, recipe, objective)

    e = sub.add_parser("evaluate", help="measure a model against a deletion request",
                       description="Measure a model against one deletion request: accuracy on "
                                   "D_f, D_r and D_test,\nD_f's neighbourhood views, membership "
                                   "inference, and agreement and KL to a\nretrained --reference; "
                                   "write report.csv (+ .json) into --out, all or nothing.",
                       epilog=EXIT_CODES)
    _add_model_options(e)
    _add_common(e, out_help="output folder for report.csv and report.json; it must not hold "
                            "the inputs, and a non-empty one needs --overwrite")
    _add_request_options(e)
    e.set_defaults(objective="misclassify", new_labels=None, earlier_ids=None, hold=None)
    e.add_argument("--retain-max", type=positive, default=None, metavar="N",
                   help="measure D_r on a seeded sample of at most N instances (default: all)")
    e.add_argument("--reference", metavar="PATH",
                   help="a model retrained without D_f, to report agreement and mean KL to: a "
                        "kit checkpoint, or plain weights of the same --arch")
    e.add_argument("--attack", default="loss_logreg", choices=list(MIA_ATTACKS),
                   help="membership inference attack, members D_r vs non-members D_test, asked "
                        "about D_f (default: loss_logreg)")
    e.add_argument("--mia-samples", type=positive, default=2000, metavar="N",
                   help="at most N members and N non-members train the attack (default: 2000)")

    d = sub.add_parser("download", help="download CIFAR-10/100 with torchvision (needs internet)",
                       epilog=EXIT_CODES)
    d.add_argument("name", choices=["cifar10", "cifar100"], help="data set to download")
    d.add_argument("--root", default="data", help="destination folder (default: data)")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the full traceback of an unexpected failure")
    from .grid import add_grid_parser    # the grid command lives in kit/cli/grid.py
    add_grid_parser(sub)
    return ap
