"""Instance-wise machine unlearning kit (Cha et al., AAAI 2024, "Learning to Unlearn").

Public API; every module is importable on its own too (`kit.attacks`, `kit.analysis`, ...).
"""
__version__ = "0.1.0"

from .attacks import make_adversarial, pgd  # noqa: E402
from .baselines import BASELINES, run_baseline  # noqa: E402
from .checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint  # noqa: E402
from .data import (DataBundle, DatasetNotFound, gather, labels_of, load_dataset,  # noqa: E402
                   sample_forget)
from .evaluate import accuracy, predict, save_results  # noqa: E402
from .importance import compute_importance, penalty_weights  # noqa: E402
from .models import MODELS, create_model, feature_layers  # noqa: E402
from .train import PRESETS, preset, train  # noqa: E402
from .unlearn import METHODS, RECIPES, UnlearnConfig, UnlearnResult, unlearn  # noqa: E402
from .utils import resolve_device, seed_everything  # noqa: E402
