# manga_assets: `make demo` and `make test` work on a fresh machine (they create .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On machines without CUDA the CPU wheel of this torch is installed. A GPU user installs the torch
# build of their choice into .venv first (or sets TORCH_SPEC); torch is only installed when the
# venv has none.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export MANGA_DATA_DIR ?= $(CURDIR)/data

.PHONY: install test lint demo dev bench bench-survey clean test-services

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && [ "$(TORCH_SPEC)" = "torch==2.13.0" ]; then \
	    $(PY) -m pip install --quiet torch $(TORCH_PIP_ARGS); \
	  else \
	    $(PY) -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); \
	  fi; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check manga_assets manga_assets_tests benchmarks

# Tests start a real PostgreSQL server, a Redis server (the Celery broker) and a headless
# Chromium; install them when absent (as root, from the distribution's packages).
test-services:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null \
	    || ! command -v redis-server >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium redis-server >/dev/null; \
	fi

# One worker per core (pytest-xdist), each test file on one worker: a file's module fixtures
# (a release, a trained pipeline) are built once.
test: install lint test-services
	$(PY) -m pytest -q -p no:cacheprovider --durations=20 -n auto --dist loadfile

demo: install
	$(VENV)/bin/manga-assets demo --dir demo

dev: install
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: install
	$(PY) benchmarks/extraction.py
	$(PY) benchmarks/download.py

# A DR17-sized release (3.6 GB, written once into survey/) through every stage; ~30 min on 2 cores.
bench-survey: install
	$(PY) benchmarks/survey_scale.py --dir survey

clean:
	rm -rf $(VENV) demo data
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
