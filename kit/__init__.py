"""Instance-wise machine unlearning kit (Cha et al., AAAI 2024, "Learning to Unlearn").

Layers, each importing only from those above it in this list:
- `kit.core`: data, models, training, checkpoints, requests, batched inference;
- `kit.method`: the paper's method (config, attacks, importance, losses, engine, contract);
- `kit.evaluation`: metrics, neighbourhood views, membership inference, representations;
- `kit.baselines`: the field's baselines and the D_r oracle;
- `kit.experiments`: caches, grids, studies, tables and figures that notebooks call;
- `kit.cli`: `python -m kit`.
This module re-exports the public API.
"""
__version__ = "0.2.0"

from .baselines import BASELINES, run_baseline  # noqa: E402
from .baselines.oracle import oracle_unlearn  # noqa: E402
from .core.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint  # noqa: E402
from .core.data import DataBundle, DatasetNotFound, gather, labels_of, load_dataset  # noqa: E402
from .core.predict import accuracy, predict  # noqa: E402
from .core.request import ForgetRequest, draw_new_labels  # noqa: E402
from .core.results import save_results  # noqa: E402
from .core.models import MODELS, create_model, feature_layers, wrap  # noqa: E402
from .core.train import PRESETS, preset, train  # noqa: E402
from .core.utils import resolve_device, seed_everything  # noqa: E402
from .evaluation.metrics import split_accuracies  # noqa: E402
from .method.attacks import make_adversarial, pgd  # noqa: E402
from .method.config import METHODS, UnlearnConfig  # noqa: E402
from .method.engine import Diverged, UnlearnResult, unlearn  # noqa: E402
from .method.importance import compute_importance, penalty_weights  # noqa: E402
from .method.recipes import RECIPES, resolve  # noqa: E402
