"""The cost projection of benchmarks/bench_throughput.py, by hand: the official recipe's
budget of 1000 passes over R*k adversarial examples, and the default's anchor batches."""
import importlib.util
import sys
from pathlib import Path

import pytest

from kit.method.recipes import RECIPES

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH / "bench_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))             # it imports its sibling _clock.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_projection_of_the_official_recipe_by_hand(bench):
    p = bench.projected_passes(RECIPES["official"], k=128)
    # R*k = 2,560 adversarial examples, 256 per step: 10 steps per pass, 1000 passes
    assert p["steps"] == 10_000
    assert p["attack"] == pytest.approx(2560 * (100 + 1 / 3))
    assert p["update"] == 10_000 * (32 + 256)
    assert p["evaluate"] == pytest.approx(10_001 * 128 / 3)
    assert p["total"] == pytest.approx(p["attack"] + 128 + p["update"] + p["evaluate"])


def test_projection_counts_the_defaults_transformed_and_synthesised_anchors(bench):
    d = RECIPES["default"]
    # k = 128: 640 adversarial examples (R 5, 30 PGD steps), 2,048 transformed images
    # labelled (a forward pass each); per step 32 forget + 64 adversarial + 32 transformed
    p = bench.projected_passes(d, k=128, steps=100)
    assert p["attack"] == pytest.approx(640 * (30 + 1 / 3) + 2048 / 3)
    assert p["update"] == 100 * (32 + 64 + 32)
    assert bench.projected_passes(d, k=32, steps=100)["update"] == 100 * (32 + 64 + 32)
    held = d.replace(feat_distil=1.0)      # each anchor a forward of the frozen copy too
    assert bench.projected_passes(held, k=32, steps=100)["update"] == 100 * (32 + 96 * 4 / 3)
    k4 = RECIPES["mix-k4"]                 # k / 4 per step, 16 at least
    assert bench.projected_passes(k4, k=32, steps=100)["update"] == 100 * (32 + 64 + 16)
    r = RECIPES["robust"]                  # + 256 images inverted in 200 steps, 16 per step
    q = bench.projected_passes(r, k=32, steps=100)
    assert q["attack"] == pytest.approx(160 * (30 + 1 / 3) + 1024 / 3 + 256 * (200 + 2 / 3))
    assert q["update"] == 100 * (32 + 64 + 32 + 16)


def test_projection_counts_the_mined_anchors_by_hand(bench):
    r = RECIPES["robust"]
    plain = bench.projected_passes(r, k=32, steps=450)
    mined = bench.projected_passes(r.replace(mine_anchors=256, mine_batch=2), k=32, steps=450)
    # rounds at steps 0, 200 and 400: 3 x 256 images x (10 PGD steps of both models + labels)
    assert mined["attack"] - plain["attack"] == pytest.approx(3 * 256 * (2 * 10 + 1 / 3))
    assert mined["update"] - plain["update"] == 450 * 2
