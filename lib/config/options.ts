/**
 * The bootloader's option table: every option, its kind and its help line,
 * from which `--help`, docs/options.md (`deno task docs`), the flags, the
 * `ASSISTED_*` variables, the config file keys and the `assisted.*` kernel
 * parameters all come.
 *
 * @module
 */

import { DEFAULT_BUSY_TIMEOUT_MS } from "../http/busy.ts";
import { helpRows, type OptionSpec } from "./option_table.ts";

export type { OptionSpec };

/** Version printed by `--version`. */
export const VERSION = "0.1.0";

/** Default API base (the SaaS). */
export const DEFAULT_API_URL = "https://api.openshift.com/api";
/** Default Red Hat SSO token endpoint. */
export const DEFAULT_SSO_URL =
  "https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token";
/** Default config file. */
export const DEFAULT_CONFIG_FILE = "/etc/assisted-bootloader/config.env";
/** Default work directory. */
export const DEFAULT_WORK_DIR = "/var/lib/assisted-bootloader";

/** Every option; the env name is `ASSISTED_` + upper snake case, the cmdline key `assisted.` + snake case. */
export const OPTIONS = {
  "api-url": {
    kind: "string",
    arg: "URL",
    help: `assisted-service API base (default ${DEFAULT_API_URL})`,
  },
  "infra-env-id": { kind: "string", arg: "ID", help: "InfraEnv id" },
  "infra-env-id-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding the InfraEnv id",
  },
  token: {
    kind: "string",
    arg: "TOKEN",
    help: "API access token (Bearer); prefer --token-file",
  },
  "token-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding the API access token",
  },
  "refresh-token-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding an offline (refresh) token for SSO",
  },
  "sso-url": {
    kind: "string",
    arg: "URL",
    help: "SSO token endpoint (default: Red Hat SSO)",
  },
  "ipxe-script-type": {
    kind: "string",
    arg: "TYPE",
    help:
      "discovery-image-always or boot-order-control (asks the service for the MAC redirect)",
  },
  "ipxe-url": {
    kind: "string",
    arg: "URL",
    help:
      "any iPXE script (http, https, file), e.g. a hub's bootArtifacts.ipxeScript",
  },
  config: {
    kind: "string",
    arg: "PATH",
    help: `KEY=VALUE config file (default ${DEFAULT_CONFIG_FILE})`,
  },
  mac: {
    kind: "string",
    arg: "MAC",
    help:
      "boot NIC MAC for ${net0/mac} (default: the default route's interface)",
  },
  set: {
    kind: "list",
    arg: "NAME=VALUE",
    help: "preset an iPXE setting (repeatable)",
  },
  "no-host-settings": {
    kind: "boolean",
    help: "do not read MAC, IP, hostname… from this host",
  },
  "append-karg": {
    kind: "list",
    arg: "ARG",
    help: "append to the kernel command line (repeatable)",
  },
  "delete-karg": {
    kind: "list",
    arg: "ARG",
    help: "delete KEY or KEY=VALUE from the command line (repeatable)",
  },
  console: {
    kind: "string",
    arg: "MODE",
    help:
      "keep (default): the script's console= kargs; host: this kernel's console= replace them; host-persistent: also inside coreos.inst.persistent-kargs",
  },
  "print-plan": {
    kind: "boolean",
    help: "run the scripts, download nothing, print the plan as JSON",
  },
  "no-kexec": {
    kind: "boolean",
    help:
      "download, verify and assemble, load nothing, print the result as JSON",
  },
  "load-only": {
    kind: "boolean",
    help: "load the kernel and exit 0 (run `systemctl kexec` later)",
  },
  "force-reboot": {
    kind: "boolean",
    help: "after loading, sync and reboot(KEXEC) directly",
  },
  "local-boot": {
    kind: "string",
    arg: "ACTION",
    help:
      "when the host is to boot its own disk: kexec (its default boot entry; the default), exit, reboot",
  },
  "no-cache": {
    kind: "boolean",
    help:
      "neither reuse nor keep verified artifacts across runs (and free what earlier runs kept)",
  },
  "no-preflight": {
    kind: "boolean",
    help:
      "skip the memory check before downloading (HEAD of each artifact and the live rootfs against /proc/meminfo)",
  },
  "work-dir": {
    kind: "string",
    arg: "DIR",
    help: `where artifacts are written (default ${DEFAULT_WORK_DIR})`,
  },
  "kernel-sha256": {
    kind: "string",
    arg: "HEX",
    help: "pin the kernel's sha256",
  },
  "initrd-sha256": {
    kind: "string",
    arg: "HEX",
    help: "pin the assembled initrd's sha256",
  },
  "artifact-sha256": {
    kind: "list",
    arg: "URL=HEX",
    help: "pin one image's sha256 (repeatable)",
  },
  retries: {
    kind: "string",
    arg: "N",
    help:
      "retries per request on network errors and 5xx other than busy answers (default 5)",
  },
  "busy-timeout": {
    kind: "string",
    arg: "SECONDS",
    help:
      `wait up to SECONDS in all for busy servers (503, 429, refused/reset connections), retrying with backoff, before they count against --retries (default ${
        DEFAULT_BUSY_TIMEOUT_MS / 1000
      }; 0: never wait)`,
  },
  timeout: {
    kind: "string",
    arg: "SECONDS",
    help: "connect/read timeout per request (default 30)",
  },
  "min-speed": {
    kind: "string",
    arg: "BYTES",
    help:
      "cut (and retry) a download, a script or an SSO answer slower than BYTES/s over --min-speed-time (default 1024; 0: never)",
  },
  "min-speed-time": {
    kind: "string",
    arg: "SECONDS",
    help: "the window over which --min-speed is measured (default 30)",
  },
  "ca-cert": {
    kind: "list",
    arg: "PATH",
    help: "extra trusted CA certificate, PEM (repeatable)",
  },
  "ca-cert-url": {
    kind: "string",
    arg: "URL",
    help:
      "fetch a CA certificate to trust (http/https; needs --ca-cert-sha256)",
  },
  "ca-cert-sha256": {
    kind: "string",
    arg: "HEX",
    help: "the sha256 the --ca-cert-url file must have",
  },
  insecure: {
    kind: "boolean",
    help: "DANGEROUS: do not verify TLS certificates",
  },
  progress: {
    kind: "string",
    arg: "MODE",
    help: "auto, tty (a live bar), lines or none (default auto)",
  },
  verbose: { kind: "boolean", short: "v", help: "debug logging" },
  help: { kind: "boolean", short: "h", help: "show this help" },
  version: { kind: "boolean", help: "show the version" },
} as const satisfies Record<string, OptionSpec>;

