# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both depend on `install`, which builds .venv once and is a no-op while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test demo schemas dashboards docs clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py gateway/_redaction.c gateway/_group_commit.c gateway/_frames.c
	@# The gateway's C extensions need a C compiler and Python's headers (gateway/_frames.c also
	@# zlib's); without them the install still works and their Python versions run instead (tests say so).
	@command -v cc >/dev/null 2>&1 || { echo "installing gcc for the gateway's C extensions"; \
		apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null; } || echo "warning: no C compiler"
	@test -e /usr/include/zlib.h || { echo "installing zlib's headers for gateway/_frames.c"; \
		apt-get update -qq && apt-get install -y -qq zlib1g-dev >/dev/null; } || echo "warning: no zlib headers"
	@$(PYTHON) -c "import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
		|| apt-get install -y -qq python3-dev >/dev/null || echo "warning: no Python headers"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# `make demo DEMO_ARGS="--keep-running --calls 100"` passes options to `tokentrail demo`.
demo: install
	$(BIN)/tokentrail demo $(DEMO_ARGS)

schemas: install
	$(BIN)/python -m schemas.generate

# Grafana dashboards as code: tokentrail/dashboards/panels.py -> dashboards/*.json.
dashboards: install
	$(BIN)/python -m tokentrail.dashboards.grafana

# Regenerate what tests check for freshness: JSON Schemas, dashboards, the README configuration table.
docs: schemas dashboards
	$(BIN)/python -m tokentrail.config_docs

clean:
	rm -rf $(VENV) .tokentrail .pytest_cache gateway/*.so
