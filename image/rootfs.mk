# Chain test (tests/vm/chain_test.ts): Debian + systemd rootfs, Ignition applied by Debian's
# real `ignition`, booted in QEMU. Included by the top-level Makefile.
# Scripts: image/rootfs/*.sh (see their headers). Needs root (debootstrap).
CHAIN_BUILD ?= $(abspath build)/chain
.PHONY: chain-assets chain-image chain-test

## chain-assets: kernel, boot initramfs, Debian+systemd rootfs, marker initrd (cached by checksum)
chain-assets:
	image/rootfs/prepare_chain.sh $(CHAIN_BUILD) $(abspath build)/cache

## chain-image: apply IGNITION_CONFIG (default build/assisted-bootloader.ign) with the real ignition → build/chain/rootfs.ext4
IGNITION_CONFIG ?= build/assisted-bootloader.ign
chain-image: chain-assets
	image/rootfs/apply_ignition.sh $(CHAIN_BUILD)/rootfs.tar.zst $(IGNITION_CONFIG) \
	  $(CHAIN_BUILD)/rootfs.ext4 $(DENO)

## chain-test: the VM chain test alone (Ignition → systemd unit → bootloader → kexec)
chain-test: setup
	$(DENO) test -A tests/vm/chain_test.ts
