/**
 * Configuration: command-line flags, `ASSISTED_*` environment variables, a
 * `KEY=VALUE` config file and `assisted.*` kernel command-line parameters,
 * merged with the precedence flag > env > file > cmdline, then validated into
 * a {@linkcode Config}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BootError, ExitCode } from "./errors.ts";
import { isHeaderToken } from "./http.ts";
import { addSecret, log } from "./log.ts";

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

type Kind = "string" | "boolean" | "list";
/** One row of {@linkcode OPTIONS}: what `--help` and docs/options.md show. */
export interface OptionSpec {
  kind: Kind;
  short?: string;
  help: string;
  arg?: string;
}

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
    help: "neither reuse nor keep verified artifacts across runs",
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
    help: "retries per request on network errors and 5xx (default 5)",
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
      "cut (and retry) a download slower than BYTES/s over --min-speed-time (default 1024; 0: never)",
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

/** How the API is authenticated. */
export type ApiAuth =
  | { kind: "none" }
  | { kind: "token"; token: string }
  | { kind: "refresh"; refreshToken: string; ssoUrl: string };

/** Where the first iPXE script comes from. */
export type ScriptSource =
  | { kind: "ipxe-url"; url: string }
  | {
    kind: "infraenv";
    apiUrl: string;
    infraEnvId: string;
    auth: ApiAuth;
    scriptType?: string;
  };

/** What the bootloader does once it has a plan. */
export type Mode = "print-plan" | "no-kexec" | "kexec";

/** The validated configuration. */
export interface Config {
  /** Source of the first script. */
  source: ScriptSource;
  /** Boot NIC MAC, lower-case colon form, when given. */
  mac?: string;
  /** iPXE settings preset with `--set`. */
  settings: Record<string, string>;
  /** Read MAC/IP/hostname from the host. */
  hostSettings: boolean;
  /** `--append-karg` values. */
  appendKargs: string[];
  /** `--delete-karg` values. */
  deleteKargs: string[];
  /** Plan, no-kexec or kexec. */
  mode: Mode;
  /** Load, then exit. */
  loadOnly: boolean;
  /** Sync and reboot(KEXEC) directly. */
  forceReboot: boolean;
  /** What a local boot does (`--local-boot`). */
  localBoot: "kexec" | "exit" | "reboot";
  /** Work directory. */
  workDir: string;
  /** Do not reuse or keep verified artifacts across runs. */
  noCache: boolean;
  /** Kernel pin (lower-case hex). */
  kernelSha256?: string;
  /** Assembled initrd pin (lower-case hex). */
  initrdSha256?: string;
  /** Per-image pins: URL -> lower-case hex. */
  artifactSha256: Record<string, string>;
  /** Retries per request. */
  retries: number;
  /** Per-request timeout in milliseconds. */
  timeoutMs: number;
  /** Bytes per second below which a download is cut (0: never). */
  minSpeed: number;
  /** The window over which `minSpeed` is measured, in milliseconds. */
  minSpeedTimeMs: number;
  /** Extra CA certificate files. */
  caCerts: string[];
  /** Skip TLS verification. */
  insecure: boolean;
  /** Progress display. */
  progress: "auto" | "tty" | "lines" | "none";
  /** Debug logging. */
  verbose: boolean;
}

/** What a caller asked for besides booting. */
export type ParseResult = { kind: "help"; text: string } | {
  kind: "version";
  text: string;
} | {
  kind: "run";
  config: Config;
};

/** Where {@linkcode parseConfig} reads the other layers from (injected by tests). */
export interface ConfigSources {
  /** Environment variables (default: `Deno.env.toObject()`). */
  env?: Record<string, string>;
  /** Kernel command line (default: `/proc/cmdline`, or `ASSISTED_KERNEL_CMDLINE_FILE`). */
  cmdline?: string;
  /** Reads a text file (default: `Deno.readTextFileSync`). */
  readTextFile?: (path: string) => string;
  /** Permission bits of a file, undefined when unknown (default: from `Deno.statSync`). */
  fileMode?: (path: string) => number | undefined;
}

/** Longest `--timeout`, in seconds: what a timer can wait (2^31 - 1 ms). */
export const MAX_TIMEOUT_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

function statMode(path: string): number | undefined {
  try {
    return Deno.statSync(path).mode ?? undefined;
  } catch {
    return undefined;
  }
}

type Raw = Partial<Record<OptionName, string | boolean | string[]>>;

