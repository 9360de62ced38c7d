# `make run-vm`: boot the bootloader initramfs (or IMAGE=disk.raw) in QEMU against the
# mock InfraEnv on 127.0.0.1, serial console on this terminal (Ctrl-A X quits QEMU).
# ARCH=aarch64: qemu-system-aarch64 -M virt under TCG, the arm64 initramfs and kernels.
MARKER_INITRD := $(VM_DIR)/marker.initrd
RUN_VM_ARGS ?=
QEMU_TOOL := $(if $(filter aarch64,$(ARCH)),qemu-system-aarch64:qemu-system-arm,qemu-system-x86_64:qemu-system-x86)

.PHONY: run-vm marker-initrd
marker-initrd: $(MARKER_INITRD)

$(MARKER_INITRD): $(ROOT)/image/vm/build_marker_initrd.sh $(ROOT)/image/vm/marker/init $(if $(MARKER_BUSYBOX),$(SYSROOT_STAMP))
	$(ROOT)/image/vm/build_marker_initrd.sh $@ $(MARKER_BUSYBOX)

## run-vm: boot the bootloader in QEMU against the mock InfraEnv (IMAGE=disk.raw boots a disk image)
run-vm: $(VM_KERNEL) $(VM_SERVED_KERNEL) $(MARKER_INITRD) $(if $(IMAGE),,$(INITRD)) | setup
	@$(ROOT)/image/initrd/require_tools.sh $(QEMU_TOOL) nc:netcat-openbsd timeout:coreutils
	$(DENO) run -A $(ROOT)/image/vm/run_vm.ts --arch $(ARCH) --kernel $(VM_KERNEL) \
	  --served-kernel $(VM_SERVED_KERNEL) --marker-initrd $(MARKER_INITRD) \
	  $(if $(IMAGE),--image $(IMAGE) $(if $(wildcard $(BOOTLOADER_BIN)),--bootloader $(BOOTLOADER_BIN)),--initrd $(INITRD)) \
	  --accel-cache $(VM_DIR)/accel.json $(RUN_VM_ARGS)
