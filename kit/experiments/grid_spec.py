"""The grid's cells and its parameters file: what a grid is, validated before anything runs.

A grid is the cross product data sets x architectures x methods x k x seeds, and x named
variants of the hyper-parameters when it has some (`grid_cells`); `load_grid` reads it
from a parameters file. `kit.experiments.grid` runs the cells.

The parameters file of `python -m kit grid PARAMS.yaml --out DIR` (see
params/grids/example.yaml); every key but `methods` and `ks` is optional:

    datasets: [mnist5k]        # kit.core.data.DATASETS names or folder:PATH
    archs: [cnn]               # kit.core.models.MODELS names
    methods: [before, neggrad, adv+imp]  # GRID_METHODS; before = the pre-trained model
    ks: [8, 32]                # forget-set sizes, >= 1
    seeds: [0, 1, 2]           # request seeds (draw D_f, seed the method), >= 0
    model_seed: 0              # pre-training seed of every base model
    objective: misclassify     # or relabel
    recipe: default            # kit.method.recipes.RECIPES
    config: {max_steps: 300}   # single hyper-parameters over the recipe (FIELDS names)
    variants:                  # named changes over recipe + config, each run with every
      R20: {per_instance: 20}  #   method but `before` (a sweep); a variant may name its
      fast: {recipe: fast}     #   own recipe
    train_preset: default      # pre-training preset (kit.core.train.PRESETS)
    epochs: null               # pre-training epochs (null: the preset's)
    retain_max: null           # evaluate D_r on a seeded sample of at most N (null: all)
    root: null                 # data folder (null: $KIT_DATA, else ./data)
    cache_dir: artifacts/checkpoints   # model cache; on a cluster, a folder all nodes share
    device: auto               # per task: cuda when Ray gave it a GPU, else cpu
    threads: 1                 # torch threads per cell (cache keys include it)

Relative paths are taken from the current folder.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.data import DATASETS
from ..core.models import MODELS
from ..core.train import PRESETS
from ..core.utils import check_names, resolve_device
from ..method.config import OBJECTIVES
from ..method.recipes import resolve
from .runs import BEFORE, RUN_METHODS

GRID_METHODS = (BEFORE, *RUN_METHODS)
AXES = {"datasets": ["mnist5k"], "archs": ["cnn"], "methods": None, "ks": None, "seeds": [0]}
OPTIONS = {"model_seed": 0, "objective": "misclassify", "recipe": "default", "config": {},
           "variants": None,
           "train_preset": "default", "epochs": None, "retain_max": None, "root": None,
           "cache_dir": "artifacts/checkpoints", "device": "auto", "threads": 1}
PLACE = ("root", "cache_dir", "device", "threads")   # where cells run, not what they are
IDENTITY = ["dataset", "arch", "model_seed", "objective", "method", "variant", "k", "seed"]


@dataclass(frozen=True)
class Cell:
    """One grid cell: `method` on the request (k, seed) from the pre-trained (dataset,
    arch, model_seed) model. overrides: ((field, value), ...) over `recipe`; variant: the
    name of the grid's variant the recipe and overrides come from ('' without variants)."""
    dataset: str
    arch: str
    method: str
    k: int
    seed: int
    model_seed: int = 0
    objective: str = "misclassify"
    recipe: str = "default"
    overrides: tuple = ()
    train_preset: str = "default"
    epochs: int | None = None
    retain_max: int | None = None
    variant: str = ""

    def base(self) -> tuple:
        """What names the pre-trained model (cells sharing it share one pre-training)."""
        return self.dataset, self.arch, self.model_seed, self.train_preset, self.epochs

    def identity(self) -> dict:
        return {name: getattr(self, name) for name in IDENTITY}


# ------------------------------------------------------------------ the parameters file
def _whole(name, v, low):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name}: expected a whole number >= {low}, got {v!r}")
    return v


def _variants(variants, recipe: str, config: dict, objective: str) -> dict[str, tuple]:
    """{name: (recipe, sorted overrides)} of the grid's variants ({"": ...} without any),
    each resolved once, so a bad field or value is an error naming its variant."""
    if variants is None:
        resolve(recipe, objective, **config)              # unknown fields, bad values
        return {"": (recipe, tuple(sorted(config.items())))}
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"variants must be a non-empty mapping of name: {{field: value}}, "
                         f"got {variants!r}")
    out = {}
    for name, change in variants.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"variant names must be non-empty strings, got {name!r}")
        if not isinstance(change, dict):
            raise ValueError(f"variant {name!r} must be a mapping of hyper-parameters (and "
                             f"optionally recipe), got {change!r}")
        change = dict(change)
        own_recipe = change.pop("recipe", recipe)
        overrides = {**config, **change}
        try:
            resolve(own_recipe, objective, **overrides)
        except ValueError as e:
            raise ValueError(f"variant {name!r}: {e}") from None
        out[name] = (own_recipe, tuple(sorted(overrides.items())))
    return out


