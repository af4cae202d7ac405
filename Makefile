# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both depend on `install`, which builds .venv once and is a no-op while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test demo schemas dashboards docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
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

demo: install
	$(BIN)/tokentrail demo

schemas: install
	$(BIN)/python -m schemas.generate

# Grafana dashboards as code: tokentrail/dashboards/panels.py -> dashboards/*.json.
dashboards: install
	$(BIN)/python -m tokentrail.dashboards.grafana

# Regenerate what tests check for freshness: JSON Schemas, dashboards, the README configuration table.
docs: schemas dashboards
	$(BIN)/python -m tokentrail.config_docs

clean:
	rm -rf $(VENV) .tokentrail .pytest_cache
