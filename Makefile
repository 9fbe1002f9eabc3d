# Two entry points: `make run` (the STOP loop on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint clean sandbox-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes; pip caches the compiled llama-cpp-python wheel.
$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-local

run: $(VENV)/.installed-local sandbox-tools
	$(BIN)/selftaught run

# bubblewrap gives the sandbox its strongest mode; installed with apt-get when running as root.
# Chromium is the real browser the dashboard's tests drive (Playwright cannot download its own here).
sandbox-tools:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
		|| echo "note: bubblewrap not installed; the sandbox runs without its strong mode"; }
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: chromium not installed; the dashboard's browser tests are skipped"; }

test: $(VENV)/.installed-dev sandbox-tools
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The fast part, under a minute: every test but those marked slow or embedded (see pyproject's markers).
test-fast: $(VENV)/.installed-dev sandbox-tools
	$(BIN)/python -m pytest -q -m "not slow and not embedded"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) selftaught-runs
