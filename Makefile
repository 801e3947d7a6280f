# Two commands for users (see README): `make run` and `make test`.
# Both create .venv on first use; a second call reuses it (no-op unless pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RUNS   := artifacts/runs
export KIT_QUIET ?= 1

.PHONY: run test lab notebooks benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e .
	touch $(STAMP)

## run: execute every notebook in order on the embedded default (copies in artifacts/runs/, figures in figures/)
run: $(STAMP)
	mkdir -p $(RUNS)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(VENV)/bin/papermill --cwd notebooks -k python3 --no-progress-bar $$nb $(RUNS)/$$(basename $$nb) || exit 1; \
	done

## test: the whole test suite (unit tests, notebook runs with tiny parameters, nbval)
test: $(STAMP)
	$(PY) -m pytest

## lab: JupyterLab on the notebooks with the kit's environment
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

## notebooks: re-run the notebooks in place with default parameters (refreshes committed outputs)
notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(VENV)/bin/papermill --cwd notebooks -k python3 --no-progress-bar $$nb $$nb || exit 1; \
	done

## benchmark: speed of the unlearning engine against an official-style loop
benchmark: $(STAMP)
	$(PY) benchmarks/bench_unlearn.py

clean:
	rm -rf artifacts/runs
