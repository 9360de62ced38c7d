# `make initrd`: the initramfs that boots straight into the bootloader, and the Debian
# kernel the VMs boot (build/vm/vmlinuz + NIC modules). Included by the top Makefile.
# INITRD_COMPRESS=zstd|gzip|none (zstd: smallest and fast to unpack).
# INITRD_NICS=virtio|all: virtio_net + e1000 (VMs), or every Ethernet driver of the Debian
# kernel, loaded by device modalias (real hardware; about 10 MB more).
# ARCH=aarch64 (arm64) puts everything under build/{vm,initrd}/aarch64/: the arm64 Deno from
# npm, busybox and libraries from Debian's arm64 packages (build/cross/aarch64/), Debian's
# arm64 kernel gzip'd like RHCOS's as the kernel the mock serves (vmlinuz.gz), and, since
# Debian's arm64 kernels lack KEXEC_FILE, a kernel built from Debian's linux-source with it as
# the one the VM boots (boot-Image).
# (The arm64 initramfs carries no kexec-tools fallback: Debian's arm64 kexec-tools pulls in
# the Xen libraries.)
# CA_BUNDLE=ca.pem: a PEM bundle the bootloader in the initramfs trusts (its system store).
INITRD_COMPRESS ?= zstd
INITRD_NICS ?= virtio
DEB_ARCH := $(if $(filter aarch64,$(ARCH)),arm64,amd64)
ARCH_SUBDIR := $(if $(filter x86_64,$(ARCH)),,/$(ARCH))
VM_DIR := $(BUILD)/vm$(ARCH_SUBDIR)
INITRD_DIR := $(BUILD)/initrd$(ARCH_SUBDIR)
INITRD := $(INITRD_DIR)/assisted-bootloader.initrd
# VM_KERNEL: what QEMU boots; VM_SERVED_KERNEL: what the mock InfraEnv serves for kexec.
ifeq ($(ARCH),aarch64)
VM_KERNEL := $(VM_DIR)/boot-Image
VM_SERVED_KERNEL := $(VM_DIR)/vmlinuz.gz
else
VM_KERNEL := $(VM_DIR)/vmlinuz
VM_SERVED_KERNEL := $(VM_KERNEL)
endif
BOOTLOADER_BIN := $(BUILD)/assisted-bootloader
BOOTLOADER_JS := $(BUILD)/assisted-bootloader.js
BOOTLOADER_SOURCES := $(ROOT)/main.ts $(ROOT)/deno.json $(shell find $(ROOT)/lib -name '*.ts' 2>/dev/null)
INITRD_SCRIPTS := $(addprefix $(ROOT)/image/initrd/,build_initrd.sh init init-bootloader net-setup udhcpc.script require_tools.sh)

# The compiled binary when it exists and is newer than every source, else Deno + the bundle.
# Cross-assembled (ARCH is not the host's): the bundle and the target's Deno from npm.
BOOTLOADER_BIN_FRESH := $(if $(wildcard $(BOOTLOADER_BIN)),$(if $(shell find $(BOOTLOADER_SOURCES) -newer $(BOOTLOADER_BIN) 2>/dev/null),,yes))
CROSS := $(if $(filter $(HOST_ARCH),$(ARCH)),,yes)
CROSS_DIR := $(BUILD)/cross/$(ARCH)
SYSROOT_STAMP := $(CROSS_DIR)/sysroot.stamp
NPM_CPU := $(if $(filter aarch64,$(ARCH)),arm64,x64)
CROSS_DENO := $(CROSS_DIR)/deno/node_modules/@deno/linux-$(NPM_CPU)-glibc/deno
ifeq ($(CROSS),yes)
INITRD_INPUTS := $(BOOTLOADER_JS) $(CROSS_DENO) $(SYSROOT_STAMP)
INITRD_BOOTLOADER_ARGS := $(CROSS_DENO) $(BOOTLOADER_JS)
INITRD_ENV := SYSROOT=$(CROSS_DIR)/root
MARKER_BUSYBOX := $(CROSS_DIR)/root/bin/busybox
else ifeq ($(BOOTLOADER_BIN_FRESH),yes)
INITRD_INPUTS := $(BOOTLOADER_BIN)
INITRD_BOOTLOADER_ARGS := $(BOOTLOADER_BIN)
else
# $(DENO) may not exist yet (fresh clone): the setup rule makes it; build_initrd.sh resolves links.
INITRD_INPUTS := $(BOOTLOADER_JS) $(DENO)
INITRD_BOOTLOADER_ARGS := $(DENO) $(BOOTLOADER_JS)
endif

