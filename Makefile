# Two entry points: `make run` (the main job: extract, fit, evaluate, then serve on
# http://127.0.0.1:8000) and `make test` (the test suite).
# Each sets up .venv on first use: torch 2.13.0 first (the local CPU build), then the package.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sparsefinder pipeline --serve

test: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/python -m pytest
