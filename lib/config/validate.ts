/**
 * Validation: merged raw option values (and the files they name, already
 * read) into a {@linkcode Config}, or one usage error. Pure: no I/O, no
 * logging, no global state; the secrets found are returned for the caller to
 * register with the logger.
 *
 * The check of each option's values is in one table,
 * {@linkcode VALUE_CHECKS}: validation applies it, and so do the generators
 * (ignition/, image/) to every value they write for the bootloader, naming
 * their own parameters.
 *
 * @module
 */

import { CONSOLE_MODES, type ConsoleMode } from "../resolve/consoles.ts";
import { isHeaderToken } from "../http/request.ts";
import { DEFAULT_BUSY_TIMEOUT_MS } from "../http/busy.ts";
import { kargProblem } from "../resolve/kargs.ts";
import type { ScriptSource } from "../resolve/infraenv.ts";
import type { ApiAuth } from "../resolve/sso.ts";
import { usageError } from "./option_table.ts";
import { untrustedRefusal } from "../path_trust.ts";
import type { NamedFiles, Origins, RawOptions } from "./layers.ts";
import {
  DEFAULT_API_URL,
  DEFAULT_SSO_URL,
  DEFAULT_WORK_DIR,
  type OptionName,
} from "./options.ts";

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
  /** Where the discovery kernel's consoles come from (`--console`). */
  console: ConsoleMode;
  /**
   * The running kernel's command line, as the layers read it for the
   * `assisted.*` parameters (a fact of the host, not an option: "" until
   * `readConfig` fills it in).
   */
  hostCmdline: string;
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
  /** Check before downloading that this machine's memory can hold the boot (not `--no-preflight`). */
  preflight: boolean;
  /**
   * Where the preflight reads `MemTotal` and `MemAvailable` (a fact of the
   * host, like `hostCmdline`: `/proc/meminfo` until `readConfig` fills it in
   * from `ASSISTED_MEMINFO_FILE`).
   */
  meminfoFile: string;
  /** Kernel pin (lower-case hex). */
  kernelSha256?: string;
  /** Assembled initrd pin (lower-case hex). */
  initrdSha256?: string;
  /** Per-image pins: URL -> lower-case hex. */
  artifactSha256: Record<string, string>;
  /** Retries per request. */
  retries: number;
  /** How long a run waits for busy servers in all, in milliseconds (0: never). */
  busyTimeoutMs: number;
  /** Per-request timeout in milliseconds. */
  timeoutMs: number;
  /** Bytes per second below which a download is cut (0: never). */
  minSpeed: number;
  /** The window over which `minSpeed` is measured, in milliseconds. */
  minSpeedTimeMs: number;
  /** Extra CA certificate files. */
  caCerts: string[];
  /** A CA certificate to fetch and trust (`--ca-cert-url`), with its sha256. */
  caCertUrl?: { url: string; sha256: string };
  /** Skip TLS verification. */
  insecure: boolean;
  /** Progress display. */
  progress: "auto" | "tty" | "lines" | "none";
  /** Debug logging. */
  verbose: boolean;
}

/** A validated configuration and the secrets it holds (for the logger to redact). */
export interface Validated {
  /** The configuration. */
  config: Config;
  /** Tokens found in it. */
  secrets: string[];
}

/** Longest `--timeout`, in seconds: what a timer can wait (2^31 - 1 ms). */
export const MAX_TIMEOUT_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

const HEX64 = /^[0-9a-fA-F]{64}$/;

/** Checks a URL and its scheme; returns it in normal form (`URL.href`). */
export function checkUrl(
  value: string,
  what: string,
  schemes: readonly string[],
): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError(`${what} is not a valid URL: "${value}"`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (!schemes.includes(scheme)) {
    throw usageError(
      `${what} must be ${schemes.join(" or ")}, got "${scheme}"`,
    );
  }
  return url.href;
}

