# ordermesh: every chore as a make target. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
TOOLS := $(CURDIR)/$(VENV)/bin
CARGO ?= cargo
# Istio's CRDs and the Gateway API's (standard channel), to validate istio/
# (files of their releases, read in place; see docs/rollout.md).
ISTIO_CRDS ?= $(abspath ../shared/istio/crd-all.gen.yaml)
GATEWAY_API_CRDS ?= $(abspath ../shared/gateway-api/standard-install.yaml)
# Flagger's (v1.44.0: Canary, MetricTemplate, AlertProvider), for k8s/.
FLAGGER_CRDS ?= $(abspath ../shared/flagger/crd.yaml)

# Tests find the tools here; with ORDERMESH_REQUIRE_ALL=1 a missing tool or
# database fails the test instead of skipping it.
export ORDERMESH_TOOLS_DIR := $(TOOLS)
export ISTIO_CRDS GATEWAY_API_CRDS FLAGGER_CRDS

.PHONY: help setup build run test lint fmt proto test-coverage dev-run dev-stop bench-guard bench-guard-update \
	test-client fuzz bench chaos mesh-run mesh-stop deploy-docker deploy-k8s check-observability check-compose check-manifests check-migrations

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-20s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Install the tools: PyPI tools into .venv/, Prometheus, Chromium, nats-server and bubblewrap from Debian, cargo-tarpaulin/deny/fuzz
	scripts/install-system-tools.sh
	@$(CARGO) tarpaulin --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-tarpaulin
	@$(CARGO) deny --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deny
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz

$(VENV)/.installed: scripts/tools.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/tools.txt
	touch $@

build: ## Build every binary (release)
	$(CARGO) build --release --locked --bins

run: ## Run the whole system in one process (SQLite under ./data)
	$(CARGO) run --release --locked --bin ordermesh

test: setup ## Run every test: lint, manifests, PostgreSQL and every external tool required
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory check-observability
	ORDERMESH_REQUIRE_ALL=1 scripts/with-postgres.sh $(CARGO) test --locked --workspace
	# A smoke of `make bench` on the debug build, to keep it working; it measures nothing.
	BENCH_PROFILE=dev BENCH_DURATION=1s BENCH_OUTPUT=target/bench/smoke.json BENCH_ARGS="--search-steps 2 --cost-requests 200 --cost-orders 40" scripts/bench.sh
	$(MAKE) --no-print-directory bench-guard
	$(MAKE) --no-print-directory proto
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory test-coverage COVERAGE_SCOPE="-p ordermesh-domain --include-files 'lib/domain/*'"

# What `buf breaking` compares proto/ with: the main branch (worktrees
# included: the repository's common git directory).
BUF_BREAKING_AGAINST ?= $(shell git rev-parse --path-format=absolute --git-common-dir)\#branch=main,subdir=proto

lint: setup ## clippy -D warnings, rustfmt, buf lint, cargo deny, hadolint, compose and manifest validators
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	cd proto && $(TOOLS)/buf lint
	cd proto && $(TOOLS)/buf breaking --against '$(BUF_BREAKING_AGAINST)'
	$(CARGO) deny check licenses bans sources
	@if timeout 30 $(CARGO) deny fetch db >/dev/null 2>&1; then $(CARGO) deny check advisories; \
		else echo "cargo deny: the advisory database is out of reach here; advisories not checked"; fi
	$(MAKE) --no-print-directory check-compose
	$(MAKE) --no-print-directory check-manifests
	$(MAKE) --no-print-directory check-migrations

fmt: ## Format the code
	$(CARGO) fmt --all

proto: setup ## Regenerate proto/ordermesh.binpb (Envoy's transcoder loads it), buf lint, fail if it changed
	$(CARGO) run --quiet --locked -p ordermesh-proto --example descriptor_set -- proto/ordermesh.binpb
	cd proto && $(TOOLS)/buf lint
	@git diff --quiet -- proto/ordermesh.binpb || \
		{ echo "proto/ordermesh.binpb changed: commit it with the protos"; exit 1; }

# `make test` runs it on one small crate to prove the target works; run it
# alone for the whole workspace (slow: everything is rebuilt instrumented).
COVERAGE_SCOPE ?= --workspace
COVERAGE_DIR := target/coverage
test-coverage: ## Coverage of every test: HTML report in target/coverage/, summary on stdout
	ORDERMESH_REQUIRE_ALL=1 scripts/with-postgres.sh $(CARGO) tarpaulin --locked $(COVERAGE_SCOPE) \
		--skip-clean --target-dir target/tarpaulin --out Html --out Json \
		--exclude-files 'target/*' --output-dir $(COVERAGE_DIR) --timeout 300
	@echo "coverage report: $(COVERAGE_DIR)/tarpaulin-report.html"

