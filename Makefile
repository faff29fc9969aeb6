# Outrigger — the two commands are `make run` and `make test`.
SWIFT ?= swift
BUILD_FLAGS ?=
# Release builds drop exclusivity checks in every module, dependencies included (~3 % of a relay's CPU), and link the
# Swift runtime and Foundation in: one binary that needs nothing beside it but glibc, libstdc++ and zlib, and keeps
# ~5 MiB fewer pages resident than with the toolchain's shared libraries (benchmarks/README.md). Every function built
# here gets a section of its own, so that the link can lay out the ones a sidecar runs together (Package.swift,
# scripts/order-symbols.py). A .build/release made before these flags keeps its objects: the compiler skips code
# generation when a module's IR is unchanged; `find .build/release/ -name '*.swift.o' -delete` makes it redo them.
RELEASE_FLAGS ?= -c release -Xswiftc -enforce-exclusivity=unchecked --static-swift-stdlib \
	-Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections

.PHONY: run test build release bench bench-quick bench-control soak microbench fuzz clean

## make run: build and start the demo (a sidecar in front of two echo upstreams).
run: build
	.build/debug/outrigger demo

## make test: install test clients if missing, then run every test.
# At most 4 tests at once (2 per core here): the end-to-end tests start proxies, Python peers, Prometheus and
# Chromium, and with every test at once the run queue reached ~90 threads for half a minute, long enough to starve
# the tests that wait on a proxy's timers.
TEST_PARALLELISM ?= 4
# A run still going after TEST_TIME_LIMIT seconds is stopped, naming the tests still running (scripts/run-tests.sh).

test:
	scripts/install-deps.sh
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=$(TEST_PARALLELISM) scripts/run-tests.sh $(SWIFT) test --skip-build $(BUILD_FLAGS)

build:
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(SWIFT) build $(RELEASE_FLAGS) $(BUILD_FLAGS)

## make bench: Outrigger vs direct vs HAProxy vs nginx, HTTP/1.1 and h2c, max throughput and latency at
## fixed rates, 3 interleaved rounds (~25 minutes). Writes benchmarks/results/<time>.{json,md,svg}.
bench: release
	scripts/install-deps.sh --bench
	scripts/bench.py

## make bench-quick: the same comparison, one short round (under 2 minutes), for day-to-day use.
bench-quick: release
	scripts/install-deps.sh --bench
	scripts/bench.py --quick

## make bench-control: outrigger control's convergence (mesh change to every sidecar's ACK) at 100, 1,000 and
## 5,000 simulated sidecars, its CPU per change and memory. Writes benchmarks/results/control-<time>.{json,md}.
## Replicas sharing etcd: scripts/control_bench.py --replicas 2 [--sidecars 100,1000] [--rollout]; leader failover: --failover 3.
bench-control: release
	scripts/control_bench.py

## make soak: the connection-level defences measured (~14 minutes): idle connections held at maxConnections
## with the admin answering, memory per slow reader, rapid-reset requests reaching the upstream per 1,000
## resets, and 10 minutes at half the maximum rate with resident memory sampled. Writes
## benchmarks/results/soak-<time>.{json,md}.
soak: release
	scripts/install-deps.sh --bench
	scripts/soak.py

## make microbench: microbenchmarks (route matching, config decode, headers, allocations per request); separate package in benchmarks/micro.
microbench:
	cd benchmarks/micro && $(SWIFT) package --disable-sandbox benchmark --no-progress

## make fuzz: libFuzzer on the HTTP/1.1 request and response parsers against NIO's decoders, on the HPACK decoder against NIO's, and on the HTTP/2 framing as a server and a client (FUZZ_SECONDS each, default 300;
## separate package in fuzz/, built with -sanitize=fuzzer). A find fails the run and is kept as fuzz/crash-<hash>.
fuzz:
	scripts/fuzz.sh

clean:
	rm -rf .build fuzz/.build
