# One Makefile for people and CI. `make run` = set up, train, serve; `make test` = set up, test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
ROWS ?= 20000
SEED ?= 42

.PHONY: env lock setup data train run serve test lint format services bench bench-ops bench-hostile bench-predlog bench-knobs bench-monitoring bench-quality bench-pipeline bench-pipeline-1m clean

# uv installs from uv.lock; a machine with only Python gets a private, pinned uv in .uv/ first.
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.uv/bin/uv)

$(CURDIR)/.uv/bin/uv:
	@echo "==> no uv on PATH: installing uv $(UV_VERSION) into .uv/ (once, ~10 s)"
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install -q uv==$(UV_VERSION)

# Bytecode: every DVC stage, CLI call and test server is a new Python process. Compiling all of
# site-packages at install (--compile-bytecode) took ~2 min; instead the make targets let Python
# cache the .pyc of what it really imports, once, even where PYTHONDONTWRITEBYTECODE is set (CI).
unexport PYTHONDONTWRITEBYTECODE

$(BIN)/carprice: pyproject.toml uv.lock | $(UV)
	@echo "==> installing the project and its pinned dependencies into .venv (uv.lock)"
	$(UV) sync --frozen --extra dev
	touch $(BIN)/carprice

lock: | $(UV) ## re-resolve uv.lock after changing dependencies in pyproject.toml
	$(UV) lock

setup: $(BIN)/carprice ## create .venv and install the project with its dev tools

data: setup ## make the raw data that data.dvc tracks (pulled from the DVC remote, else regenerated)
	@if [ ! -f data/raw/cars.csv ]; then \
	  echo "==> data/raw/cars.csv: pulling it from the DVC remote, else generating $(ROWS) rows"; \
	  dvc pull -q data.dvc 2>/dev/null || { \
	    carprice data sample --rows $(ROWS) --seed $(SEED) --out data/raw/cars.csv && \
	    dvc commit -q -f data.dvc && \
	    { git diff --quiet -- data.dvc || { echo "regenerated data differs from data.dvc" >&2; exit 1; }; }; \
	  }; \
	fi
	dvc status data.dvc

train: data ## run the pipeline: validate -> preprocess -> train -> evaluate
	@echo "==> dvc repro: validate, preprocess, train (cross-validated), evaluate, register"
	dvc repro

DEMO_KEY_FILE ?= .carprice-demo-key

run: train ## train, create a demo admin + API key (kept in .carprice-demo-key), serve on :8000
	@echo "==> demo access: an admin user and an API key, reused by later runs"
	carprice users bootstrap --key-file $(DEMO_KEY_FILE)
	@echo "==> serving the production model on http://127.0.0.1:8000 (docs: /docs, Ctrl-C stops)"
	CARPRICE_ENV=development carprice serve

serve: setup ## serve only (development settings; set CARPRICE_* for anything else)
	CARPRICE_ENV=development carprice serve

env: ## write .env for docker compose from .env.example, with fresh random secrets
	$(PYTHON) scripts/make_env.py

services: ## start PostgreSQL and Redis when they are not running
	bash scripts/services.sh

test: setup services ## the test suite (real Redis, PostgreSQL, MLflow, DVC)
	pytest

lint: setup
	ruff check .
	ruff format --check .
	mypy pipelines serving carprice

format: setup
	ruff check --fix .
	ruff format .

bench-pipeline: setup ## time every stage of `dvc repro` on the default data, and a no-op repro
	python benchmarks/pipeline.py --rows $(ROWS)

bench-pipeline-1m: setup ## the same on 1,000,000 rows (several minutes)
	python benchmarks/pipeline.py --rows 1000000

bench-quality: setup ## model RMSE vs irreducible error and MAE vs a linear baseline
	python benchmarks/quality.py

bench: setup ## serving benchmark against the issue's targets (see benchmarks/serving.py; needs wrk)
	python -m benchmarks.serving

bench-predlog: setup services ## rows/s of the prediction log's batched insert into PostgreSQL
	python -m benchmarks.prediction_log

bench-ops: setup ## worker memory with the pinned LRU full, a hot swap under load (needs wrk)
	python -m benchmarks.serving_ops

bench-monitoring: setup services ## prediction log + metrics: overhead, SIGTERM drain, DB down, exact totals (~6 min; needs wrk: apt-get install -y wrk)
	python -m benchmarks.serving_monitoring --temp-model

bench-hostile: setup ## hostile clients (bogus and valid keys) beside legit traffic, 2 workers (needs wrk)
	python -m benchmarks.hostile

bench-knobs: setup ## the serving loads with one setting changed at a time (~12 min; needs wrk)
	python -m benchmarks.serving_knobs

bench-drift: setup ## `carprice drift report` on 50,000 logged cars vs a 5,000-row reference
	python benchmarks/drift.py

clean:
	rm -rf data/processed models reports mlruns dvc_plots
