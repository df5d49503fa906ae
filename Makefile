# Two commands on a fresh machine: `make run` (the main job on the bundled data), `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export LLMSEQREC_HOME ?= $(CURDIR)/.llmseqrec
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test test-fast lint serve up down screenshots clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/llmseqrec run

# everything: unit, data and model tests, then the end-to-end runs of real servers (~30 min)
test: install
	$(BIN)/pytest

# the unit tests alone, without the end-to-end ones (marked e2e): under 2 minutes
test-fast: install
	$(BIN)/pytest -m "not e2e"

lint: install
	$(BIN)/ruff check .

serve: install
	$(BIN)/llmseqrec serve

# Prefect server + worker (deployments), MLflow server + UI, model server, on loopback
up: install
	$(BIN)/llmseqrec up

down:
	test ! -x $(BIN)/llmseqrec || $(BIN)/llmseqrec down

# README pictures of the MLflow and Prefect UIs, by headless Chromium (Debian's package)
screenshots: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	LLMSEQREC_SCREENSHOTS=1 $(BIN)/pytest tests/test_ui_screenshots.py

clean:
	rm -rf $(LLMSEQREC_HOME)
