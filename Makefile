# One entry point for set-up, the sample pipeline and the tests (CI calls `make test`).
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.embedtab-installed

.PHONY: setup demo test bench clean-demo

setup: $(STAMP)

# Re-install only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Run the whole chain on sample_data/ into ./artifacts-demo and print `embedtab status`.
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

## Run the test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf artifacts-demo
