# Two commands for users (see README): `make run` and `make test`.
# Both create .venv on first use; a second call reuses it (no-op unless pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNS   := artifacts/runs
NB     := $(PY) -m kit.experiments.notebooks
export KIT_QUIET ?= 1
# weights depend on the thread count: one thread everywhere, so notebooks, tests and caches agree
export OMP_NUM_THREADS ?= 1

# make run: 00 first, then two chains side by side (one core each; each chain in order).
# Runs that two notebooks share (08's held-out rows and its robust study's plain runs are
# 01's; 03-05 and 07 reuse 01's models) are computed once: each cache entry is filled under
# a lock, so a notebook that needs a run the other chain is making waits for it, and one
# that comes later finds it made (kit.experiments.cache). Notebook 08 alone is about two
# thirds of the compute, most of it its robust study, so it has a chain to itself, and the
# other chain, once its notebooks are done, makes the robust study's held-out runs from the
# other end (ROBUST_GRID: the same cache entries, tests/test_grid.py), until the two meet.
# The notebooks' clocks in a cold run (2026-11-30, AMD EPYC, papermill metadata, seconds):
# 01 2107, 06 2321, 09 284, 07 244, 02 647, 03-05 43 = 5646 | 08 2494, of which its robust
# study 1506; by 2026-12-01 it took about 8,900 s (engine seconds: the robust recipe's 32
# transforms per step, then two robust recipes, each on a calibration and three held-out
# requests). Since 2026-12-02 it runs the one robust recipe on the held-out requests only
# (about 4,800 s by the engine seconds of 2026-12-01; `robust_calibration_seeds` adds the
# calibration column), so each chain holds about 5,700 s (estimated).
CHAIN_A := 01_unlearn 06_continual 09_transfer 07_baselines 02_relabel 03_confusion 04_tsne 05_cka
CHAIN_B := 08_hparams
ROBUST_GRID := params/run/robust_heldout.yaml

.PHONY: run test lab benchmark clean

# A new environment takes about 6.3 GB (torch 2.14.1 is a CUDA build, the one on this disk):
# check the disk first, so a full disk is one clear line (exit 2), not pip's OSError midway.
VENV_GB ?= 6.5
define DISK_CHECK
import os, shutil, sys
venv, need = sys.argv[1], float(sys.argv[2])
where = os.path.dirname(os.path.abspath(venv)) or "."
free = shutil.disk_usage(where).free / 1e9
if free < need:
    print(f"make: a new environment in {venv} needs about {need:g} GB of free disk "
          f"(torch and its CUDA libraries); {where} has {free:.1f} GB free. Free some "
          f"space there, or create it on a larger disk: make VENV=/larger/disk/venv ..."
          + (" (/dev/shm has room: make VENV=/dev/shm/kit-venv ..., held in memory, "
             "lost at reboot)" if os.path.isdir("/dev/shm") and where != "/dev/shm"
             and shutil.disk_usage("/dev/shm").free / 1e9 >= need else ""),
          file=sys.stderr)
    sys.exit(2)
endef
export DISK_CHECK

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -c "$$DISK_CHECK" $(VENV) $(VENV_GB)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e .[dev]
	touch $(STAMP)

## run: execute every notebook on the embedded default (executed copies in artifacts/runs/, figures in figures/)
run: $(STAMP)
	mkdir -p $(RUNS)
	$(NB) notebooks/00_pretrain.ipynb $(RUNS)/00_pretrain.ipynb
	@set -e; \
	( for nb in $(CHAIN_A); do echo "== $$nb"; $(NB) notebooks/$$nb.ipynb $(RUNS)/$$nb.ipynb || exit 1; done; \
	  echo "== $(ROBUST_GRID) (08's held-out robust runs, from the other end)"; \
	  $(PY) -m kit grid $(ROBUST_GRID) --serial --overwrite --out $(RUNS)/robust_heldout ) & a=$$!; \
	( for nb in $(CHAIN_B); do echo "== $$nb"; $(NB) notebooks/$$nb.ipynb $(RUNS)/$$nb.ipynb || exit 1; done ) & b=$$!; \
	fail=0; wait $$a || fail=1; wait $$b || fail=1; exit $$fail

## test: the whole test suite (unit tests, doctests, notebook runs with tiny parameters, nbval),
## one test file per process (each notebook run apart, longest first: tests/conftest.py),
## TEST_WORKERS processes side by side (1: a single process);
## the 30 slowest tests are listed at the end
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder) --durations=30

## lab: JupyterLab on the notebooks with the kit's environment
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

## benchmark: speed of the unlearning engine against an official-style loop
benchmark: $(STAMP)
	$(PY) benchmarks/bench_unlearn.py

clean:
	rm -rf artifacts/runs
