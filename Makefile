# assisted-bootloader: build, test and boot entry points.
# Targets owned by a folder live in its .mk file (ignition/, image/); `make help` lists them all
# from their `##` comments.
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
# The Debian packages `make test` needs (and .ci/run installs): one list, see its header.
PACKAGES_FILE ?= $(ROOT)/packages.txt

.DEFAULT_GOAL := image
.PHONY: help setup packages dev test test-fast check lint fmt fmt-check docs bundle compile bench

## help: this list of targets (from the `##` comments of the Makefile and its .mk files)
help:
	@echo "usage: make [TARGET] [VARIABLE=value]; each .mk file documents its variables at the top"
	@sed -n 's/^## \([^:]*\): \(.*\)/\1\t\2/p' $(MAKEFILE_LIST) | awk -F'\t' '{ printf "  %-19s %s\n", $$1, $$2 }'

## setup: install Deno (DENO_VERSION in the Makefile) from the npm registry into .tools/ unless on PATH
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

## packages: install the Debian packages of packages.txt (root with apt), else name the missing ones
packages:
	@$(ROOT)/image/initrd/require_tools.sh --packages $(PACKAGES_FILE)

## test: every test suite (unit, integration, VM), after installing what they need (packages, Deno)
test: packages setup
	$(DENO) task test

## test-fast: unit and integration tests only (no root, no QEMU)
test-fast: packages setup
	$(DENO) task test:fast

## check: type-check every module (deno task check)
check: setup
	$(DENO) task check
## lint: deno lint
lint: setup
	$(DENO) lint
## fmt: format the sources (deno fmt)
fmt: setup
	$(DENO) fmt
## fmt-check: fail when a file is not formatted (deno fmt --check)
fmt-check: setup
	$(DENO) fmt --check

## docs: regenerate docs/options.md and docs/exit_codes.md from lib/config.ts and lib/errors.ts
docs: setup
	$(DENO) task docs

## bundle: one JavaScript file for `deno run` (same code as the compiled binary)
bundle: setup
	DENO_TLS_CA_STORE=system $(DENO) task bundle

## compile: the single-binary bootloader (set DENORT_BIN to use a local denort)
compile: setup
	$(DENO) task compile

## bench: download throughput and memory against curl (deno task bench; a benchmark, not a test)
bench: setup
	$(DENO) task bench

-include ignition/ignition.mk
-include image/image.mk
-include image/initrd.mk
-include image/vm.mk
-include image/rootfs.mk
