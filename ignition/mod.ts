/**
 * The Ignition config (spec 3.3.0) that turns a Fedora CoreOS machine into an
 * assisted-bootloader node: the bootloader's configuration and secrets (mode
 * 0600 under `/etc/assisted-bootloader`, a 0700 directory), the
 * download-and-run script, the one-shot systemd unit that starts it, and a
 * Zincati drop-in that turns automatic OS updates (and their reboots) off.
 *
 * The unit and the script are real files next to this module
 * (`assisted-bootloader.service`, `assisted-bootloader-run.sh`), embedded
 * verbatim; every per-install value goes into the two environment files.
 *
 * Nothing is written that the bootloader would refuse: each value bound for
 * config.env passes the bootloader's own check of its option (named after the
 * generator's parameter), the file is written in the subset of the `KEY=VALUE`
 * syntax that the bootloader and systemd read alike (lib/config/env_file.ts),
 * and then the bootloader's parser reads the result as it will on the target
 * ({@linkcode bootloaderView}). A refusal there would stop the unit for good
 * (exit 2 is not retried): an image that could never boot.
 *
 * @example
 * ```ts
 * import { renderIgnition } from "./mod.ts";
 * const json = await renderIgnition({
 *   bootloaderUrl: "http://10.0.2.100/assisted-bootloader",
 *   bootloaderSha256: "…64 hex…",
 *   ipxeUrl: "http://10.0.2.100/ipxe",
 * });
 * ```
 *
 * @module
 */

import {
  type CheckedOption,
  checkSha256,
  checkUrl,
  checkValue,
  formatEnvLine,
  OPTIONS,
  VALUE_CHECKS,
} from "../lib/config/mod.ts";
import { BootError, ExitCode } from "../lib/errors.ts";
import { envName } from "../lib/config/option_table.ts";
import { bootloaderView } from "./bootloader_view.ts";
import {
  type NmConnection,
  nmConnectionFiles,
  proxyEnvLines,
  type UnitProxy,
} from "./network.ts";

export { bootloaderView, checkKernelParameters } from "./bootloader_view.ts";

/** Ignition spec version produced (accepted by every current FCOS and by Debian 12's ignition-validate). */
export const IGNITION_VERSION = "3.3.0";
/** Directory of the configuration and secrets on the target (mode 0700). */
export const CONFIG_DIR = "/etc/assisted-bootloader";
/** Bootloader configuration file on the target (`--config`). */
export const CONFIG_PATH = `${CONFIG_DIR}/config.env`;
/** Environment file of the unit: `BOOTLOADER_URL` and `BOOTLOADER_SHA256`. */
export const DOWNLOAD_ENV_PATH = `${CONFIG_DIR}/download.env`;
/** Token file on the target. */
export const TOKEN_PATH = `${CONFIG_DIR}/token`;
/** Refresh token file on the target. */
export const REFRESH_TOKEN_PATH = `${CONFIG_DIR}/refresh-token`;
/** CA bundle on the target: an anchor, so curl and the system trust it too after FCOS's first-boot update-ca-trust. */
export const CA_PATH =
  "/etc/pki/ca-trust/source/anchors/assisted-bootloader-ca.pem";
/** The download-and-run script on the target. */
export const RUN_SCRIPT_PATH = "/usr/local/bin/assisted-bootloader-run";
/** Zincati drop-in that turns off automatic OS updates (and their reboots). */
export const ZINCATI_PATH = "/etc/zincati/config.d/90-assisted-bootloader.toml";
/** Name of the systemd unit. */
export const UNIT_NAME = "assisted-bootloader.service";

/** Parameters of the generated config. */
export interface IgnitionOptions {
  /** http(s) URL of the bootloader binary. */
  bootloaderUrl: string;
  /** sha256 of the binary: 64 hex digits (any case; written lowercase). */
  bootloaderSha256: string;
  /** Assisted Service API URL (`--api-url`). */
  apiUrl?: string;
  /** InfraEnv id (`--infra-env-id`); this or `ipxeUrl` is required. */
  infraEnvId?: string;
  /** Direct iPXE script URL (`--ipxe-url`). */
  ipxeUrl?: string;
  /** Token (contents of a token file); at most one of `token`, `refreshToken`. */
  token?: string;
  /** Offline refresh token (contents of a file). */
  refreshToken?: string;
  /** SSO token endpoint for the refresh token (`--sso-url`). */
  ssoUrl?: string;
  /** PEM CA bundle (contents) trusted by the bootloader (`--ca-cert`) and, as an anchor, by the system. */
  caBundle?: string;
  /** SSH public keys for the `core` user. */
  sshKeys?: string[];
  /** crypt(3) password hash for the `core` user. */
  passwordHash?: string;
  /** Kernel arguments the bootloader appends to the discovery kernel (`--append-karg`). */
  extraKargs?: string[];
  /** Further `ASSISTED_*` settings for config.env (for example `ASSISTED_WORK_DIR`), checked as the bootloader checks them. */
  settings?: Record<string, string>;
  /** NetworkManager keyfiles for /etc/NetworkManager/system-connections (mode 0600). */
  nmConnections?: NmConnection[];
  /** Proxy of the bootloader's unit (download script and bootloader): HTTP_PROXY, HTTPS_PROXY, NO_PROXY. */
  proxy?: UnitProxy;
}

