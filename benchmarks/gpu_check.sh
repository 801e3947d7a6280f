#!/usr/bin/env bash
# GPU check, at most ~8 minutes: the device-generic tests on cuda, then the paper-sized
# benchmark (random CIFAR-shaped data, untrained ResNet-18, k = 128, R = 20, 100 PGD steps,
# 100 updates). Writes ${OUT:-benchmarks/out}/gpu_check.json and the test log beside it.
# Run from the repository root on a machine with a GPU: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { python3 -m venv .venv && .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 && .venv/bin/pip install -q -e .[dev]; PY=.venv/bin/python; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))"
KIT_TEST_DEVICE=cuda timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py \
    tests/test_attacks.py 2>&1 | tee "$out/gpu_tests.log" | tail -3
timeout 240 "$PY" benchmarks/bench_unlearn.py --random-data --arch resnet18_cifar --ks 128 \
    --per-instance 20 --pgd-steps 100 --steps 100 --device cuda --threads 0 \
    --json "$out/gpu_check.json"
