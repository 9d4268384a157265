# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv bench bench-gpu lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/soundclust demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not ray and not slow and not gpu" $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# CLAP and musicnn on the GPU (batch sizes, fp16/fp32, GPU busy) next to CPU features, one
# table, < 8 min; prints "no CUDA device: skipped" and succeeds on a host without CUDA.
bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu.py

lint: $(STAMP)
	$(BIN)/python -m ruff check soundclust_ray tests bench jobs

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
