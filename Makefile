# The appliance: two commands on a fresh machine.
#   make run   - build and start the appliance on its embedded default configuration
#   make test  - the whole test suite (unit, property, loom, runtime, end-to-end)
# Everything else (bench, lint, fuzz, load targets) is listed by `make help`.

SHELL := /bin/bash
CARGO ?= cargo
DEB_PACKAGES := libhwloc-dev libudev-dev pkg-config
# Tools the tests use (prometheus and promtool check the expositions and
# scrape the aggregate's series; redis-server is the real upstream of the
# send/expect health check test; headless Chromium loads the admin page,
# whose browser check is skipped without it).
TEST_PACKAGES := prometheus redis-server ethtool iproute2 chromium-headless-shell strace
RELEASE_BIN := target/release/appliance
LOOM_TARGET := target/loom
ASAN_TARGET := target/asan
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')

.PHONY: help deps build run check test test-deps test-unit test-loom test-asan lint fmt bench bench-mesh bench-echo \
	bench-netstack bench-aggregate doc clean fuzz load-forward load-aggregate compare isolation steering bench-xdp \
	page-cost syscalls per-request

help:
	@echo "make run     build and start the appliance on config/appliance.toml (echo :7000, forward :8080, statsd :8125, admin :9090)"
	@echo "make check   validate config/appliance.toml (or CONFIG=FILE) without starting"
	@echo "make test    run every test (unit, proptest, loom, runtime, end-to-end, AddressSanitizer)"
	@echo "make bench   runtime, netstack and statsd-ingest benchmarks against their peers, printed as ratios"
	@echo "make lint    cargo fmt --check and clippy -D warnings"
	@echo "make fuzz    run each fuzz target FUZZ_SECONDS (default 30) s"
	@echo "make deps    install the Debian packages the build needs (only those missing)"
	@echo "make load-forward    appliance echo (or UPSTREAM=nginx) behind appliance forward, driven by appliance loadgen"
	@echo "make load-aggregate  appliance aggregate driven by loadgen statsd, flushed totals checked exactly"
	@echo "make compare         forward vs direct/HAProxy/nginx stream and aggregate vs etsy statsd, in one run;"
	@echo "                     ratios, target/compare/report.md and latency.svg (COMPARE_QUICK=1: a short run)"
	@echo "make isolation       forward p99 under an unpaced statsd blast, all shards vs disjoint shard groups"
	@echo "make steering        statsd over veth with RPS on the shards' CPUs: --steering cpu vs hash (root)"
	@echo "make page-cost       the admin status page's size and each shard's CPU per refresh"
	@echo "make syscalls        system calls per new connection and per request: appliance, HAProxy, nginx (strace)"
	@echo "make per-request     CPU, system calls and context switches per request at a fixed rate: appliance and peers"
	@echo "make bench-xdp       statsd over veth, receive work on the receiver's core: AF_XDP vs kernel sockets (root)"

# Installs only what is missing, so it is cheap to call from every target.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a stable Rust toolchain (rustup)"; exit 1; }

build: deps
	$(CARGO) build --release -p appliance

run: build
	$(RELEASE_BIN) topology
	$(RELEASE_BIN) run

CONFIG ?= config/appliance.toml
check: build
	$(RELEASE_BIN) check --config $(CONFIG)

test: deps test-deps test-unit test-loom test-asan

# Best effort: a tool that cannot be installed is reported (its tests say what is missing).
test-deps:
	@for p in $(TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" && continue; \
		echo "installing $$p (test tool)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		{ $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$p; } \
			|| echo "could not install $$p: its checks are skipped"; \
	done
	@python3 -c "import datadog" 2>/dev/null || python3 -m pip install -q datadog 2>/dev/null \
		|| echo "could not install the Datadog Python client: its check is skipped"
	@[ -d target/node/node_modules/hot-shots ] || npm install --silent --prefix target/node hot-shots unix-dgram \
		>/dev/null 2>&1 || echo "could not install hot-shots: its check is skipped"

test-unit:
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

# loom explores every interleaving of the mesh's park/wake protocol; it
# needs its own cfg (and so its own target dir, to keep the normal build).
test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=$(LOOM_TARGET) \
		$(CARGO) test --release -p shard --test loom_mesh

# AddressSanitizer (and LeakSanitizer) over the runtime's and netstack's
# tests, where the unsafe code lives. Stable toolchain: RUSTC_BOOTSTRAP
# unlocks -Z flags; the explicit --target keeps build scripts and proc
# macros uninstrumented; its own target dir keeps the normal build. std is
# not rebuilt, so only our code and what it inlines is checked (and kernel
# writes into user memory are invisible to it: tests/cancel.rs covers those).
test-asan:
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=$(ASAN_TARGET) \
		$(CARGO) test -p shard -p netstack --target $(HOST_TRIPLE) --lib --tests

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

doc: deps
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

bench: deps bench-mesh bench-echo bench-netstack bench-aggregate

bench-mesh:
	$(CARGO) bench -p shard --bench mesh

bench-echo:
	$(CARGO) bench -p shard --bench echo

bench-netstack:
	$(CARGO) bench -p netstack --bench udp
	$(CARGO) bench -p netstack --bench relay

# A statsd line's cost in a shard (parse, key, hash, table) against
# counting newlines in the same datagrams.
bench-aggregate:
	$(CARGO) bench -p appliance --bench ingest


# Fuzz the parsers of outside input (cargo-fuzz over libFuzzer): each target
# in tests/fuzz/fuzz_targets runs FUZZ_SECONDS (default 30), starting from
# the checked-in seeds plus whatever earlier runs kept in tests/fuzz/corpus/.
# cargo-fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them. A crash leaves its input in
# tests/fuzz/artifacts/<target>/ and fails the target.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := proxy packet statsd
FUZZ_DIR := tests/fuzz

fuzz: deps
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) $$t \
			$(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS); \
	done

# Load targets: every process a script starts runs in its own process
# group and is stopped when the script ends, fails or is interrupted.
load-forward: build
	scripts/load-forward.sh

load-aggregate: build
	scripts/load-aggregate.sh

# Shard groups: forward p99 at a fixed rate, alone and under an unpaced
# statsd blast, with both services on every shard and with disjoint groups.
isolation: build
	scripts/isolation.sh

steering: build
	scripts/steering.py

# System calls per new connection and per request: the appliance and both peers.
syscalls: build
	scripts/compare/install-peers.sh
	scripts/compare/syscalls.py

# Per request at a fixed rate, counted: the proxy's CPU, system calls and
# context switches, appliance against both peers (PER_REQUEST_INSTRUCTIONS=1:
# also user-space instructions under callgrind).
per-request: build
	scripts/compare/install-peers.sh
	scripts/compare/per_request.py

# The admin status page's size and what refreshing it costs each shard.
page-cost: build
	scripts/admin_page_cost.py

bench-xdp: build
	scripts/xdp.py

compare: build
	$(CARGO) build --release -p netstack --example udp_count
	scripts/compare/install-peers.sh
	scripts/compare/compare.py

clean:
	$(CARGO) clean
