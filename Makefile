# Two entry points for a fresh machine: `make demo` (set up + main job) and `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export ROUTERRETRIEVER_DATA_DIR ?= $(abspath ../shared/data/beir)
export ROUTERRETRIEVER_CACHE_DIR ?= $(abspath .cache)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint benchmark-index

setup: $(VENV)/.installed

# torch 2.13.0 first: it is the CPU build on local disk; a bare `torch` requirement could pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/routerretriever evaluate --dataset scifact --dataset nfcorpus --system base \
		--output-json $(ROUTERRETRIEVER_CACHE_DIR)/demo-results.json

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

benchmark-index: setup
	$(PY) eval/bench_index.py --dataset scifact --repeats 2