/**
 * Checks an URL requests are built from or posted to (`--api-url`,
 * `--sso-url`): http or https, and no `user:password@` (fetch would send it
 * as an `Authorization` header beside the bearer token); `--api-url`
 * (`base`) has no query or fragment either, which would land in the middle
 * of the script URL built from it.
 */
function checkServiceUrl(value: string, what: string, base: boolean): string {
  const href = checkUrl(value, what, ["http", "https"]);
  const url = new URL(href);
  if (url.username !== "" || url.password !== "") {
    throw usageError(
      `${what} must not hold a user:password@ (it would be sent as an Authorization header beside the token)`,
    );
  }
  if (base && /[?#]/.test(href)) {
    throw usageError(
      `${what} must not have a query or a fragment: it is the base the script URL is built on`,
    );
  }
  return href;
}

/** Checks a sha256 of exactly 64 hexadecimal digits; returns it in lower case. */
export function checkSha256(value: string, what: string): string {
  if (!HEX64.test(value)) {
    throw usageError(`${what} must be 64 hexadecimal digits`);
  }
  return value.toLowerCase();
}

/** Normalises a MAC to lower-case colon form, or throws. */
export function normalizeMac(value: string, what = "--mac"): string {
  if (!/^[0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5}$/.test(value)) {
    throw usageError(
      `${what} must look like 52:54:00:12:34:56, got "${value}"`,
    );
  }
  return value.toLowerCase().replace(/-/g, ":");
}

/** Checks an InfraEnv id (a UUID: hex digits and dashes); returns it in lower case. */
function checkInfraEnvId(value: string, what: string): string {
  if (!/^[0-9a-fA-F-]{8,64}$/.test(value)) {
    throw usageError(`${what} must be a UUID, got "${value.slice(0, 80)}"`);
  }
  return value.toLowerCase();
}

/**
 * Checks a token (from a flag, a variable or a file): surrounding whitespace
 * dropped, then non-empty and printable ASCII, so it can go in an HTTP
 * header. Returns it trimmed.
 */
function checkToken(value: string, what: string): string {
  const v = value.trim();
  if (v === "") throw usageError(`${what} is empty`);
  if (!isHeaderToken(v)) {
    throw usageError(
      `${what} contains characters that cannot be sent in an HTTP header (whitespace, control or non-ASCII characters)`,
    );
  }
  return v;
}

/**
 * Checks a kernel argument to append or delete: not empty. A value with
 * spaces (from a quoted kernel parameter) comes back quoted for the next
 * kernel.
 */
function checkKarg(karg: string, what: string): string {
  if (karg.trim() === "") {
    throw usageError(`${what} needs a non-empty argument`);
  }
  let out = karg;
  if (/\s/.test(karg) && !karg.includes('"')) {
    // A value with spaces (from a quoted kernel parameter): quote it for the next kernel.
    const eq = karg.indexOf("=");
    out = eq > 0 ? `${karg.slice(0, eq)}="${karg.slice(eq + 1)}"` : `"${karg}"`;
  }
  const problem = kargProblem(out);
  if (problem) throw usageError(`${what} ${JSON.stringify(karg)}: ${problem}`);
  return out;
}

function checkNumber(
  value: string,
  what: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) < min) {
    throw usageError(`${what} must be a number >= ${min}, got "${value}"`);
  }
  if (Number(value) > max) {
    throw usageError(`${what} must be at most ${max}, got "${value}"`);
  }
  return Number(value);
}

function checkChoice<T extends string>(
  value: string,
  what: string,
  choices: readonly T[],
): T {
  if (!choices.includes(value as T)) {
    const list = `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}`;
    throw usageError(`${what} must be ${list}, got "${value}"`);
  }
  return value as T;
}

/** `--min-speed`: whole bytes per second, 0 (never cut) to 1 GiB/s. */
function checkMinSpeed(value: string, what: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 2 ** 30) {
    throw usageError(
      `${what} must be a whole number of bytes per second (0 to ${
        2 ** 30
      }), got "${value}"`,
    );
  }
  return Number(value);
}

