# `make initrd`: the initramfs that boots straight into the bootloader, and the Debian
# kernel the VMs boot (build/vm/vmlinuz + NIC modules). Included by the top Makefile.
# INITRD_COMPRESS=zstd|gzip|none (zstd: smallest and fast to unpack).
INITRD_COMPRESS ?= zstd
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

$(INITRD): $(INITRD_INPUTS) $(INITRD_SCRIPTS) $(VM_DIR)/modules/load-order
	COMPRESS=$(INITRD_COMPRESS) $(ROOT)/image/initrd/build_initrd.sh $@ $(VM_DIR)/modules $(INITRD_BOOTLOADER_ARGS)
