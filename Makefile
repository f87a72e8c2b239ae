# One command for each thing a newcomer wants. Each target sets up the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test validate bench setup clean

$(BIN)/journey: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## The main job: dry-run the cart abandonment journey against the sample users.
demo: $(BIN)/journey
	$(BIN)/journey dry-run cart_abandonment --users samples/users.yaml

## Set up and run the whole test suite.
test: $(BIN)/journey
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest

## Compile every journey and report every mistake.
validate: $(BIN)/journey
	$(BIN)/journey validate

## Set up for running the service (adds honcho and Flower).
setup: $(BIN)/journey
	$(BIN)/pip install --quiet -e '.[ops]'

bench: $(BIN)/journey
	$(BIN)/python bench/dry_run.py

clean:
	rm -rf $(VENV) build *.egg-info