/** An option name. */
export type OptionName = keyof typeof OPTIONS;

/** Options that do something instead of configuring a boot: flags only. */
export const FLAG_ONLY: readonly OptionName[] = ["help", "version"];

/** The `--help` text. */
export function helpText(): string {
  const rows = helpRows(OPTIONS);
  return `assisted-bootloader ${VERSION}: boot this machine into an Assisted Installer InfraEnv over the network.

It fetches the InfraEnv's iPXE script, runs it like iPXE, downloads and verifies the kernel and
initrd(s), and kexecs into them.

Usage: assisted-bootloader [options]

Options:
${rows.join("\n")}

Every option can also be given as an environment variable ASSISTED_<NAME> (e.g. ASSISTED_INFRA_ENV_ID),
as KEY=VALUE in the config file, or on the kernel command line as assisted.<name> with - written _
(e.g. assisted.infra_env_id=…). Precedence: flag > environment > config file > kernel command line.

Examples:
  # SaaS: offline token from console.redhat.com/openshift/token
  assisted-bootloader --infra-env-id 6f2a… --refresh-token-file /etc/assisted-bootloader/refresh-token
  # Hub cluster: the InfraEnv's status.bootArtifacts.ipxeScript (carries its api_key)
  assisted-bootloader --ipxe-url 'https://assisted.apps.hub.example.com/api/assisted-install/v2/infra-envs/…'
  # See what would boot, without downloading anything
  assisted-bootloader --ipxe-url http://boot.example.com/boot.ipxe --print-plan
  # Download and verify, but do not kexec
  assisted-bootloader --ipxe-url file:///srv/boot.ipxe --no-kexec --work-dir /tmp/ab`;
}