function usage(message: string): BootError {
  // Sentence case, whoever built the message ("token file /x is empty").
  return new BootError(
    message.replace(/^[a-z]/, (c) => c.toUpperCase()),
    ExitCode.Usage,
  );
}

/** Splits a kernel command line like Linux does: whitespace, with double quotes grouping. */
export function splitKernelCmdline(cmdline: string): string[] {
  const out: string[] = [];
  let current = "";
  let quoted = false;
  let any = false;
  for (const ch of cmdline) {
    if (ch === '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (any) out.push(current);
      current = "";
      any = false;
    } else {
      current += ch;
      any = true;
    }
  }
  if (any) out.push(current);
  return out;
}

function fromCmdline(cmdline: string): Raw {
  const raw: Raw = {};
  for (const arg of splitKernelCmdline(cmdline)) {
    if (!arg.startsWith("assisted.")) continue;
    const eq = arg.indexOf("=");
    const key = (eq < 0 ? arg.slice(9) : arg.slice(9, eq)).replaceAll("_", "-");
    const value = eq < 0 ? undefined : arg.slice(eq + 1);
    if (!(key in OPTIONS) || key === "help" || key === "version") {
      // The initramfs's /init reads its own assisted.* keys; a typo of ours is
      // worth a warning, not a refusal to boot.
      if (!CMDLINE_OTHERS.has(key)) {
        log.warn(
          `ignoring unknown kernel command line parameter ${arg.split("=")[0]}`,
        );
      }
      continue;
    }
    store(
      raw,
      key as OptionName,
      value,
      `kernel command line parameter ${arg.split("=")[0]}`,
    );
  }
  return raw;
}

/** `assisted.*` kernel parameters that are not options (read by the initramfs's /init). */
const CMDLINE_OTHERS = new Set(["on-failure"]);

/** `ASSISTED_*` variables that are not options. */
const ENV_OTHERS = new Set([
  "kernel-cmdline-file",
  "debug",
  "local-disks-root",
]);

function fromPairs(
  pairs: [string, string][],
  where: string,
  strict = false,
): Raw {
  const raw: Raw = {};
  for (const [key, value] of pairs) {
    if (!key.startsWith("ASSISTED_")) continue;
    const name = key.slice(9).toLowerCase().replaceAll("_", "-");
    if (!(name in OPTIONS) || name === "help" || name === "version") {
      // A typo in a file (ASSISTED_KERNEL_SHA=…) must not silently drop a pin.
      if (strict && !ENV_OTHERS.has(name)) {
        throw usage(`${where}: unknown setting ${key}`);
      }
      continue;
    }
    const spec: OptionSpec = OPTIONS[name as OptionName];
    if (spec.kind === "list") {
      raw[name as OptionName] = value.split(/\s+/).filter((v) => v !== "");
    } else {
      store(raw, name as OptionName, value, `${where} ${key}`);
    }
  }
  return raw;
}

function store(
  raw: Raw,
  name: OptionName,
  value: string | undefined,
  where: string,
): void {
  const spec: OptionSpec = OPTIONS[name];
  if (spec.kind === "boolean") {
    const v = (value ?? "1").toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) raw[name] = true;
    else if (["0", "false", "no", "off", ""].includes(v)) raw[name] = false;
    else {throw usage(
        `${where} must be a boolean (1/0, true/false), got "${value}"`,
      );}
  } else if (spec.kind === "list") {
    if (value === undefined) throw usage(`${where} needs a value`);
    raw[name] = [...((raw[name] as string[] | undefined) ?? []), value];
  } else {
    if (value === undefined) throw usage(`${where} needs a value`);
    raw[name] = value;
  }
}

/** Parses a `KEY=VALUE` file (comments with `#`, optional single or double quotes). */
export function parseEnvFile(text: string, path: string): [string, string][] {
  const pairs: [string, string][] = [];
  text.split("\n").forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(trimmed);
    if (!m) {
      throw usage(`Config file ${path} line ${i + 1}: expected KEY=VALUE`);
    }
    let value = m[2];
    const q = value[0];
    if ((q === '"' || q === "'") && value.length >= 2 && value.endsWith(q)) {
      value = value.slice(1, -1);
    }
    pairs.push([m[1], value]);
  });
  return pairs;
}