/** `NAME=VALUE`, one `--set` value. */
function checkSetting(pair: string, what: string): [string, string] {
  const eq = pair.indexOf("=");
  if (eq <= 0) throw usageError(`${what} takes NAME=VALUE, got "${pair}"`);
  return [pair.slice(0, eq), pair.slice(eq + 1)];
}

/** `URL=HEX`, one `--artifact-sha256` value (the last `=` splits: a URL may hold one). */
function checkPin(pair: string, what: string): [string, string] {
  const eq = pair.lastIndexOf("=");
  if (eq <= 0) throw usageError(`${what} takes URL=HEX, got "${pair}"`);
  const url = checkUrl(pair.slice(0, eq), `${what} URL`, [
    "http",
    "https",
    "file",
  ]);
  return [url, checkSha256(pair.slice(eq + 1), `${what} digest`)];
}

/**
 * The check of one value, by option (one element for a list option): what
 * {@linkcode validateConfig} applies, and what a generator applies to each
 * value it writes for the bootloader, naming it `what`. Each returns the
 * value as the configuration holds it.
 */
export const VALUE_CHECKS = {
  "api-url": (v: string, what: string) =>
    checkServiceUrl(v, what, true).replace(/\/+$/, ""),
  "sso-url": (v: string, what: string) => checkServiceUrl(v, what, false),
  "ca-cert-url": (v: string, what: string) =>
    checkUrl(v, what, ["http", "https"]),
  "ca-cert-sha256": checkSha256,
  "ipxe-url": (v: string, what: string) =>
    checkUrl(v, what, ["http", "https", "file"]),
  "infra-env-id": checkInfraEnvId,
  token: checkToken,
  "ipxe-script-type": (v: string, what: string) =>
    checkChoice(v, what, ["discovery-image-always", "boot-order-control"]),
  mac: normalizeMac,
  set: checkSetting,
  "append-karg": checkKarg,
  "delete-karg": checkKarg,
  "kernel-sha256": checkSha256,
  "initrd-sha256": checkSha256,
  "artifact-sha256": checkPin,
  retries: (v: string, what: string) => checkNumber(v, what, 0),
  "busy-timeout": (v: string, what: string) =>
    checkNumber(v, what, 0, MAX_TIMEOUT_SECONDS),
  timeout: (v: string, what: string) =>
    checkNumber(v, what, 0.1, MAX_TIMEOUT_SECONDS),
  "min-speed": checkMinSpeed,
  "min-speed-time": (v: string, what: string) =>
    checkNumber(v, what, 1, MAX_TIMEOUT_SECONDS),
  progress: (v: string, what: string) =>
    checkChoice(v, what, ["auto", "tty", "lines", "none"] as const),
  "local-boot": (v: string, what: string) =>
    checkChoice(v, what, ["kexec", "exit", "reboot"] as const),
  console: (v: string, what: string): ConsoleMode =>
    checkChoice(v, what, CONSOLE_MODES),
} as const satisfies Partial<
  Record<OptionName, (value: string, what: string) => unknown>
>;

/** An option whose values are checked by {@linkcode VALUE_CHECKS}. */
export type CheckedOption = keyof typeof VALUE_CHECKS;

/** Checks one value of `name` (see {@linkcode VALUE_CHECKS}); `what` names it in errors. */
export function checkValue<N extends CheckedOption>(
  name: N,
  value: string,
  what: string,
): ReturnType<typeof VALUE_CHECKS[N]> {
  const check = VALUE_CHECKS[name] as (v: string, w: string) => unknown;
  return check(value, what) as ReturnType<typeof VALUE_CHECKS[N]>;
}

/** Typed, trimmed access to merged raw values. */
function accessors(raw: RawOptions) {
  const str = (name: OptionName): string | undefined => {
    const v = raw[name] as string | undefined;
    return v === undefined ? undefined : v.trim();
  };
  const bool = (name: OptionName): boolean =>
    (raw[name] as boolean | undefined) ?? false;
  const list = (name: OptionName): string[] =>
    (raw[name] as string[] | undefined) ?? [];
  return { str, bool, list };
}