/** An Ignition 3.3.0 config as produced here (a subset of the spec). */
export interface IgnitionConfig {
  /** Spec version. */
  ignition: { version: string };
  /** The `core` user, when keys or a password are given. */
  passwd?: {
    users: {
      name: string;
      sshAuthorizedKeys?: string[];
      passwordHash?: string;
    }[];
  };
  /** Directories and files. */
  storage: {
    directories: { path: string; mode: number; overwrite?: boolean }[];
    files: {
      path: string;
      mode: number;
      overwrite: boolean;
      contents: { source: string };
    }[];
  };
  /** The unit. */
  systemd: { units: { name: string; enabled: boolean; contents: string }[] };
}

/** The generator's parameters of the unit's proxy, as errors name them. */
const PROXY_PARAMETERS = {
  http: "TARGET_HTTP_PROXY",
  https: "TARGET_HTTPS_PROXY",
  no: "TARGET_NO_PROXY",
};

function usage(message: string): BootError {
  return new BootError(message, ExitCode.Usage);
}

/** The binary's URL: http(s) with a host, no whitespace (the run script hands it to curl). */
function checkBootloaderUrl(value: string): string {
  // http(s) URLs always have a host: the URL parser refuses them without one.
  checkUrl(value, "BOOTLOADER_URL", ["http", "https"]);
  if (/\s/.test(value)) {
    throw usage("BOOTLOADER_URL must not contain whitespace");
  }
  return value;
}

function normalizeSha(value: string | undefined): string {
  if (!value) {
    throw usage(
      "BOOTLOADER_SHA256 is required (sha256 of the bootloader binary)",
    );
  }
  const sha = value.trim().replace(/^sha256[-:]/i, "");
  return checkSha256(sha, "BOOTLOADER_SHA256");
}

/**
 * Lines of config.env, checked as they are added: each value with the
 * bootloader's own check of its option, each key once.
 */
class ConfigEnv {
  #lines: string[] = [];
  #keys = new Map<string, string>();

  /** Adds `key=value`; `what` names the value in errors (a generator parameter). */
  add(key: string, value: string, what: string): void {
    const earlier = this.#keys.get(key);
    if (earlier !== undefined) {
      throw usage(`${key} would be written twice (${earlier}, ${what})`);
    }
    this.#keys.set(key, what);
    this.#lines.push(formatEnvLine(key, value, what));
  }

  /** Adds the value of a checked option (see `VALUE_CHECKS`). */
  addChecked(name: CheckedOption, value: string, what: string): void {
    checkValue(name, value, what);
    this.add(envName(name, OPTIONS[name], "ASSISTED_"), value, what);
  }

  /** The file's text. */
  text(): string {
    return "# assisted-bootloader configuration, written by Ignition (make generate-ignition)\n" +
      this.#lines.join("");
  }
}

function dataUrl(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `data:;base64,${btoa(bin)}`;
}

async function asset(name: string): Promise<string> {
  return await Deno.readTextFile(new URL(name, import.meta.url));
}

/** The files the config writes, by target path, with their modes and contents (checked). */
export interface TargetFile {
  /** Absolute path on the target. */
  path: string;
  /** Mode (e.g. `0o600`). */
  mode: number;
  /** Contents. */
  contents: string;
}

/**
 * Validates `options` and returns the files the config writes on the target
 * (the environment files, secrets, CA, script); throws a {@linkcode BootError}
 * (exit code 2) with a one-line message on bad input.
 */
