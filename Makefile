# kfct — continuous training on Kubeflow Pipelines.  `make help` lists targets.
SHELL := /bin/bash
# The interpreter .venv is made from (`make PYTHON=...` to choose). Debian's own python3.11 is
# preferred where it can make a venv: it is built with PGO and LTO and linked statically, while a
# version manager's default build (pyenv: a shared libpython, no PGO) runs kfct's import-bound
# stage processes ~15 % slower (bench/results.md, "Local CT pipeline").
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11; do $$p -c 'import ensurepip; ensurepip.version()' >/dev/null 2>&1 && { echo $$p; exit; }; done; echo python3.11)
VENV ?= .venv
PY := $(VENV)/bin/python
KFCT := $(VENV)/bin/kfct
ROWS ?= 100000
DATA ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast test-tools e2e lint compile compile-submit submit schedule images serve rollout score monitor mlflow-ui bench data clean

help: ## List targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	@touch $@

# kfct's own sources are installed editable: pip byte-compiles the dependencies, not them. Every
# pipeline stage is a fresh process that imports ~40 of them; under PYTHONDONTWRITEBYTECODE (set in
# many dev containers) each would recompile them every time. compileall is a no-op when they are fresh.
install: $(VENV)/.installed ## Create .venv and install pinned dependencies
	@$(PY) -m compileall -q kfct components pipelines serving

run: install ## Run the CT pipeline end to end locally (kfp.local); DATA=path|s3://..., ROWS=100000
	$(KFCT) run $(if $(DATA),--data-uri $(DATA),--rows $(ROWS)) $(ARGS)

# pytest keeps its assertion-rewritten test modules as .pyc files only where Python may write bytecode:
# under PYTHONDONTWRITEBYTECODE (set in many dev containers) every xdist worker parsed and rewrote all
# ~200 test modules again on every run (collection: 5.6 s of CPU per process instead of 3.1 s).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest

# pytest-xdist workers (`make test TEST_WORKERS=0`: one process): one per core and one more, because
# a test that waits on a server, a rollout's bake or a shutdown bound leaves its core idle (measured on
# 2 cores: 2 workers kept them 83 % busy, 3 workers 95 %). Each test file runs on one worker, e2e and
# slow files first (tests/conftest.py); --no-loadscope-reorder keeps that order.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The `alone` files (tests/conftest.py ALONE_FILES) judge latency within seconds, so no pipeline runs
# beside them: they run after the parallel pass, one file per core at most (2 cores: 1:29 instead of
# 2:28 in one process, and no p99 check failed in 8 runs of it).
ALONE_WORKERS ?= $(shell nproc 2>/dev/null || echo 1)

test: install ## Run the whole test suite (what CI runs): unit, data, model, integration, e2e, tool checks
	$(PYTEST) $(XDIST) -m "not alone" $(ARGS)
	$(PYTEST) -n $(ALONE_WORKERS) --dist loadfile --no-loadscope-reorder -m alone $(ARGS)

test-fast: install ## Pure and in-process tests, about a minute: no pipeline run, no server process, no e2e
	$(PYTEST) -q $(XDIST) -m "not slow and not e2e and not tool" $(ARGS)

test-tools: install ## The tests that run a tool over the repository (ruff, mypy, lint-imports, hadolint, make install); part of make test
	$(PYTEST) -q -m tool $(ARGS)

lint: install ## ruff check and ruff format --check on the package, bench and tests, mypy, import-linter contracts (pyproject.toml)
	$(VENV)/bin/ruff check kfct components pipelines serving bench tests
	$(VENV)/bin/ruff format --check kfct components pipelines serving bench tests
	$(VENV)/bin/mypy kfct
	$(VENV)/bin/lint-imports

data: install ## Generate a dataset: make data ROWS=100000 OUT=data/customers.parquet
	$(KFCT) data generate --rows $(ROWS) --out $(or $(OUT),data/customers.parquet) $(ARGS)

mlflow-ui: install ## Open the MLflow UI on the local store (127.0.0.1:5000)
	$(KFCT) mlflow-ui $(ARGS)

compile: install ## Compile pipelines to build/*.yaml (type checking on)
	$(KFCT) compile $(ARGS)

compile-submit: compile ## Compile and submit a CT run to Kubeflow Pipelines (KFCT_KFP_HOST)
	$(KFCT) submit $(ARGS)

submit: compile-submit

schedule: compile ## Create a recurring CT run (default monthly)
	$(KFCT) schedule $(ARGS)

images: ## Build and push component, GPU-training and serving images (needs Docker)
	$(KFCT) images --push $(ARGS)

serve: install ## Serve champion (+ canary) with KServe on 127.0.0.1:8080
	$(KFCT) serve $(ARGS)

rollout: install ## Progressive canary rollout: promote or roll back by itself
	$(KFCT) rollout $(ARGS)

score: install ## Batch-score a parquet of customers with the champion: INPUT=... OUTPUT=...
	$(KFCT) score --input $(INPUT) --output $(OUTPUT) $(ARGS)

monitor: install ## Drift check on the prediction log; retrains when needed
	$(KFCT) monitor $(ARGS)

bench: install ## Benchmarks: serving, batch scoring, training, pipeline -> bench/results.md
	$(PY) -m bench $(ARGS)

clean: ## Remove local state (.kfct) and build outputs
	rm -rf .kfct build

e2e: install ## The cluster path end to end with a cluster's boundaries (rendered manifests, pods, S3, MLflow, KServe)
	$(PYTEST) -q -s -m e2e tests/e2e $(ARGS)
