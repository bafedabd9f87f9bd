# ordermesh: every chore as a make target. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
TOOLS := $(CURDIR)/$(VENV)/bin
CARGO ?= cargo

# Tests find the tools here; with ORDERMESH_REQUIRE_ALL=1 a missing tool or
# database fails the test instead of skipping it.
export ORDERMESH_TOOLS_DIR := $(TOOLS)

.PHONY: help setup build run test lint fmt check-observability

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

OBSERVABILITY := deploy/observability

setup: $(VENV)/.installed ## Install the tools the tests drive: grpcurl into .venv/, Prometheus from Debian
	scripts/install-system-tools.sh

$(VENV)/.installed: scripts/tools.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/tools.txt
	touch $@

build: ## Build every binary (release)
	$(CARGO) build --release --locked --bins

run: ## Run the whole system in one process (SQLite under ./data)
	$(CARGO) run --release --locked --bin ordermesh

test: setup ## Run every test, with PostgreSQL and every external tool required
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory check-observability
	ORDERMESH_REQUIRE_ALL=1 scripts/with-postgres.sh $(CARGO) test --locked --workspace

lint: ## clippy with warnings as errors, and a rustfmt check
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

check-observability: ## promtool: scrape config, alert rules and their unit tests
	promtool check config $(OBSERVABILITY)/prometheus/prometheus.yml
	promtool check rules $(OBSERVABILITY)/prometheus/alerts.yml
	cd $(OBSERVABILITY)/prometheus && promtool test rules alerts.test.yml
