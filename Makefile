# `make test` builds .venv from scratch when missing, then lints and runs the test suite.
# Every dependency comes from requirements.lock (known-good versions, direct and transitive); `make lock` refreshes it.
# On a GPU machine: `make test TORCH_SPEC=torch` (the default pins the CPU build that CI uses).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2
EXTRAS := dev,eval,plots,data
LOCK := requirements.lock

.PHONY: install test lint bench demo clean lock compat

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) tests

# the main job: a CPU miniature of Part 4.1 (Llama vs LlamaCanon on a synthetic task), written to runs/demo/<time>/;
# `make demo SEEDS=3` repeats it for seeds 0, 1, 2 and reports the mean and range
SEEDS ?= 1
demo: install
	cd lingua_modified && ../$(PY) -m apps.demo --seeds $(SEEDS) --out ../runs/demo/$$(date +%Y%m%d-%H%M%S)

# the newest releases of every dependency, resolved in a scratch environment, written to requirements.lock;
# torch (pinned by TORCH_SPEC) and its CUDA libraries are left out; on a GPU machine with another torch, pass LOCK=/dev/null if the locked triton conflicts
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	{ echo "# known-good versions for make install (pip constraints); refresh with make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E "^(torch|nvidia-)"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv

# the Hugging Face model tests against every supported transformers release (see tests/compat/matrix.py)
compat: install
	$(PY) tests/compat/matrix.py

bench: install
	$(PY) benchmarks/hf_llamacanon.py
	$(PY) benchmarks/linear_kernels.py
	$(PY) benchmarks/data_generators.py
	$(PY) benchmarks/data_loader.py

clean:
	rm -rf $(VENV)
