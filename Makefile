# Whistle developer entry points.  Quickstart: `make up` runs Whistle, `make test` runs the tests.

# The interpreter .venv is built on: Debian's optimised python3.11 where there is one
# (scripts/venv-python.sh says why), else python3.  `make venv PYTHON=...` overrides it.
PYTHON ?= $(shell scripts/venv-python.sh)
VENV   := .venv
BIN    := $(VENV)/bin

PY311_CHECK := 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Whistle needs Python 3.11+, found " + sys.version.split()[0])'

.PHONY: venv infra up test lint demo

venv: $(VENV)/.installed

# Re-installs whenever pyproject.toml changes.  An existing .venv is reused as is
# (re-running `python -m venv` with another interpreter would re-point it).
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || { $(PYTHON) -c $(PY311_CHECK) && $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -c $(PY311_CHECK) || { echo "$(VENV) is too old: remove it and re-run make" >&2; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

infra:
	bash scripts/infra.sh

up: venv infra
	$(BIN)/whistle up

# The whole suite in two phases (scripts/test.sh): the unit and integration tests beside
# the end-to-end tests, then the fault suite alone. `.venv/bin/pytest` runs the same tests
# one after the other, in about a third more time (docs/testing.md).
test: venv infra
	PYTEST=$(BIN)/pytest bash scripts/test.sh

lint:
	$(BIN)/ruff check .

demo:
	$(BIN)/whistle demo
