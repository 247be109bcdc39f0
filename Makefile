# Two entry points for a fresh machine: `make demo` (set up + main job) and `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export ROUTERRETRIEVER_DATA_DIR ?= $(abspath ../shared/data/beir)
export ROUTERRETRIEVER_CACHE_DIR ?= $(abspath .cache)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-slow lint benchmark benchmark-index

setup: $(VENV)/.installed

# torch 2.13.0 first: it is the CPU build on local disk; a bare `torch` requirement could pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The main job: the routed pipeline on a selection of the shared datasets that runs in under 20 minutes on
# 2 CPU cores the first time (index, train experts, build routers, evaluate, print the tables); later runs
# reuse every saved artifact. `make benchmark` is the full comparison on all datasets (1.5 hours from nothing,
# BENCHMARKS.md §4b).
DEMO_EXPERTS ?= feedbackqa pubmedqa-l squad
DEMO_DIR := $(ROUTERRETRIEVER_CACHE_DIR)/demo
demo: setup
	$(VENV)/bin/routerretriever benchmark --router $(DEMO_DIR)/router --no-multitask \
		$(foreach d,$(DEMO_EXPERTS),--expert-dataset $(d) --eval-dataset $(d)) --eval-dataset aila2019-statutes \
		--output-json $(DEMO_DIR)/results.json --markdown $(DEMO_DIR)/results.md --plot $(DEMO_DIR)/confusion.png

benchmark: setup
	$(VENV)/bin/routerretriever benchmark --router $(ROUTERRETRIEVER_CACHE_DIR)/router \
		--output-json $(ROUTERRETRIEVER_CACHE_DIR)/benchmark.json --markdown $(ROUTERRETRIEVER_CACHE_DIR)/benchmark.md \
		--plot $(ROUTERRETRIEVER_CACHE_DIR)/confusion.png

test: setup
	$(PY) -m pytest

# The long checks: every expected base score (encodes all 8 corpora unless cached) and the demo selection end to end
# (reuses what `make demo` saved in $(ROUTERRETRIEVER_CACHE_DIR)).
test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check .

benchmark-index: setup
	$(PY) benchmarks/indexing.py --dataset pubmedqa-l --repeats 2