/**
 * The text of a file an option named, or the usage error of its failed read
 * or of a path another user controls.
 */
function fileText(files: NamedFiles, path: string, what: string): string {
  const read = files[path];
  if (read === undefined) {
    throw usageError(`Cannot read ${what} ${path}: it was not read`);
  }
  if ("error" in read) {
    throw usageError(`Cannot read ${what} ${path}: ${read.error}`);
  }
  if ("untrusted" in read) {
    // usageError starts the line with a capital.
    throw usageError(untrustedRefusal(`${what} ${path}`, read.untrusted));
  }
  return read.text;
}

/** {@linkcode checkValue} naming each option where it was set (its origin), or as its flag. */
type Check =
  & (<N extends CheckedOption>(
    name: N,
    value: string,
    what?: string,
  ) => ReturnType<typeof VALUE_CHECKS[N]>)
  & {
    origin: (name: OptionName) => string;
  };

function checker(origins: Origins): Check {
  const origin = (name: OptionName) => origins[name] ?? `--${name}`;
  const check = <N extends CheckedOption>(
    name: N,
    value: string,
    what?: string,
  ) => checkValue(name, value, what ?? origin(name));
  return Object.assign(check, { origin });
}

/** The script source: an iPXE URL, or an InfraEnv with its authentication. */
function scriptSource(
  raw: RawOptions,
  files: NamedFiles,
  secrets: string[],
  check: Check,
): ScriptSource {
  const { str } = accessors(raw);
  const secret = (value: string, what: string) => {
    const token = check("token", value, what);
    secrets.push(token);
    return token;
  };
  const ipxeUrl = str("ipxe-url");
  let infraEnvId = str("infra-env-id");
  const infraEnvIdFile = str("infra-env-id-file");
  if (infraEnvId !== undefined && infraEnvIdFile !== undefined) {
    throw usageError("Give --infra-env-id or --infra-env-id-file, not both");
  }
  if (infraEnvIdFile !== undefined) {
    infraEnvId = fileText(files, infraEnvIdFile, "InfraEnv id file").trim();
  }
  if (ipxeUrl !== undefined && infraEnvId !== undefined) {
    throw usageError("Give --ipxe-url or --infra-env-id, not both");
  }
  if (ipxeUrl !== undefined) {
    return {
      kind: "ipxe-url",
      url: check("ipxe-url", ipxeUrl),
    };
  }
  if (infraEnvId === undefined) {
    throw usageError(
      "No script source: give --ipxe-url URL, or --infra-env-id ID with a token (see --help)",
    );
  }
  const id = check("infra-env-id", infraEnvId, "InfraEnv id");
  const token = str("token");
  const tokenFile = str("token-file");
  const refreshFile = str("refresh-token-file");
  const given = [token, tokenFile, refreshFile].filter((v) => v !== undefined);
  if (given.length > 1) {
    throw usageError("Give one of --token, --token-file, --refresh-token-file");
  }
  let auth: ApiAuth = { kind: "none" };
  if (token !== undefined) {
    auth = { kind: "token", token: secret(token, check.origin("token")) };
  }
  if (tokenFile !== undefined) {
    const text = fileText(files, tokenFile, "token file");
    auth = { kind: "token", token: secret(text, `token file ${tokenFile}`) };
  }
  if (refreshFile !== undefined) {
    const text = fileText(files, refreshFile, "refresh token file");
    auth = {
      kind: "refresh",
      refreshToken: secret(text, `refresh token file ${refreshFile}`),
      ssoUrl: check("sso-url", str("sso-url") ?? DEFAULT_SSO_URL),
    };
  }
  const scriptType = str("ipxe-script-type");
  if (scriptType !== undefined) check("ipxe-script-type", scriptType);
  return {
    kind: "infraenv",
    apiUrl: check("api-url", str("api-url") ?? DEFAULT_API_URL),
    infraEnvId: id,
    auth,
    scriptType,
  };
}