.PHONY: initrd vm-kernel initrd-force-check
## initrd: build/initrd/assisted-bootloader.initrd and the VM kernel build/vm/vmlinuz
initrd: $(INITRD) $(VM_KERNEL) $(VM_SERVED_KERNEL)
vm-kernel: $(VM_KERNEL) $(VM_SERVED_KERNEL)

# fetch_kernel.sh always runs (cheap) but rewrites its outputs only when the Debian
# package changes, so dependants rebuild only then. The same holds for the sysroot and
# the arm64 boot kernel.
$(VM_DIR)/kernel.stamp: initrd-force-check
	@$(ROOT)/image/initrd/fetch_kernel.sh $(VM_DIR) $(BUILD)/cache $(DEB_ARCH)
$(VM_DIR)/vmlinuz $(VM_DIR)/modules/load-order: $(VM_DIR)/kernel.stamp
	@test -f $@
$(SYSROOT_STAMP): initrd-force-check
	@$(ROOT)/image/initrd/fetch_sysroot.sh $(CROSS_DIR) $(BUILD)/cache $(DEB_ARCH)

ifeq ($(ARCH),aarch64)
# RHCOS's arm64 vmlinuz is a gzip'd Image; Debian's is a plain one: serve it gzip'd.
$(VM_SERVED_KERNEL): $(VM_DIR)/vmlinuz
	gzip -6 -n -c $< >$@.tmp && mv $@.tmp $@
$(VM_DIR)/boot-Image.stamp: initrd-force-check
	@$(ROOT)/image/vm/build_kexec_kernel.sh $(VM_KERNEL) $(BUILD)/cache $(ROOT)/image/vm/kexec_kernel_aarch64.config
$(VM_KERNEL): $(VM_DIR)/boot-Image.stamp
	@test -f $@
endif

# The target's Deno, from the same npm package `make setup` takes the host's from (npm
# checks its integrity); --cpu picks the platform package, --ignore-scripts skips the
# wrapper's install script, which would look for the host's.
$(CROSS_DENO):
	@command -v npm >/dev/null || { echo "make initrd: npm is missing (Debian package: npm)" >&2; exit 1; }
	mkdir -p $(CROSS_DIR)/deno
	cd $(CROSS_DIR)/deno && DENO_TLS_CA_STORE=system npm install --silent --no-save --no-package-lock \
	  --no-audit --no-fund --ignore-scripts --os=linux --cpu=$(NPM_CPU) --libc=glibc \
	  --prefix $(CROSS_DIR)/deno deno@$(DENO_VERSION)
	@test -x $@ || { echo "make initrd: npm did not install $@" >&2; exit 1; }

$(BOOTLOADER_JS): $(BOOTLOADER_SOURCES) | setup
	DENO_TLS_CA_STORE=system $(DENO) task bundle

# The options file changes only when the options do, so changing them rebuilds the initrd.
INITRD_OPTIONS := compress=$(INITRD_COMPRESS) nics=$(INITRD_NICS)
INITRD_OPTIONS_FILE := $(INITRD_DIR)/options
# A changed CA bundle changes the options too.
INITRD_OPTIONS += $(if $(CA_BUNDLE),ca=$(shell sha256sum < '$(CA_BUNDLE)' 2>/dev/null | cut -c1-16))
$(shell mkdir -p $(INITRD_DIR) && [ "$$(cat $(INITRD_OPTIONS_FILE) 2>/dev/null)" = "$(INITRD_OPTIONS)" ] || echo "$(INITRD_OPTIONS)" > $(INITRD_OPTIONS_FILE))

$(INITRD): $(INITRD_INPUTS) $(INITRD_SCRIPTS) $(VM_DIR)/modules/load-order $(INITRD_OPTIONS_FILE)
	COMPRESS=$(INITRD_COMPRESS) NICS=$(INITRD_NICS) TARGET_ARCH=$(ARCH) CA_BUNDLE='$(CA_BUNDLE)' $(INITRD_ENV) \
	  $(ROOT)/image/initrd/build_initrd.sh $@ $(VM_DIR)/modules $(INITRD_BOOTLOADER_ARGS)
