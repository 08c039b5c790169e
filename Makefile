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

# The main job: until the engine lands, validate every example workflow.
run: build
	$(TROUPE) validate examples/*.yaml examples/*.json

test: build
	@ctest --preset $(PRESET)

format: bootstrap
	@tools/format.sh --fix

clean:
	rm -rf build
