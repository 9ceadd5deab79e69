# Quickstart: `make demo` (set-up + the main job) and `make test` (set-up + the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision first, at versions known to work (a CUDA build that also runs on CPU);
# override TORCH_SPEC to use another build. pyproject only states ranges.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Built models and data: the same cache as a console script typed in a shell, ${XDG_CACHE_HOME:-~/.cache}/mmsafety
# (mmsafety/paths.py); MMSAFETY_CACHE=DIR make ... puts them elsewhere. `mmsafety-list models` prints where it is.
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

# torchattacks (the reference the PGD and APGD tests compare with) without its dependencies: it pins
# requests~=2.25, which would downgrade what mkdocs-material and the served clients need; what it
# imports (torch, torchvision, scipy, tqdm) the test extra already brings.
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps "torchattacks>=3.5,<4"
	touch $@

# LiteLLM's proxy: a third-party OpenAI-compatible server the suite runs `model=openai_compatible`
# against (tests/test_served_third_party.py). In a virtual environment of its own: litellm pins
# huggingface-hub<2, which transformers 5 cannot share.
LITELLM_VENV ?= .venv-litellm
$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet "litellm[proxy]>=1.100,<2"
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test $(LITELLM_VENV)/.installed

# The product on the embedded default, in runs/demo/: the model organism (shipped inside the package,
# nothing is trained) scored on the five GOAT-Bench tasks of the synthetic memes; one tool-call attack
# (clean rate, then the attacked rate on held-out prompts); and the leaderboard page of both.
# Running it again resumes: finished samples are not redone.
DEMO ?= runs/demo
demo: setup
	$(BIN)/mmsafety-eval hydra.run.dir=$(DEMO)/goat_bench
	$(BIN)/mmsafety-attack attack.eps=32/255 attack.steps=500 images=4 heldout_prompts=16 hydra.run.dir=$(DEMO)/attack
	$(BIN)/mmsafety-leaderboard $(DEMO) --out $(DEMO)/board
	@echo
	@echo "Open $(DEMO)/board/leaderboard.html: the GOAT-Bench table (the organism on its own synthetic memes),"
	@echo "the attack row (clean tool-call rate vs the rate with the adversarial image on held-out prompts),"
	@echo "the clean and adversarial thumbnails and the loss curve."

test: setup-test
	$(BIN)/python -m pytest

test-fast: setup-test
	$(BIN)/python -m pytest -m "not slow"

# Mutation testing of the core (mutmut; not part of `make test`): each module group in tests/mutation.py
# mutated in a scratch copy under .cache/mutation/, each mutant run against the tests that cover it.
# MUTATION_GROUPS="metrics evaluate" runs some groups (default: the core groups, about 45 min on 2 idle cores).
# Scores, survivors and times: docs/testing.md.
.PHONY: mutation
MUTATION_GROUPS ?=
mutation: setup-test
	$(BIN)/python -m tests.mutation $(MUTATION_GROUPS)

clean:
	rm -rf runs .pytest_cache
