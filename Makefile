# The commands the README promises. Everything goes through CMake presets.
PRESET ?= release
BUILD  := build/$(PRESET)
TROUPE := $(BUILD)/bin/troupe

.PHONY: all bootstrap configure build run test chaos format clean

all: build

bootstrap:
	@tools/bootstrap.sh

configure: bootstrap
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build --preset $(PRESET)

# The main job: run examples/hello.yaml on an embedded node (one node,
# RocksDB in ./data), printing its outputs.
run: build
	$(TROUPE) run examples/hello.yaml

test: build
	@ctest --preset $(PRESET)

# Every example scenario of examples/chaos/ with each seed of SEEDS; stops at
# the first that breaks an invariant (its report says which, and keeps the
# logs).
SEEDS ?= 1 2 3
chaos: build
	@set -e; for f in examples/chaos/*.yaml; do \
	  grep -q '^faults:' $$f || continue; \
	  for seed in $(SEEDS); do \
	    echo "== $$f, seed $$seed"; \
	    $(TROUPE) chaos $$f --seed $$seed; \
	  done; \
	done

format: bootstrap
	@tools/format.sh --fix

clean:
	rm -rf build
