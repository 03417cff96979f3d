# shellid — set-up and everyday commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= shellid-data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve demo test test-fast lint typecheck benchmarks browser notebooks clean

$(BIN)/shellid: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/shellid

install: $(BIN)/shellid

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
notebooks: install
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

test: install browser
	$(BIN)/python -m pytest -ra

test-fast: install
	$(BIN)/python -m pytest -ra -m "not slow and not browser"

lint: install
	$(BIN)/ruff check embedder index api tests benchmarks
	$(BIN)/ruff format --check embedder index api tests benchmarks

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
