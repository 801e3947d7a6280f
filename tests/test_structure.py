"""The package's architecture: layers import only downward, modules stay small."""
import ast
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"
# bottom to top: a module may import from its own layer and the ones before it
LAYERS = ["core", "method", "evaluation", "baselines", "experiments", "cli"]
MODULES = sorted(p for p in KIT.rglob("*.py"))


def _layer(path: Path) -> str | None:
    rel = path.relative_to(KIT).parts
    if rel[0] in LAYERS:
        return rel[0]
    return "cli" if rel[0].startswith("cli") else None       # __init__/__main__: the top


def _imported_layers(path: Path):
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(KIT).parts[:-1]                    # e.g. ("method",)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg[:len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
            target = base + (node.module.split(".") if node.module else [])
            if target and target[0] in LAYERS:
                yield target[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kit."):
            yield node.module.split(".")[1], node.lineno


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KIT)))
def test_imports_never_run_back_up(path):
    own = _layer(path)
    if own is None:
        return
    for target, line in _imported_layers(path):
        assert LAYERS.index(target) <= LAYERS.index(own), (
            f"{path.relative_to(KIT)}:{line} imports kit.{target}, a layer above {own}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(KIT)))
def test_no_module_over_350_lines(path):
    assert len(path.read_text().splitlines()) <= 350
