# assisted-bootloader: build, test and boot entry points.
# Targets owned by a folder live in its .mk file (ignition/, image/).
SHELL := /bin/bash
ROOT := $(abspath .)
TOOLS := $(ROOT)/.tools
BUILD := $(ROOT)/build
DENO_VERSION := 2.9.6
DENO_PLATFORM := $(if $(filter aarch64 arm64,$(shell uname -m)),linux-arm64-glibc,linux-x64-glibc)
# Target of `make initrd`, `make run-vm` and the disk image: x86_64 or aarch64 (aliases amd64,
# arm64); default: this host. Another architecture than the host's is cross-assembled.
HOST_ARCH := $(patsubst arm64,aarch64,$(shell uname -m))
ARCH ?= $(HOST_ARCH)
override ARCH := $(patsubst arm64,aarch64,$(patsubst amd64,x86_64,$(ARCH)))
$(if $(filter x86_64 aarch64,$(ARCH)),,$(error ARCH must be x86_64 or aarch64 (arm64), not $(ARCH)))
# Deno from PATH when present, else the copy `make setup` installs under .tools/.
DENO := $(shell command -v deno 2>/dev/null || echo $(TOOLS)/bin/deno)
export PATH := $(TOOLS)/bin:$(PATH)
export DENO_NO_UPDATE_CHECK := 1

.DEFAULT_GOAL := image
.PHONY: setup dev test test-fast check lint fmt fmt-check bundle compile bench

## setup: install Deno $(DENO_VERSION) from the npm registry into .tools/ (when not on PATH)
setup: $(DENO)

$(TOOLS)/bin/deno:
	@command -v npm >/dev/null || { echo "make setup: npm is missing (Debian package: npm)" >&2; exit 1; }
	mkdir -p $(TOOLS)/bin
	cd $(TOOLS) && DENO_TLS_CA_STORE=system npm install --silent --no-save --no-package-lock \
	  --no-audit --no-fund --prefix $(TOOLS) deno@$(DENO_VERSION)
	ln -sf ../node_modules/@deno/$(DENO_PLATFORM)/deno $(TOOLS)/bin/deno
	$(TOOLS)/bin/deno --version | head -n 1

## dev: the bootloader against the mock InfraEnv
dev: setup
	$(DENO) task dev

## test: every test suite (unit, integration, VM)
test: setup
	$(DENO) task test

## test-fast: unit and integration tests only (no root, no QEMU)
test-fast: setup
	$(DENO) task test:fast

check: setup
	$(DENO) task check
lint: setup
	$(DENO) lint
fmt: setup
	$(DENO) fmt
fmt-check: setup
	$(DENO) fmt --check

## bundle: one JavaScript file for `deno run` (same code as the compiled binary)
bundle: setup
	DENO_TLS_CA_STORE=system $(DENO) task bundle

## compile: the single-binary bootloader (set DENORT_BIN to use a local denort)
compile: setup
	$(DENO) task compile

bench: setup
	$(DENO) task bench

-include ignition/ignition.mk
-include image/image.mk
-include image/initrd.mk
-include image/vm.mk
-include image/rootfs.mk
