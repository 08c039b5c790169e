# The commands the README promises. Everything goes through CMake presets.
PRESET ?= release
BUILD  := build/$(PRESET)
TROUPE := $(BUILD)/bin/troupe

.PHONY: all bootstrap configure build run test format clean

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

format: bootstrap
	@tools/format.sh --fix

clean:
	rm -rf build
