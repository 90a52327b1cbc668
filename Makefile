# The project's commands. `make test` is what CI runs (.ci/run); `make demo` shows
# the operator at work on this machine.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CRD_FILE := crds/sendingdomains.anypost.com.yaml

.PHONY: help test prepare-go prepare-rust prepare-fuzz test-deps control-plane fmt-check clippy node-build cargo-test crds \
	demo demo-down bench fuzz cluster-up cluster-down image

# `make demo MODE=pods` runs the demo's operator as the chart's pods on the local node.
MODE ?= process

help:
	@echo "make test        install/build what the tests need, then fmt check, clippy and every test"
	@echo "make demo        run the operator locally against example domains (make demo-down stops it)"
	@echo "                 MODE=pods: the same demo through the Helm chart, as pods on a local node"
	@echo "make image       build the operator's image offline and import it into the local node"
	@echo "make bench       the benchmarks, each beside its baseline"
	@echo "make fuzz        the DNS request-path fuzz target for FUZZ_SECONDS (60)"
	@echo "make crds        regenerate $(CRD_FILE) from the Rust types"
	@echo "make cluster-up  start the local control plane (scripts/dev-cluster up); cluster-down stops it"

## Everything CI checks. The Go builds (Helm, the test tools, the control plane
## and the node, cached after the first run) and the Rust ones (fmt, clippy, the
## test build) and the fuzz target's build run side by side: none keeps both
## cores busy all the time (downloads, links, long single-crate compiles), so
## together they finish sooner. Each line of their output is prefixed with [go],
## [rust] or [fuzz]. After the tests, the fuzz target runs for a minute.
test:
	@$(MAKE) --no-print-directory -j3 prepare-go prepare-rust prepare-fuzz
	@$(MAKE) --no-print-directory control-plane cargo-test fuzz

prepare-go:
	scripts/install-test-deps 2>&1 | sed -u 's/^/[go] /'
	scripts/dev-cluster build --node 2>&1 | sed -u 's/^/[go] /'

# Without make's jobserver, so that cargo uses every core as it does alone.
prepare-rust:
	$(CARGO) fmt --all --check 2>&1 | sed -u 's/^/[rust] /'
	env -u MAKEFLAGS -u MFLAGS CARGO_TARGET_DIR=$(TEST_TARGET_DIR) $(CARGO) clippy --locked --all-targets -- -D warnings 2>&1 | sed -u 's/^/[rust] /'
	env -u MAKEFLAGS -u MFLAGS $(TEST_ENV) $(CARGO) test --locked --target $(HOST_TARGET) --no-run 2>&1 | sed -u 's/^/[rust] /'

# The fuzz target's build (its own instrumented build of the crate graph), beside
# the other two: the test build's last minute is one crate and a link on one core.
prepare-fuzz:
	env -u MAKEFLAGS -u MFLAGS FUZZ_PROFILE=$(FUZZ_PROFILE) scripts/fuzz-dns --build 2>&1 | sed -u 's/^/[fuzz] /'

test-deps:
	scripts/install-test-deps

control-plane:
	scripts/dev-cluster up

# What the pod tests run: the node's binaries, built (or found cached) before the
# tests start. The tests start the node themselves and build the operator's image
# from the binary they test (see cargo-test).
node-build:
	scripts/dev-cluster build --node

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The tests build everything statically linked (glibc with crt-static) for the
# host's target: the pod tests then put the very binary under test into the image
# (`scripts/image --binary`), and CI compiles the crate graph once rather than a
# second time in release for the image. With --target, RUSTFLAGS reach only what
# is built for the target, never build scripts or proc-macros.
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
#
# `make test` keeps its Rust build outputs beside the cached Go tools, one
# directory per toolchain: on a machine that has run the tests before, a fresh
# clone compiles only this crate instead of every dependency (about nine minutes
# on two cores). Cargo locks the directory, so clones take turns. A
# CARGO_TARGET_DIR given by the caller wins; the tests' logs and state stay in
# the clone's own target/.
ANYPOST_CACHE ?= $(HOME)/.cache/anypost-operator
TEST_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ANYPOST_CACHE)/cargo/$(shell rustc -vV | sed -n 's/^commit-hash: //p' | cut -c1-12))
TEST_ENV := CARGO_TARGET_DIR=$(TEST_TARGET_DIR) RUSTFLAGS="-C target-feature=+crt-static"
#
# Four tests at a time: the two chaos runs (tests/e2e/chaos.rs, minutes each)
# start first and take turns, one running while the other holds a test thread
# waiting; two threads are left for every other test.
#
# The request-path test's random mutations run for 10 s here rather than its
# default 30: the coverage-guided fuzzer runs after the tests (make fuzz).
cargo-test:
	$(TEST_ENV) ANYPOST_FUZZ_SECONDS=10 $(CARGO) test --locked --target $(HOST_TARGET) -- --test-threads 4

# The DNS server's request-path fuzz target (fuzz/), for a bounded time after the
# tests, from the corpus checked in under fuzz/corpus and fuzz/seeds. A crash
# fails the run and leaves its input in fuzz/artifacts/. scripts/fuzz-dns says more.
FUZZ_SECONDS ?= 60
FUZZ_PROFILE ?= dev
fuzz:
	FUZZ_PROFILE=$(FUZZ_PROFILE) scripts/fuzz-dns $(FUZZ_SECONDS)

crds:
	$(CARGO) run --quiet --locked -- crd > $(CRD_FILE).tmp
	mv $(CRD_FILE).tmp $(CRD_FILE)
	cp $(CRD_FILE) charts/anypost-operator/crds/

demo:
	DEMO_MODE=$(MODE) scripts/demo up

demo-down:
	scripts/demo down

## The operator's image, built offline from this repository and imported into the
## local node (scripts/dev-cluster up --node); prints its reference.
image:
	@scripts/image

bench:
	@if [[ -x scripts/bench ]]; then scripts/bench; \
	else echo "make bench: no benchmarks yet (scripts/bench is coming)"; fi

cluster-up:
	scripts/dev-cluster up

cluster-down:
	scripts/dev-cluster down
