#!/usr/bin/env bash
# GPU check, at most 8 minutes (each step has its own timeout: 120 + 150 + 90 + 60 + 60 s):
#   1. the device-generic tests on cuda (KIT_TEST_DEVICE=cuda: tests/test_device.py and the
#      attack tests);
#   2. the paper-sized benchmark (random CIFAR-shaped data, untrained ResNet-18, k = 128,
#      R = 20, 100 PGD steps, 100 updates), kit against the official-style loop;
#   3. the speed options (bf16 autocast, channels_last off, deterministic, batched stop
#      check) on one calibration request of the embedded default: reached, steps, test %, s;
#   4. the embedded default (cnn on mnist5k, k = 8, 32, 128, R = 5, 30 PGD steps, 50 updates);
#   5. throughput against raw forward+backward passes and the evaluation overhead (k = 128).
# Writes ${OUT:-benchmarks/out}/gpu_check.json (step 2), gpu_mnist5k.json (step 4),
# gpu_throughput.json (step 5) and one log
# per step beside them. Run from the repository root on a machine with a GPU:
#     bash benchmarks/gpu_check.sh
# Python: $PY if set, else .venv/bin/python, else a python3 that already has torch with CUDA
# (an offline GPU machine: the checkout goes on PYTHONPATH), else a new .venv from the registry.
# A step that fails or times out is reported and the next step still runs; the exit status
# is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out"
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python
    elif python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        PY=python3; export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        python3 -m venv .venv && .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 \
            && .venv/bin/pip install -q -e .[dev] || exit 2
        PY=.venv/bin/python
    fi
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; \
print(torch.cuda.get_device_name(0), 'torch', torch.__version__)" || exit 2
export KIT_QUIET=1 PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME SECONDS LOG COMMAND...
    local name=$1 limit=$2 log=$3; shift 3
    local t0=$SECONDS
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: rc $rc, $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || failed=$((failed + 1))
}
step "tests on cuda" 120 gpu_tests.log env KIT_TEST_DEVICE=cuda "$PY" -m pytest -q \
    -p no:cacheprovider -o addopts="-ra" tests/test_device.py tests/test_attacks.py
step "paper-sized benchmark" 150 gpu_bench.log "$PY" benchmarks/bench_unlearn.py --random-data \
    --arch resnet18_cifar --ks 128 --per-instance 20 --pgd-steps 100 --steps 100 \
    --device cuda --threads 0 --json "$out/gpu_check.json"
step "speed options" 90 gpu_options.log "$PY" benchmarks/bench_options.py --device cuda
step "embedded default" 60 gpu_mnist5k.log "$PY" benchmarks/bench_unlearn.py --ks 8 32 128 \
    --device cuda --threads 0 --json "$out/gpu_mnist5k.json"
step "throughput" 60 gpu_throughput.log "$PY" benchmarks/bench_throughput.py --ks 128 \
    --cost-ks --device cuda --threads 0 --json "$out/gpu_throughput.json"
echo "gpu_check: $failed step(s) failed"
exit "$failed"
