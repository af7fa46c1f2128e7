# One entry point for set-up, the sample pipeline and the tests (CI calls `make test`).
#
# Two environments:
#   .venv         Python 3.11, the full pinned stack of constraints.txt (NVTabular 23.08 needs <= 3.11)
#   .venv-modern  Python 3.12, the base install with the newest numpy 2 / pandas / pyarrow / torch /
#                 sentence-transformers / open-clip the registry offers, no NVTabular
#   .venv-train   Python 3.11, the trainers (Transformers4Rec, merlin-dataloader; requirements-train.txt)
#                 and no embedtab: examples/ train there on the artifacts the other two make
PYTHON        ?= python3.11
MODERN_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
VENV          ?= .venv
MODERN        ?= .venv-modern
TRAIN         ?= .venv-train
BIN            = $(VENV)/bin
STAMP          = $(VENV)/.embedtab-installed
MODERN_STAMP   = $(MODERN)/.embedtab-installed
TRAIN_STAMP    = $(TRAIN)/.installed

.PHONY: setup setup-modern setup-train demo day2 train-examples test test-pinned test-modern lint clean-demo

setup: $(STAMP)

# Re-install only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[merlin,serve,dev]'
	touch $(STAMP)

setup-modern: $(MODERN_STAMP)

# Unpinned on purpose: this environment follows the newest releases, so CI meets them first.
$(MODERN_STAMP): pyproject.toml
	test -x $(MODERN)/bin/python || $(MODERN_PYTHON) -m venv $(MODERN)
	$(MODERN)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,dask]'
	touch $(MODERN_STAMP)

setup-train: $(TRAIN_STAMP)

# embedtab is not installed here on purpose: what trains in it reads the artifacts alone.
$(TRAIN_STAMP): requirements-train.txt
	test -x $(TRAIN)/bin/python || $(PYTHON) -m venv $(TRAIN)
	$(TRAIN)/bin/pip install --quiet -r requirements-train.txt
	touch $(TRAIN_STAMP)

## Run the whole chain on sample_data/ into ./artifacts-demo and print `embedtab status`.
demo: setup
	EMBEDTAB_ARTIFACTS=artifacts-demo HF_HUB_OFFLINE=1 $(BIN)/embedtab run configs/pipeline.yaml
	EMBEDTAB_ARTIFACTS=artifacts-demo $(BIN)/embedtab status

## Day 2, the daily update: a copy of configs/ and sample_data/ in ./demo-shop runs the chain
## (day 1), takes sample_data/next_day/ over (new items with texts and images, new users, day 4),
## and runs the same command again: only the new work is done and no id moves.
day2: setup
	rm -rf demo-shop && mkdir -p demo-shop && cp -r configs demo-shop/ && cp -r sample_data demo-shop/
	rm -rf demo-shop/sample_data/next_day
	cd demo-shop && HF_HUB_OFFLINE=1 ../$(BIN)/embedtab run configs/pipeline.yaml -A artifacts
	cp -r sample_data/next_day/. demo-shop/sample_data/
	cd demo-shop && HF_HUB_OFFLINE=1 ../$(BIN)/embedtab run configs/pipeline.yaml -A artifacts
	cd demo-shop && ../$(BIN)/embedtab status -A artifacts

## Train on the demo's artifacts with both trainers (examples/), in the training environment.
train-examples: demo setup-train
	$(TRAIN)/bin/python examples/train_transformers4rec.py artifacts-demo
	$(TRAIN)/bin/python examples/train_with_content_lookups.py artifacts-demo

## The test suite in both environments (what CI runs): the pinned stack runs everything, including
## the cross-environment test that hands one artifact directory back and forth with the modern one;
## the modern stack runs every test that does not need NVTabular. Both always run; the last line
## reports both, and the target fails if either failed.
test: setup setup-modern setup-train
	@lint=0; pinned=0; modern=0; \
	$(MAKE) --no-print-directory lint || lint=$$?; \
	EMBEDTAB_MODERN_PYTHON="$(CURDIR)/$(MODERN)/bin/python" EMBEDTAB_TRAIN_PYTHON="$(CURDIR)/$(TRAIN)/bin/python" \
		$(BIN)/python -m pytest -q || pinned=$$?; \
	$(MODERN)/bin/python -m pytest -q || modern=$$?; \
	echo "make test: lint exit $$lint, pinned environment (.venv) pytest exit $$pinned, modern environment (.venv-modern) pytest exit $$modern"; \
	test $$lint -eq 0 && test $$pinned -eq 0 && test $$modern -eq 0

## ruff (lint and format) and mypy, configured in pyproject.toml, on the pinned environment.
lint: setup
	$(BIN)/ruff check embedtab tests benchmarks examples
	$(BIN)/ruff format --check embedtab tests benchmarks examples
	$(BIN)/mypy

test-pinned: setup setup-modern setup-train
	EMBEDTAB_MODERN_PYTHON="$(CURDIR)/$(MODERN)/bin/python" EMBEDTAB_TRAIN_PYTHON="$(CURDIR)/$(TRAIN)/bin/python" \
		$(BIN)/python -m pytest -q

test-modern: setup-modern
	$(MODERN)/bin/python -m pytest -q

clean-demo:
	rm -rf artifacts-demo demo-shop
