# `make test` builds .venv from scratch when missing, then lints and runs the test suite.
# On a GPU machine: `make test TORCH_SPEC=torch` (the default pins the CPU build that CI uses).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2

.PHONY: install test lint bench demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,eval,plots]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) tests

# the main job: a CPU miniature of Part 4.1 (Llama vs LlamaCanon on a synthetic task), written to runs/demo/<time>/
demo: install
	cd lingua_modified && ../$(PY) -m apps.demo --out ../runs/demo/$$(date +%Y%m%d-%H%M%S)

bench: install
	$(PY) benchmarks/hf_llamacanon.py
	$(PY) benchmarks/linear_kernels.py
	$(PY) benchmarks/data_generators.py
	$(PY) benchmarks/data_loader.py

clean:
	rm -rf $(VENV)