/** Options for {@linkcode validateConfig}. */
export interface ValidateOptions {
  /** Where each option was set, to name it so in errors (default: its flag). */
  origins?: Origins;
}

/**
 * Validates merged option values into a {@linkcode Config}; `files` holds the
 * files they name, as read; errors name each option where it was set. Throws a usage error (exit 2) with one line on
 * the first bad value.
 *
 * @example
 * ```ts
 * const { config } = validateConfig({ "ipxe-url": "http://h/boot.ipxe" });
 * config.source; // { kind: "ipxe-url", url: "http://h/boot.ipxe" }
 * ```
 */
export function validateConfig(
  raw: RawOptions,
  files: NamedFiles = {},
  options: ValidateOptions = {},
): Validated {
  const { str, bool, list } = accessors(raw);
  const secrets: string[] = [];
  const check = checker(options.origins ?? {});
  const source = scriptSource(raw, files, secrets, check);
  const settings = Object.fromEntries(
    list("set").map((pair) => check("set", pair)),
  );
  const artifactSha256 = Object.fromEntries(
    list("artifact-sha256").map((pair) => check("artifact-sha256", pair)),
  );
  const number = (
    name:
      | "retries"
      | "busy-timeout"
      | "timeout"
      | "min-speed"
      | "min-speed-time",
    fallback: number,
  ) => {
    const v = str(name);
    return v === undefined ? fallback : check(name, v);
  };
  const printPlan = bool("print-plan");
  const noKexec = bool("no-kexec");
  if (printPlan && noKexec) {
    throw usageError("Give --print-plan or --no-kexec, not both");
  }
  const progress = check("progress", str("progress") ?? "auto");
  const kargs = (name: "append-karg" | "delete-karg") =>
    list(name).map((karg) => check(name, karg));
  const sha = (name: "kernel-sha256" | "initrd-sha256") => {
    const v = str(name);
    return v === undefined ? undefined : check(name, v);
  };
  const mac = str("mac");
  const caCertUrl = str("ca-cert-url");
  const caCertSha256 = str("ca-cert-sha256");
  if ((caCertUrl === undefined) !== (caCertSha256 === undefined)) {
    throw usageError(
      "--ca-cert-url and --ca-cert-sha256 go together: a fetched CA is trusted only with its digest",
    );
  }
  const config: Config = {
    source,
    mac: mac === undefined ? undefined : check("mac", mac),
    settings,
    hostSettings: !bool("no-host-settings"),
    appendKargs: kargs("append-karg"),
    deleteKargs: kargs("delete-karg"),
    console: check("console", str("console") ?? "keep"),
    hostCmdline: "",
    mode: printPlan ? "print-plan" : noKexec ? "no-kexec" : "kexec",
    loadOnly: bool("load-only"),
    forceReboot: bool("force-reboot"),
    localBoot: check("local-boot", str("local-boot") ?? "kexec"),
    workDir: str("work-dir") ?? DEFAULT_WORK_DIR,
    noCache: bool("no-cache"),
    preflight: !bool("no-preflight"),
    meminfoFile: "/proc/meminfo",
    kernelSha256: sha("kernel-sha256"),
    initrdSha256: sha("initrd-sha256"),
    artifactSha256,
    retries: number("retries", 5),
    busyTimeoutMs: number("busy-timeout", DEFAULT_BUSY_TIMEOUT_MS / 1000) *
      1000,
    timeoutMs: number("timeout", 30) * 1000,
    minSpeed: number("min-speed", 1024),
    minSpeedTimeMs: number("min-speed-time", 30) * 1000,
    caCerts: list("ca-cert"),
    caCertUrl: caCertUrl === undefined ? undefined : {
      url: check("ca-cert-url", caCertUrl),
      sha256: check("ca-cert-sha256", caCertSha256!),
    },
    insecure: bool("insecure"),
    progress,
    verbose: bool("verbose"),
  };
  return { config, secrets };
}
