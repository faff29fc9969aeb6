# Outrigger — the two commands are `make run` and `make test`.
SWIFT ?= swift
BUILD_FLAGS ?=
# Release builds drop exclusivity checks in every module, dependencies included (~3 % of a relay's CPU).
RELEASE_FLAGS ?= -c release -Xswiftc -enforce-exclusivity=unchecked

.PHONY: run test build release bench clean

## make run: build and start the demo (a sidecar in front of two echo upstreams).
run: build
	.build/debug/outrigger demo

## make test: install test clients if missing, then run every test.
test:
	scripts/install-deps.sh
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)

build:
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(SWIFT) build $(RELEASE_FLAGS) $(BUILD_FLAGS)

## make bench: Outrigger vs direct vs HAProxy, HTTP/1.1 (wrk) and h2c (h2load), one event loop each.
bench:
	scripts/install-deps.sh --bench
	$(SWIFT) build $(RELEASE_FLAGS) $(BUILD_FLAGS)
	scripts/bench.sh

clean:
	rm -rf .build