def grid_cells(*, methods, ks, datasets=("mnist5k",), archs=("cnn",), seeds=(0,),
               model_seed: int = 0, objective: str = "misclassify", recipe: str = "default",
               config: dict | None = None, variants: dict | None = None,
               train_preset: str = "default", epochs: int | None = None,
               retain_max: int | None = None) -> list[Cell]:
    """The cells of a grid, validated (ValueError naming the bad value), in the order of
    `run_grid`: data set, architecture, seed, k, variant, method. variants: {name: {field:
    value, ..., optionally recipe: NAME}} over `recipe` and `config`; each method runs once
    per variant, except `before` (the pre-trained model: once per request).

    >>> [c.method for c in grid_cells(methods=["before", "adv+imp"], ks=[8])]
    ['before', 'adv+imp']
    >>> [(c.method, c.variant, c.recipe, c.overrides) for c in grid_cells(
    ...     methods=["before", "adv+imp"], ks=[8], variants={"R20": {"per_instance": 20},
    ...                                                     "distil": {"recipe": "distil"}})]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('before', '', 'default', ()), ('adv+imp', 'R20', 'default', (('per_instance', 20),)),
     ('adv+imp', 'distil', 'distil', ())]
    """
    config = dict(config or {})
    for d in datasets:
        if not isinstance(d, str) or not (d in DATASETS or d.startswith("folder:")):
            raise ValueError(f"unknown dataset {d!r}; valid names: {', '.join(DATASETS)}, "
                             f"or folder:PATH")
    check_names(archs, MODELS, "arch(s)")
    check_names(methods, dict.fromkeys(GRID_METHODS), "method(s)")
    check_names([train_preset], PRESETS, "train_preset")
    for name, values, low in (("ks", ks, 1), ("seeds", seeds, 0)):
        for v in values:
            _whole(name, v, low)
    _whole("model_seed", model_seed, 0)
    for name, v in (("epochs", epochs), ("retain_max", retain_max)):
        if v is not None:
            _whole(name, v, 1)
    check_names([objective], dict.fromkeys(OBJECTIVES), "objective")
    named = _variants(variants, recipe, config, objective)
    plain = (recipe, tuple(sorted(config.items())))
    cells = []
    for d, a, s, k in itertools.product(datasets, archs, seeds, ks):
        for v, (own_recipe, overrides) in named.items():
            for m in methods:
                if m == BEFORE and v != next(iter(named)):
                    continue                          # the pre-trained model: once
                r, o, name = (*plain, "") if m == BEFORE and variants else (own_recipe,
                                                                           overrides, v)
                cells.append(Cell(d, a, m, k, s, model_seed, objective, r, o, train_preset,
                                  epochs, retain_max, name))
    return cells


def load_grid(path: str | Path) -> tuple[list[Cell], dict, dict]:
    """(cells, place, params) of a parameters file (format: this module's docstring).

    place: root, cache_dir, device, threads for `run_cells`; params: every key with its
    value or default (for the results' sidecar). Raises ValueError naming the problem.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of grid keys ({', '.join(AXES)}, ...)")
    unknown = sorted(set(raw) - set(AXES) - set(OPTIONS), key=str)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: "
                         f"{', '.join([*AXES, *OPTIONS])}")
    params = {**AXES, **OPTIONS, **raw}
    for axis in AXES:
        value = params[axis]
        if value is None:
            raise ValueError(f"{path} must name the grid's {axis} (a list)")
        params[axis] = list(value) if isinstance(value, (list, tuple)) else [value]
        if not params[axis] or len(set(map(str, params[axis]))) != len(params[axis]):
            raise ValueError(f"{axis} must be a non-empty list without repeats, got {value!r}")
    if not isinstance(params["config"] or {}, dict):
        raise ValueError(f"config must be a mapping of hyper-parameters, got {params['config']!r}")
    if params["threads"] is not None:
        _whole("threads", params["threads"], 1)
    try:
        resolve_device(params["device"])
    except (RuntimeError, ValueError):
        raise ValueError(f"device {params['device']!r} is not a torch device; use auto, "
                         f"cpu, cuda or mps") from None
    cells = grid_cells(**{k: params[k] for k in params if k not in PLACE})
    return cells, {k: params[k] for k in PLACE}, params