function fromFlags(argv: string[]): Raw {
  const options: Record<
    string,
    { type: "string" | "boolean"; multiple?: boolean; short?: string }
  > = {};
  for (
    const [name, spec] of Object.entries(OPTIONS) as [string, OptionSpec][]
  ) {
    options[name] = {
      type: spec.kind === "boolean" ? "boolean" : "string",
      ...(spec.kind === "list" ? { multiple: true } : {}),
      ...(spec.short ? { short: spec.short } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options,
      allowPositionals: true,
      strict: true,
    });
    if (positionals.length > 0) {
      throw usage(`Unexpected argument "${positionals[0]}" (see --help)`);
    }
    return values as Raw;
  } catch (err) {
    if (err instanceof BootError) throw err;
    const message = err instanceof Error
      ? err.message.split("\n")[0].split(". To ")[0]
      : String(err);
    throw usage(`${message.replace(/\.$/, "")} (see --help)`);
  }
}

/** The `--help` text. */
export function helpText(): string {
  const rows = (Object.entries(OPTIONS) as [string, OptionSpec][]).map(
    ([name, spec]) => {
      const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${
        spec.arg ? ` ${spec.arg}` : ""
      }`;
      return `  ${flag.padEnd(34)} ${spec.help}`;
    },
  );
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

const HEX64 = /^[0-9a-fA-F]{64}$/;

function checkUrl(value: string, what: string, schemes: string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usage(`${what} is not a valid URL: "${value}"`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (!schemes.includes(scheme)) {
    throw usage(`${what} must be ${schemes.join(" or ")}, got "${scheme}"`);
  }
  return url.href;
}

function checkSha(value: string, what: string): string {
  if (!HEX64.test(value)) throw usage(`${what} must be 64 hexadecimal digits`);
  return value.toLowerCase();
}

/** Normalises a MAC to lower-case colon form, or throws. */
export function normalizeMac(value: string): string {
  const hex = value.replace(/[:-]/g, "");
  if (
    !/^[0-9a-fA-F]{12}$/.test(hex) ||
    !/^([0-9a-fA-F]{2}([:-]|$)){6}$/.test(value)
  ) {
    throw usage(`--mac must look like 52:54:00:12:34:56, got "${value}"`);
  }
  return hex.toLowerCase().match(/../g)!.join(":");
}

/**
 * Parses and validates the configuration from every layer.
 *
 * @example
 * ```ts
 * const r = parseConfig(["--ipxe-url", "http://h/boot.ipxe", "--print-plan"], { env: {}, cmdline: "" });
 * ```
 */
export function parseConfig(
  argv: string[],
  sources: ConfigSources = {},
): ParseResult {
  const flags = fromFlags(argv);
  if (flags.help) return { kind: "help", text: helpText() };
  if (flags.version) {
    return { kind: "version", text: `assisted-bootloader ${VERSION}` };
  }
  const env = sources.env ?? Deno.env.toObject();
  const readTextFile = sources.readTextFile ?? Deno.readTextFileSync;
  const fileMode = sources.fileMode ?? statMode;
  // A secret in a file others can read is no secret: say so (the run goes on,
  // the file may be on a read-only medium).
  const warnIfShared = (path: string, subject: string) => {
    const mode = fileMode(path);
    if (mode !== undefined && (mode & 0o044) !== 0) {
      log.warn(
        `${subject} is readable by other users (mode ${
          (mode & 0o777).toString(8).padStart(4, "0")
        }): chmod 600 ${path}`,
      );
    }
  };
  const read = (path: string, what: string): string => {
    try {
      return readTextFile(path);
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound
        ? "no such file"
        : err instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : err instanceof Error
        ? err.message
        : String(err);
      throw usage(`Cannot read ${what} ${path}: ${why}`);
    }
  };
  const fromEnv = fromPairs(Object.entries(env), "environment variable");
  let cmdline = sources.cmdline;
  if (cmdline === undefined) {
    try {
      cmdline = Deno.readTextFileSync(
        env.ASSISTED_KERNEL_CMDLINE_FILE ?? "/proc/cmdline",
      );
    } catch {
      cmdline = "";
    }
  }
  const fromKernel = fromCmdline(cmdline);
  const configPath = (flags.config ?? fromEnv.config ?? fromKernel.config) as
    | string
    | undefined;
  let fromFile: Raw = {};
  if (configPath !== undefined) {
    fromFile = fromPairs(
      parseEnvFile(read(configPath, "config file"), configPath),
      `config file ${configPath}`,
      true,
    );
  } else {
    let text: string | undefined;
    try {
      text = readTextFile(DEFAULT_CONFIG_FILE);
    } catch {
      // The default config file is optional.
    }
    if (text !== undefined) {
      fromFile = fromPairs(
        parseEnvFile(text, DEFAULT_CONFIG_FILE),
        `config file ${DEFAULT_CONFIG_FILE}`,
        true,
      );
    }
  }
  if (fromFile.token !== undefined) {
    const path = configPath ?? DEFAULT_CONFIG_FILE;
    warnIfShared(path, `Config file ${path} holds ASSISTED_TOKEN and`);
  }
  const layers = [flags, fromEnv, fromFile, fromKernel];
  const get = <T extends string | boolean | string[]>(
    name: OptionName,
  ): T | undefined => {
    for (const layer of layers) {
      if (layer[name] !== undefined) return layer[name] as T;
    }
    return undefined;
  };
  const str = (name: OptionName) => {
    const v = get<string>(name);
    return v === undefined ? undefined : v.trim();
  };
  const bool = (name: OptionName) => get<boolean>(name) ?? false;
  const list = (name: OptionName) => get<string[]>(name) ?? [];
  const secret = (value: string, what: string): string => {
    const v = value.trim();
    if (v === "") throw usage(`${what} is empty`);
    if (!isHeaderToken(v)) {
      throw usage(
        `${what} contains characters that cannot be sent in an HTTP header (whitespace, control or non-ASCII characters)`,
      );
    }
    addSecret(v);
    return v;
  };

  // Source of the script.
  const ipxeUrl = str("ipxe-url");
  let infraEnvId = str("infra-env-id");
  const infraEnvIdFile = str("infra-env-id-file");
  if (infraEnvId !== undefined && infraEnvIdFile !== undefined) {
    throw usage("Give --infra-env-id or --infra-env-id-file, not both");
  }
  if (infraEnvIdFile !== undefined) {
    infraEnvId = read(infraEnvIdFile, "InfraEnv id file").trim();
  }
  let source: ScriptSource;
  if (ipxeUrl !== undefined && infraEnvId !== undefined) {
    throw usage("Give --ipxe-url or --infra-env-id, not both");
  } else if (ipxeUrl !== undefined) {
    source = {
      kind: "ipxe-url",
      url: checkUrl(ipxeUrl, "--ipxe-url", ["http", "https", "file"]),
    };
  } else if (infraEnvId !== undefined) {
    if (!/^[0-9a-fA-F-]{8,64}$/.test(infraEnvId)) {
      throw usage(
        `InfraEnv id must be a UUID, got "${infraEnvId.slice(0, 80)}"`,
      );
    }
    const token = str("token");
    const tokenFile = str("token-file");
    const refreshFile = str("refresh-token-file");
    const given = [token, tokenFile, refreshFile].filter((v) =>
      v !== undefined
    ).length;
    if (given > 1) {
      throw usage("Give one of --token, --token-file, --refresh-token-file");
    }
    let auth: ApiAuth = { kind: "none" };
    if (token !== undefined) {
      auth = { kind: "token", token: secret(token, "--token") };
    }
    if (tokenFile !== undefined) {
      warnIfShared(tokenFile, `Token file ${tokenFile}`);
      auth = {
        kind: "token",
        token: secret(read(tokenFile, "token file"), `token file ${tokenFile}`),
      };
    }
    if (refreshFile !== undefined) {
      warnIfShared(refreshFile, `Refresh token file ${refreshFile}`);
      auth = {
        kind: "refresh",
        refreshToken: secret(
          read(refreshFile, "refresh token file"),
          `refresh token file ${refreshFile}`,
        ),
        ssoUrl: checkUrl(str("sso-url") ?? DEFAULT_SSO_URL, "--sso-url", [
          "http",
          "https",
        ]),
      };
    }
    const scriptType = str("ipxe-script-type");
    if (
      scriptType !== undefined &&
      !["discovery-image-always", "boot-order-control"].includes(scriptType)
    ) {
      throw usage(
        `--ipxe-script-type must be discovery-image-always or boot-order-control, got "${scriptType}"`,
      );
    }
    source = {
      kind: "infraenv",
      apiUrl: checkUrl(str("api-url") ?? DEFAULT_API_URL, "--api-url", [
        "http",
        "https",
      ]).replace(/\/+$/, ""),
      infraEnvId: infraEnvId.toLowerCase(),
      auth,
      scriptType,
    };
  } else {
    throw usage(
      "No script source: give --ipxe-url URL, or --infra-env-id ID with a token (see --help)",
    );
  }

  const settings: Record<string, string> = {};
  for (const pair of list("set")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw usage(`--set takes NAME=VALUE, got "${pair}"`);
    settings[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const artifactSha256: Record<string, string> = {};
  for (const pair of list("artifact-sha256")) {
    const eq = pair.lastIndexOf("=");
    if (eq <= 0) throw usage(`--artifact-sha256 takes URL=HEX, got "${pair}"`);
    const url = checkUrl(pair.slice(0, eq), "--artifact-sha256 URL", [
      "http",
      "https",
      "file",
    ]);
    artifactSha256[url] = checkSha(
      pair.slice(eq + 1),
      "--artifact-sha256 digest",
    );
  }
  const number = (
    name: OptionName,
    fallback: number,
    min: number,
    max = Number.MAX_SAFE_INTEGER,
  ) => {
    const v = str(name);
    if (v === undefined) return fallback;
    if (!/^\d+(\.\d+)?$/.test(v) || Number(v) < min) {
      throw usage(`--${name} must be a number >= ${min}, got "${v}"`);
    }
    if (Number(v) > max) {
      throw usage(`--${name} must be at most ${max}, got "${v}"`);
    }
    return Number(v);
  };
  const printPlan = bool("print-plan");
  const noKexec = bool("no-kexec");
  if (printPlan && noKexec) {
    throw usage("Give --print-plan or --no-kexec, not both");
  }
  const localBoot = str("local-boot") ?? "kexec";
  if (!["kexec", "exit", "reboot"].includes(localBoot)) {
    throw usage(
      `--local-boot must be kexec, exit or reboot, got "${localBoot}"`,
    );
  }
  const progress = str("progress") ?? "auto";
  if (!["auto", "tty", "lines", "none"].includes(progress)) {
    throw usage(
      `--progress must be auto, tty, lines or none, got "${progress}"`,
    );
  }
  const kargs = (name: OptionName) =>
    list(name).map((karg) => {
      if (karg.trim() === "") {
        throw usage(`--${name} needs a non-empty argument`);
      }
      if (!/\s/.test(karg) || karg.includes('"')) return karg;
      // A value with spaces (from a quoted kernel parameter): quote it for the next kernel.
      const eq = karg.indexOf("=");
      return eq > 0
        ? `${karg.slice(0, eq)}="${karg.slice(eq + 1)}"`
        : `"${karg}"`;
    });
  const mac = str("mac");
  return {
    kind: "run",
    config: {
      source,
      mac: mac === undefined ? undefined : normalizeMac(mac),
      settings,
      hostSettings: !bool("no-host-settings"),
      appendKargs: kargs("append-karg"),
      deleteKargs: kargs("delete-karg"),
      mode: printPlan ? "print-plan" : noKexec ? "no-kexec" : "kexec",
      loadOnly: bool("load-only"),
      forceReboot: bool("force-reboot"),
      localBoot: localBoot as Config["localBoot"],
      workDir: str("work-dir") ?? DEFAULT_WORK_DIR,
      noCache: bool("no-cache"),
      kernelSha256: str("kernel-sha256") === undefined
        ? undefined
        : checkSha(str("kernel-sha256")!, "--kernel-sha256"),
      initrdSha256: str("initrd-sha256") === undefined
        ? undefined
        : checkSha(str("initrd-sha256")!, "--initrd-sha256"),
      artifactSha256,
      retries: number("retries", 5, 0),
      timeoutMs: number("timeout", 30, 0.1, MAX_TIMEOUT_SECONDS) * 1000,
      minSpeed: minSpeed(str("min-speed")),
      minSpeedTimeMs: number("min-speed-time", 30, 1) * 1000,
      caCerts: list("ca-cert"),
      insecure: bool("insecure"),
      progress: progress as Config["progress"],
      verbose: bool("verbose"),
    },
  };
}

/** `--min-speed`: whole bytes per second, 0 (never cut) to 1 GiB/s; default 1024. */
function minSpeed(value: string | undefined): number {
  if (value === undefined) return 1024;
  if (!/^\d+$/.test(value) || Number(value) > 2 ** 30) {
    throw usage(
      `--min-speed must be a whole number of bytes per second (0 to ${
        2 ** 30
      }), got "${value}"`,
    );
  }
  return Number(value);
}