export async function targetFiles(
  options: IgnitionOptions,
): Promise<TargetFile[]> {
  if (!options.bootloaderUrl) {
    throw usage(
      "BOOTLOADER_URL is required (http(s) URL of the bootloader binary)",
    );
  }
  const url = checkBootloaderUrl(options.bootloaderUrl);
  const sha = normalizeSha(options.bootloaderSha256);
  const { config, files } = bootloaderConfig(options);
  files.unshift(
    { path: CONFIG_PATH, mode: 0o600, contents: config.text() },
    {
      path: DOWNLOAD_ENV_PATH,
      mode: 0o600,
      contents: "# Read by assisted-bootloader.service\n" +
        formatEnvLine("BOOTLOADER_URL", url) +
        formatEnvLine("BOOTLOADER_SHA256", sha) +
        proxyEnvLines(options.proxy ?? {}, PROXY_PARAMETERS),
    },
    ...nmConnectionFiles(options.nmConnections ?? [], "NM_CONNECTIONS"),
  );
  // The whole of it, as the bootloader will read it: the settings, and what
  // only shows in combination.
  bootloaderView(files, { configPath: CONFIG_PATH });
  files.push({
    path: RUN_SCRIPT_PATH,
    mode: 0o755,
    contents: await asset("assisted-bootloader-run.sh"),
  });
  files.push({
    path: ZINCATI_PATH,
    mode: 0o644,
    contents: await asset("zincati-no-updates.toml"),
  });
  return files;
}

/**
 * The bootloader's `config.env` for `options` (the source, the credentials
 * and CA, kernel arguments and `ASSISTED_*` settings, each checked as the
 * bootloader will check it), and the files it names (secrets, CA).
 */
function bootloaderConfig(
  options: IgnitionOptions,
): { config: ConfigEnv; files: TargetFile[] } {
  if (!options.infraEnvId && !options.ipxeUrl) {
    throw usage("Either INFRA_ENV_ID (with API_URL) or IPXE_URL is required");
  }
  if (options.infraEnvId && options.ipxeUrl) {
    throw usage("Give INFRA_ENV_ID or IPXE_URL, not both");
  }
  if (options.token !== undefined && options.refreshToken !== undefined) {
    throw usage("Give TOKEN_FILE or REFRESH_TOKEN_FILE, not both");
  }
  const files: TargetFile[] = [];
  const config = new ConfigEnv();
  if (options.apiUrl) config.addChecked("api-url", options.apiUrl, "API_URL");
  if (options.infraEnvId) {
    const id = options.infraEnvId.trim();
    config.addChecked("infra-env-id", id, "INFRA_ENV_ID");
  }
  if (options.ipxeUrl) {
    config.addChecked("ipxe-url", options.ipxeUrl, "IPXE_URL");
  }
  if (options.ssoUrl) config.addChecked("sso-url", options.ssoUrl, "SSO_URL");
  if (options.token !== undefined) {
    const what = "The token (TOKEN_FILE)";
    const token = checkValue("token", options.token, what);
    files.push({ path: TOKEN_PATH, mode: 0o600, contents: token });
    config.add("ASSISTED_TOKEN_FILE", TOKEN_PATH, what);
  }
  if (options.refreshToken !== undefined) {
    const what = "The refresh token (REFRESH_TOKEN_FILE)";
    const token = checkValue("token", options.refreshToken, what);
    files.push({ path: REFRESH_TOKEN_PATH, mode: 0o600, contents: token });
    config.add("ASSISTED_REFRESH_TOKEN_FILE", REFRESH_TOKEN_PATH, what);
  }
  if (options.caBundle !== undefined) {
    if (!options.caBundle.includes("-----BEGIN CERTIFICATE-----")) {
      throw usage("CA_BUNDLE does not contain a PEM certificate");
    }
    files.push({
      path: CA_PATH,
      mode: 0o644,
      contents: options.caBundle.replace(/\n?$/, "\n"),
    });
    config.add("ASSISTED_CA_CERT", CA_PATH, "CA_BUNDLE");
  }
  const kargs = options.extraKargs ?? [];
  for (const karg of kargs) {
    const what = `EXTRA_KARGS entry ${JSON.stringify(karg)}`;
    // config.env holds a list as one value split on whitespace.
    if (/\s/.test(karg)) throw usage(`${what} has whitespace`);
    checkValue("append-karg", karg, what);
  }
  if (kargs.length) {
    config.add("ASSISTED_APPEND_KARG", kargs.join(" "), "EXTRA_KARGS");
  }
  // FCOS boots with the image's console kargs (CONSOLE_KARGS): the discovery
  // kernel gets the same, not the service's ttyS1 (docs/consoles.md).
  if (options.settings?.ASSISTED_CONSOLE === undefined) {
    config.addChecked("console", "host", "the image's console mode");
  }
  for (const [key, value] of Object.entries(options.settings ?? {})) {
    if (!/^ASSISTED_[A-Z0-9_]+$/.test(key)) {
      throw usage(`Setting ${key} is not an ASSISTED_* name`);
    }
    const what = `Setting ${key}`;
    const name = key.slice(9).toLowerCase().replaceAll("_", "-");
    if (name in VALUE_CHECKS) {
      const option = name as CheckedOption;
      // A list is one value split on whitespace, as the bootloader reads it.
      const values = OPTIONS[option].kind === "list"
        ? value.split(/\s+/).filter((v) => v !== "")
        : [value.trim()];
      for (const v of values) checkValue(option, v, what);
    }
    config.add(key, value, what);
  }
  return { config, files };
}

