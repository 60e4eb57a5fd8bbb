# Sense: `make run` (embedded defaults) and `make test` (the whole suite) are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.installed-base
STAMP_TEST := $(VENV)/.installed-test
HOST ?= 127.0.0.1
PORT ?= 8000
VAR_DIR := $(or $(SENSE_VAR_DIR),var)

.DEFAULT_GOAL := help
.PHONY: help install install-test system run worker migrate test test-fast lint fmt clean bench

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_BASE): requirements/base.txt | $(PY)
	$(PY) -m pip install -q -r requirements/base.txt
	@touch $@

$(STAMP_TEST): requirements/test.txt requirements/base.txt | $(PY)
	$(PY) -m pip install -q -r requirements/test.txt
	@touch $@ $(STAMP_BASE)

install: $(STAMP_BASE) ## Create the venv and install the runtime requirements

install-test: $(STAMP_TEST) ## Create the venv and install runtime and test requirements

run: export DEBUG ?= true
run: export SANDBOX_WEBHOOK_BASE_URL ?= http://127.0.0.1:$(PORT)
run: $(STAMP_BASE) ## Set up and serve http://127.0.0.1:8000 on the embedded defaults (or your env)
	$(PY) manage.py migrate --noinput -v 0
	@mkdir -p $(VAR_DIR)
	@test -f $(VAR_DIR)/.seeded || ($(PY) manage.py seed_demo && touch $(VAR_DIR)/.seeded)
	$(PY) manage.py ensure_bucket -v 0
	$(VENV)/bin/uvicorn sense.asgi:application --host $(HOST) --port $(PORT)

worker: $(STAMP_BASE) ## Run Dramatiq workers (needs RABBITMQ_URL)
	$(PY) manage.py rundramatiq

migrate: $(STAMP_BASE) ## Apply database migrations
	$(PY) manage.py migrate

system: ## Install the missing Debian packages of requirements/system.txt (as root; else print the command)
	@.ci/system-packages

test: system $(STAMP_TEST) ## Set up (system packages, venv) and run the whole suite on PostgreSQL, Redis, RabbitMQ, S3
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP_TEST) ## Run the suite without the slow (fault, browser, end-to-end) tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP_TEST) ## ruff and mypy (django-stubs)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=true $(VENV)/bin/mypy .

fmt: $(STAMP_TEST) ## Format and autofix with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove the venv and var/ (database, media, static)
	rm -rf $(VENV) var

bench: $(STAMP_TEST) ## Run every benchmark; prints one table, writes bench/results.json and bench/REPORT.md
	$(PY) bench/run.py $(BENCH)
