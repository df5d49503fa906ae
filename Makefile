# Two commands on a fresh machine: `make run` (the main job on the bundled data), `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export LLMSEQREC_HOME ?= $(CURDIR)/.llmseqrec
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test lint serve clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/llmseqrec run

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

serve: install
	$(BIN)/llmseqrec serve

clean:
	rm -rf $(LLMSEQREC_HOME)
