# The shop's commands. Every target bootstraps what it needs (the virtual
# environment first) or says exactly what is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One list of roles; tests check manifests and the Tekton matrix against
# cqrs_common.roles, which holds the same names.
ROLES := dispatcher command-order order-db process-data stats-order-db query-order
export PYTHONPATH := $(CURDIR)/functions/shared$(foreach r,$(ROLES),:$(CURDIR)/functions/$(r))

.PHONY: help
help:
	@echo "make run      all six roles on this machine (ports 8080-8085), Ctrl-C stops them"
	@echo "make test     every test (unit, integration, faults, browser, manifests, tekton, images)"
	@echo "make replay   rebuild the read store from the order log (against make run)"
	@echo "make bench    throughput, lag, scaling, cold start, memory -> docs/benchmarks.md"
	@echo "make lint     ruff"
	@echo "make images | push | deploy | smoke | pipeline   the cluster side (see README)"

$(VENV)/.installed: pyproject.toml functions/requirements.in
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed

.PHONY: run
run: venv
	$(PY) -m cqrs_common.stack

.PHONY: replay
replay: venv
	$(PY) -m cqrs_common.replay

# Throughput, latency, lag, scaling, cold start and memory on SQLite and PostgreSQL, against a
# stack of its own; writes docs/benchmarks.md and .png (~10 min; BENCH_QUICK=1 for ~1 min).
.PHONY: bench
bench: venv
	$(PY) -m bench

.PHONY: lint
lint: venv
	$(VENV)/bin/ruff check functions tests bench tekton
	$(VENV)/bin/ruff format --check functions tests bench tekton

# What the tests need beyond Python packages. As root with apt-get we install it; otherwise we
# say what to install.
.PHONY: test-deps
test-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make test needs Chromium at /usr/bin/chromium: sudo apt-get install chromium"; exit 1; fi; }
	@command -v kubectl >/dev/null || { echo "make test needs kubectl (for kubectl kustomize): see https://kubernetes.io/docs/tasks/tools/"; exit 1; }

.PHONY: test
test: venv test-deps
	$(PY) -m pytest

.PHONY: test-unit test-integration test-browser
test-unit: venv
	$(PY) -m pytest tests/unit
test-integration: venv
	$(PY) -m pytest tests/integration
test-browser: venv test-deps
	$(PY) -m pytest tests/browser

# Faults injected into the local stack (kills, restarts, receivers away, duplicates, poison,
# replays, SIGTERM, fuzzing); -s shows the numbers each test measures. FUZZ_SEED=<n> varies
# the fuzzer.
.PHONY: test-faults
test-faults: venv
	$(PY) -m pytest tests/faults -s

# --- cluster (issue 4) ---
# The cluster side (docs/cluster.md). Images are cqrs-<role>:$(TAG), built from
# functions/Dockerfile with docker, podman or buildah, whichever this machine has.
REGISTRY ?=
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
OVERLAY ?= direct
DATABASE ?= cnpg
BASE_URL ?= http://127.0.0.1:8080
HOST ?=
# DEPLOY_FLAGS=--dry-run prints what make deploy would apply.
DEPLOY_FLAGS ?=
CLUSTER_ENV = ROLES="$(ROLES)" REGISTRY="$(REGISTRY)" TAG="$(TAG)"

.PHONY: images push deploy smoke requirements test-images test-cluster
images:
	$(CLUSTER_ENV) knative/scripts/images.sh build

push: images
	$(CLUSTER_ENV) knative/scripts/images.sh push

deploy:
	@test -n "$(REGISTRY)" || { echo "make deploy needs REGISTRY (and TAG) of the pushed images"; exit 2; }
	$(CLUSTER_ENV) knative/scripts/deploy.sh --overlay $(OVERLAY) --database $(DATABASE) $(DEPLOY_FLAGS)

smoke: venv
	$(PY) tests/e2e/smoke.py --base-url "$(BASE_URL)" $(if $(HOST),--host "$(HOST)")

# Recompile the images' hashed lock from functions/requirements.in (needs the package index).
requirements: venv
	$(PY) -m pip install --quiet pip-tools
	cd functions && ../$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	  --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.txt requirements.in

# Builds a real image on this machine (container engine set up by the test; ~4-6 min).
test-images: venv
	$(PY) -m pytest -m images tests/images -v -s

# The fast cluster checks: manifests, Dockerfile, scripts, smoke client.
test-cluster: venv
	$(PY) -m pytest -m "not images" tests/manifests tests/images tests/e2e -q
# --- end cluster ---

# --- tekton (issue 5) ---
# make pipeline DOCKER_USER=<Docker Hub user or org> [REPO_URL=..] [REVISION=..] [TAG=..]
# [OVERLAY=direct|eventing]; PIPELINE_DRY_RUN=1 prints the PipelineRun instead.
# The cluster clones REPO_URL, so REVISION must be pushed there. See docs/tekton.md.
REPO_URL ?= $(shell git remote get-url origin 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
OVERLAY ?= direct

.PHONY: pipeline
pipeline: venv
	@$(PY) tekton/scripts/pipelinerun.py --repo-url '$(REPO_URL)' --revision '$(REVISION)' \
	  --docker-user '$(DOCKER_USER)' --tag '$(TAG)' --overlay '$(OVERLAY)' \
	  $(if $(filter-out 0,$(PIPELINE_DRY_RUN)),--dry-run)

.PHONY: tekton-lint
tekton-lint: venv
	$(PY) -m pytest tests/tekton -q
# --- end tekton ---
