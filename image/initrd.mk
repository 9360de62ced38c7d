# `make initrd`: the initramfs that boots straight into the bootloader, and the Debian
# kernel the VMs boot (build/vm/vmlinuz + NIC modules). Included by the top Makefile.
# INITRD_COMPRESS=zstd|gzip|none (zstd: smallest and fast to unpack).
# INITRD_NICS=virtio|all: virtio_net + e1000 (VMs), or every Ethernet driver of the Debian
# kernel, loaded by device modalias (real hardware; about 10 MB more).
# CA_BUNDLE=ca.pem: a PEM bundle the bootloader in the initramfs trusts (its system store).
INITRD_COMPRESS ?= zstd
INITRD_NICS ?= virtio
VM_DIR := $(BUILD)/vm
INITRD_DIR := $(BUILD)/initrd
INITRD := $(INITRD_DIR)/assisted-bootloader.initrd
VM_KERNEL := $(VM_DIR)/vmlinuz
BOOTLOADER_BIN := $(BUILD)/assisted-bootloader
BOOTLOADER_JS := $(BUILD)/assisted-bootloader.js
BOOTLOADER_SOURCES := $(ROOT)/main.ts $(ROOT)/deno.json $(shell find $(ROOT)/lib -name '*.ts' 2>/dev/null)
INITRD_SCRIPTS := $(addprefix $(ROOT)/image/initrd/,build_initrd.sh init init-bootloader udhcpc.script require_tools.sh)

# The compiled binary when it exists and is newer than every source, else Deno + the bundle.
BOOTLOADER_BIN_FRESH := $(if $(wildcard $(BOOTLOADER_BIN)),$(if $(shell find $(BOOTLOADER_SOURCES) -newer $(BOOTLOADER_BIN) 2>/dev/null),,yes))
ifeq ($(BOOTLOADER_BIN_FRESH),yes)
INITRD_INPUTS := $(BOOTLOADER_BIN)
INITRD_BOOTLOADER_ARGS := $(BOOTLOADER_BIN)
else
# $(DENO) may not exist yet (fresh clone): the setup rule makes it; build_initrd.sh resolves links.
INITRD_INPUTS := $(BOOTLOADER_JS) $(DENO)
INITRD_BOOTLOADER_ARGS := $(DENO) $(BOOTLOADER_JS)
endif

.PHONY: initrd vm-kernel initrd-force-check
## initrd: build/initrd/assisted-bootloader.initrd and the VM kernel build/vm/vmlinuz
initrd: $(INITRD) $(VM_KERNEL)
vm-kernel: $(VM_KERNEL)

# fetch_kernel.sh always runs (cheap) but rewrites its outputs only when the Debian
# package changes, so dependants rebuild only then.
$(VM_DIR)/kernel.stamp: initrd-force-check
	@$(ROOT)/image/initrd/fetch_kernel.sh $(VM_DIR) $(BUILD)/cache
$(VM_KERNEL) $(VM_DIR)/modules/load-order: $(VM_DIR)/kernel.stamp
	@test -f $@

$(BOOTLOADER_JS): $(BOOTLOADER_SOURCES) | setup
	DENO_TLS_CA_STORE=system $(DENO) task bundle

# The options file changes only when the options do, so changing them rebuilds the initrd.
INITRD_OPTIONS := compress=$(INITRD_COMPRESS) nics=$(INITRD_NICS)
INITRD_OPTIONS_FILE := $(INITRD_DIR)/options
# A changed CA bundle changes the options too.
INITRD_OPTIONS += $(if $(CA_BUNDLE),ca=$(shell sha256sum < '$(CA_BUNDLE)' 2>/dev/null | cut -c1-16))
$(shell mkdir -p $(INITRD_DIR) && [ "$$(cat $(INITRD_OPTIONS_FILE) 2>/dev/null)" = "$(INITRD_OPTIONS)" ] || echo "$(INITRD_OPTIONS)" > $(INITRD_OPTIONS_FILE))

$(INITRD): $(INITRD_INPUTS) $(INITRD_SCRIPTS) $(VM_DIR)/modules/load-order $(INITRD_OPTIONS_FILE)
	COMPRESS=$(INITRD_COMPRESS) NICS=$(INITRD_NICS) CA_BUNDLE='$(CA_BUNDLE)' $(ROOT)/image/initrd/build_initrd.sh $@ $(VM_DIR)/modules $(INITRD_BOOTLOADER_ARGS)
