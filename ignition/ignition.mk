# make generate-ignition: the Ignition config of the disk image (sources: ignition/).
# Included by the top-level Makefile. Parameters (make variables or environment):
#   BOOTLOADER_URL      http(s) URL of the assisted-bootloader binary           (required)
#   BOOTLOADER_SHA256   its sha256, 64 hex digits                               (required)
#   API_URL             Assisted Service API base (default https://api.openshift.com/api)
#   INFRA_ENV_ID        InfraEnv id                              (this or IPXE_URL)
#   IPXE_URL            direct iPXE script URL                   (this or INFRA_ENV_ID)
#   TOKEN_FILE          file with a token          } at most one; embedded as a
#   REFRESH_TOKEN_FILE  file with a refresh token  } 0600 file on the target
#   SSO_URL             SSO token endpoint (with REFRESH_TOKEN_FILE)
#   CA_BUNDLE           PEM CA bundle to trust
#   SSH_KEYS            authorized_keys file for the `core` user
#   PASSWORD_HASH_FILE  file with a crypt(3) hash for `core` (or PASSWORD_HASH, with $ written $$)
#   EXTRA_KARGS         kernel arguments appended to the discovery kernel ("a=1 b=2")
#   NM_CONNECTIONS      directory of NetworkManager keyfiles (*.nmconnection), written 0600
#   TARGET_HTTP_PROXY, TARGET_HTTPS_PROXY, TARGET_NO_PROXY
#                       HTTP_PROXY, HTTPS_PROXY, NO_PROXY of the bootloader's unit (TARGET_: the
#                       build machine's own HTTP_PROXY never reaches the image)
#   IGNITION_OUT        output (default build/assisted-bootloader.ign, mode 0600)
# What the bootloader would refuse (INFRA_ENV_ID=my-env, say) is refused here: see docs/deploy.md.
IGNITION_OUT ?= $(BUILD)/assisted-bootloader.ign
IGNITION_VARS := BOOTLOADER_URL BOOTLOADER_SHA256 API_URL INFRA_ENV_ID IPXE_URL TOKEN_FILE \
  REFRESH_TOKEN_FILE SSO_URL CA_BUNDLE SSH_KEYS PASSWORD_HASH_FILE PASSWORD_HASH EXTRA_KARGS IGNITION_OUT \
  NM_CONNECTIONS TARGET_HTTP_PROXY TARGET_HTTPS_PROXY TARGET_NO_PROXY
# Each variable is passed single-quoted, so values reach the generator unmangled.
ignition_env = $(foreach v,$(IGNITION_VARS),$(v)='$(subst ','\'',$($(v)))')

.PHONY: generate-ignition
## generate-ignition: the Ignition config (see ignition/ignition.mk for the parameters)
generate-ignition: setup
	@env $(ignition_env) $(DENO) run --allow-read --allow-write --allow-env \
	  $(ROOT)/ignition/generate_ignition.ts