# cargo-fuzz passes nightly-only flags; this machine has one stable
# toolchain, and RUSTC_BOOTSTRAP=1 lets it take them. Our crates forbid
# unsafe code, so AddressSanitizer buys little and doubles the build:
# `-s none`, and a dev build (`--dev`, debug assertions on) so a fresh
# checkout fuzzes within minutes. New inputs go to target/fuzz-corpus;
# fuzz/corpus holds the committed seeds.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := transcode path_template response_json
# Its builds are kept outside the checkout, like cargo's own registry cache,
# so a fresh clone on the same machine rebuilds only what changed (the
# instrumented build of every dependency takes minutes on two cores).
FUZZ_TARGET_DIR ?= $(HOME)/.cache/ordermesh/fuzz-target
fuzz: setup ## cargo-fuzz on the gateway's transcoding, path templates and answer writer, FUZZ_SECONDS (20) each
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$target; \
		echo "fuzz: $$target for $(FUZZ_SECONDS)s"; \
		CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --dev -s none $$target target/fuzz-corpus/$$target fuzz/corpus/$$target \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >target/fuzz-$$target.log 2>&1 \
			|| { tail -n 80 target/fuzz-$$target.log; echo "fuzz: $$target failed; the input is in fuzz/artifacts/$$target"; exit 1; }; \
		grep -E '^(Done|stat::number_of_executed_units)' target/fuzz-$$target.log; \
	done

# The Jepsen-style run of bin/ordermesh/tests/system/chaos/ (docs/reliability.md),
# as long as CHAOS_DURATION says (seconds, or 5m); CHAOS_SEED replays a
# schedule. `make test` runs it for 30 s. Needs CAP_NET_ADMIN and
# CAP_SYS_ADMIN (network namespaces) and PostgreSQL's server binaries.
CHAOS_DURATION ?= 300s
CHAOS_SEED ?=
chaos: ## A Jepsen-style run under random faults: CHAOS_DURATION (300s), CHAOS_SEED; summary and, on an anomaly, history and logs in target/chaos/
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) ORDERMESH_REQUIRE_ALL=1 \
		$(CARGO) test --locked -p ordermesh --test system chaos::a_jepsen_style_run -- --nocapture

# The instruction-count guard: callgrind per GetOrder, REST get-order and
# CreateOrder saga on the release build, against bin/bench/instructions.json
# (fails on a rise of more than 3 %; docs/performance.md).
bench-guard: ## callgrind instruction counts of the hot paths against the committed baseline
	$(CARGO) build --release --locked --bins
	target/release/ordermesh-bench instructions --ordermesh target/release/ordermesh

bench-guard-update: ## Refresh bin/bench/instructions.json after a change meant to move the counts
	$(CARGO) build --release --locked --bins
	target/release/ordermesh-bench instructions --ordermesh target/release/ordermesh --update

bench: $(VENV)/.installed ## Benchmarks (docs/performance.md): gateway vs Envoy's transcoder, gRPC, echo ceiling, SQLite vs PostgreSQL, memory; JSON in target/bench/results.json
	scripts/bench.sh

dev-run: build ## Each role as its own process (ports as in the mesh), logs in data/logs, pids in data/run
	BIN_DIR=target/release scripts/dev.sh start

dev-stop: ## Stop exactly the processes dev-run started
	scripts/dev.sh stop

test-client: ## A scripted orderctl demo against a running system: browse, order, decline, cancel, watch
	@[[ -x target/release/orderctl ]] || $(CARGO) build --release --locked --bin orderctl
	ORDERCTL=target/release/orderctl scripts/demo.sh

mesh-run: build setup ## The local Envoy mesh: services + mTLS sidecars + edge on :10000 (envoy/mesh/mesh.sh)
	BIN_DIR=target/release envoy/mesh/mesh.sh start

mesh-stop: ## Stop exactly the processes mesh-run started
	envoy/mesh/mesh.sh stop

deploy-docker: ## The Compose stack (deploy/docker-compose.yaml); prints the commands when there is no Docker engine
	scripts/deploy.sh docker

deploy-k8s: ## The k8s dev overlay (OVERLAY=prod for prod); prints the commands when there is no cluster
	scripts/deploy.sh k8s

check-observability: setup ## promtool: scrape configs, alert rules and their unit tests
	promtool check config deploy/observability/prometheus/prometheus.yml
	promtool check config deploy/observability/prometheus/prometheus-compose.yml
	promtool check rules deploy/observability/prometheus/alerts.yml
	cd deploy/observability/prometheus && promtool test rules alerts.test.yml

check-compose: setup ## The Compose file: Compose Specification schema, mounts, variables, health-check binaries
	$(TOOLS)/check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yaml
	$(TOOLS)/python scripts/check-compose.py deploy/docker-compose.yaml Dockerfile

check-migrations: ## Migrations only expand what the previous release uses (scripts/check-migrations.py), with its self-test
	python3 scripts/check-migrations.py --self-test
	python3 scripts/check-migrations.py lib/*/migrations

check-manifests: setup ## Dockerfile (hadolint), k8s overlays (kubernetes-validate, Pod Security restricted), istio/ (Istio's and Gateway API CRDs), workflows (actionlint)
	scripts/check-manifests.sh
