# Set-up and entry points. `make demo` runs the main job, `make test` the tests, `make docs` the site.
# On machines with a local CPU wheel of torch, TORCH_SPEC pins it so set-up is fast;
# elsewhere override it (e.g. `make TORCH_SPEC=torch test`) or install torch first.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
SHARED_ASSETS := $(abspath ../shared/assets)
export FRMARGIN_MIRROR ?= $(if $(wildcard $(SHARED_ASSETS)/README.md),$(SHARED_ASSETS),)

.PHONY: install demo test test-fast lint bench bench-smoke clean browser docs serve-docs

$(BIN)/frmargin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,attacks,imagenet,docs,models]"
	touch $@

install: $(BIN)/frmargin

demo: install
	$(BIN)/frmargin demo

test: install
	$(BIN)/python -m pytest -q

# headless Chromium for tests/test_browser.py (Debian packages; no browser download)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)

# no asset mirror, no slow tests: the core in about a minute
test-fast: install
	FRMARGIN_MIRROR= FRMARGIN_TEST_MIRROR=off $(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks docs/_hooks docs/results
	$(BIN)/ruff format --check src tests benchmarks docs/_hooks docs/results
	$(BIN)/mypy

# the documentation site (docs/, mkdocs.yml) into site/; --strict fails on broken links and references
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

serve-docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# every benchmark at the size of the published figures (see benchmarks/README.md), one thread
bench: install
	$(BIN)/python benchmarks/run_all.py --size full --threads 1

# every benchmark at its smoke size (seconds each): checks that they run
bench-smoke: install
	$(BIN)/python benchmarks/run_all.py --size smoke --threads 1

clean:
	rm -rf $(VENV) build dist site src/*.egg-info
