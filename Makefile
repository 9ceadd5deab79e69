# Quickstart: `make demo` (set-up + the main job) and `make test` (set-up + the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision first, at versions known to work (a CUDA build that also runs on CPU);
# override TORCH_SPEC to use another build. pyproject only states ranges.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export MMSAFETY_CACHE ?= $(CURDIR)/.cache/mmsafety
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

# The main job on the embedded default: the model organism (built on first use, ~2-3 min on
# 2 CPU cores) scored on all five GOAT-Bench tasks of the synthetic meme sample.
demo: setup
	$(BIN)/mmsafety-eval

test: setup-test
	$(BIN)/python -m pytest

test-fast: setup-test
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf runs .pytest_cache