function checkUser(options: IgnitionOptions): IgnitionConfig["passwd"] {
  const keys = options.sshKeys ?? [];
  for (const key of keys) {
    if (
      !/^(ssh-|ecdsa-|sk-)[A-Za-z0-9@._-]+ [A-Za-z0-9+/=]+( .*)?$/.test(key) ||
      /[\r\n]/.test(key)
    ) {
      throw usage(
        `SSH_KEYS has a line that is not an OpenSSH public key: ${
          JSON.stringify(key.slice(0, 40))
        }`,
      );
    }
  }
  const hash = options.passwordHash;
  if (hash !== undefined && (!/^\$[^\s]+$/.test(hash))) {
    throw usage(
      "PASSWORD_HASH must be a crypt(3) hash such as $y$… or $6$… (mkpasswd), on one line",
    );
  }
  if (!keys.length && hash === undefined) return undefined;
  return {
    users: [{
      name: "core",
      ...(keys.length ? { sshAuthorizedKeys: keys } : {}),
      ...(hash !== undefined ? { passwordHash: hash } : {}),
    }],
  };
}

/** Builds the Ignition config object; throws a {@linkcode BootError} (exit code 2) on bad input. */
export async function generateIgnition(
  options: IgnitionOptions,
): Promise<IgnitionConfig> {
  const files = await targetFiles(options);
  const passwd = checkUser(options);
  return {
    ignition: { version: IGNITION_VERSION },
    ...(passwd ? { passwd } : {}),
    storage: {
      directories: [{ path: CONFIG_DIR, mode: 0o700, overwrite: true }],
      files: files.map((f) => ({
        path: f.path,
        mode: f.mode,
        overwrite: true,
        contents: { source: dataUrl(f.contents) },
      })),
    },
    systemd: {
      units: [{
        name: UNIT_NAME,
        enabled: true,
        contents: await asset("assisted-bootloader.service"),
      }],
    },
  };
}

/** The config as pretty-printed JSON text, ending with a newline. */
export async function renderIgnition(
  options: IgnitionOptions,
): Promise<string> {
  return JSON.stringify(await generateIgnition(options), null, 2) + "\n";
}

/** Decodes a `data:` URL written by this module (base64 or percent-encoded). */
export function decodeDataUrl(source: string): Uint8Array {
  const m = /^data:([^,]*),(.*)$/s.exec(source);
  if (!m) throw new Error(`not a data URL: ${source.slice(0, 30)}`);
  if (m[1].endsWith(";base64")) {
    return Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0));
  }
  return new TextEncoder().encode(decodeURIComponent(m[2]));
}

/**
 * The bootloader's files (under {@linkcode CONFIG_DIR}) that an Ignition
 * config writes, decoded; undefined when it writes no config.env there or
 * one of them is not an inline `data:` URL (then what the target will read
 * cannot be known here).
 */
export function bootloaderFiles(ignition: unknown): TargetFile[] | undefined {
  const files = (ignition as Partial<IgnitionConfig>)?.storage?.files;
  if (!Array.isArray(files)) return undefined;
  const out: TargetFile[] = [];
  for (const f of files) {
    if (typeof f?.path !== "string" || !f.path.startsWith(`${CONFIG_DIR}/`)) {
      continue;
    }
    const source = f.contents?.source;
    const compressed = (f.contents as { compression?: string } | undefined)
      ?.compression;
    if (typeof source !== "string" || compressed) return undefined;
    let contents: string;
    try {
      contents = new TextDecoder("utf-8", { fatal: true }).decode(
        decodeDataUrl(source),
      );
    } catch {
      return undefined;
    }
    out.push({ path: f.path, mode: f.mode ?? 0o644, contents });
  }
  return out.some((f) => f.path === CONFIG_PATH) ? out : undefined;
}
