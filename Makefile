# Entry points of the saga project. A fresh machine needs two: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PACKAGES := -e services/common -e services/order -e services/customer -e services/tools
PYTEST := $(BIN)/pytest

.PHONY: help install run test test-unit test-integration test-e2e test-observability test-chart test-chaos \
        bench lint format clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(INSTALLED): requirements-dev.txt constraints.txt services/*/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@touch $@

install: $(INSTALLED) ## create .venv with the services, the tools and the test dependencies

run: $(INSTALLED) ## migrate, seed and run both services in the foreground (Ctrl-C stops them)
	$(BIN)/saga-dev

test: $(INSTALLED) ## the whole suite, tier by tier (what CI runs)
	$(PYTEST) tests/unit -m unit
	$(PYTEST) tests/integration -m integration
	$(PYTEST) tests/e2e -m e2e
	$(PYTEST) tests/observability -m observability

test-unit: $(INSTALLED) ## pure functions: validation, envelope, state machine
	$(PYTEST) tests/unit -m unit

test-integration: $(INSTALLED) ## outbox, inbox, consumer against a real PostgreSQL and RabbitMQ
	$(PYTEST) tests/integration -m integration

test-e2e: $(INSTALLED) ## both services as real processes
	$(PYTEST) tests/e2e -m e2e

test-observability: $(INSTALLED) ## traces through the broker, metrics, a real Prometheus, dashboards, alert rules
	$(PYTEST) tests/observability -m observability

lint: $(INSTALLED) ## ruff
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

format: $(INSTALLED) ## ruff format and fixes
	$(BIN)/ruff check --fix services tests
	$(BIN)/ruff format services tests

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
