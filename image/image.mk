# make / make image: the assisted-bootloader Fedora CoreOS disk image (sources: image/).
# Included by the top-level Makefile. Parameters (make variables or environment):
#   STREAM            FCOS stream: stable (default), testing, next
#   STREAM_URL        stream metadata URL or local file (default: the official one for STREAM)
#   ARCH              x86_64 or aarch64 (arm64) (default: this host)
#   DISK_SIZE         final disk size, sparse (default 120G)
#   CONSOLE_KARGS     serial console kargs (default console=tty0 console=ttyS0,115200n8); the
#                     discovery kernel gets them too (ASSISTED_CONSOLE=host, docs/consoles.md)
#   FEDORA_KEYS       OpenPGP keys file for the signature (default: fetched from FEDORA_KEYS_URL)
#   VERIFY_SIGNATURE  1 (default); 0 skips the GPG check, with a loud warning
#   IMAGE_CACHE       downloads and intermediates (default build/cache)
#   IMAGE_OUT         the image (default build/assisted-bootloader.raw, plus .xz and .sha256 files)
#   COMPRESS_LEVEL    xz preset of the compressed copy (default 6)
# The embedded config is IGNITION_OUT (see ignition/ignition.mk); when BOOTLOADER_URL is
# given, `make` runs generate-ignition first.
STREAM ?= stable
DISK_SIZE ?= 120G
VERIFY_SIGNATURE ?= 1
IMAGE_CACHE ?= $(BUILD)/cache
IMAGE_OUT ?= $(BUILD)/assisted-bootloader.raw
IGNITION_OUT ?= $(BUILD)/assisted-bootloader.ign
IMAGE_VARS := STREAM STREAM_URL ARCH DISK_SIZE CONSOLE_KARGS FEDORA_KEYS FEDORA_KEYS_URL \
  VERIFY_SIGNATURE IMAGE_CACHE IMAGE_OUT COMPRESS_LEVEL IGNITION_OUT
image_env = $(foreach v,$(IMAGE_VARS),$(v)='$(subst ','\'',$($(v)))')

.PHONY: image
## image (default): the disk image build/assisted-bootloader.raw(.xz) with the embedded Ignition config
image: setup $(if $(BOOTLOADER_URL),generate-ignition)
	@env $(image_env) $(DENO) run --allow-read --allow-write --allow-env --allow-net --allow-run \
	  $(ROOT)/image/build_image.ts
