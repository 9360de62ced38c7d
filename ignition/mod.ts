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

import { BootError, ExitCode } from "../lib/errors.ts";

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
  /** Further `ASSISTED_*` settings written to config.env as they are (for example `ASSISTED_WORK_DIR`). */
  settings?: Record<string, string>;
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

function usage(message: string): BootError {
  return new BootError(message, ExitCode.Usage);
}

function checkUrl(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usage(`${name} is not a valid URL: ${JSON.stringify(value)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw usage(
      `${name} must be an http or https URL, got ${url.protocol.slice(0, -1)}`,
    );
  }
  if (!url.hostname) throw usage(`${name} has no host`);
  if (/\s/.test(value)) throw usage(`${name} must not contain whitespace`);
  return value;
}

/**
 * A value that is safe between double quotes for both the bootloader's
 * config parser and systemd's `EnvironmentFile=`: one line, no quote,
 * backslash, `$` or backtick.
 */
function checkValue(name: string, value: string): string {
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) {
    throw usage(`${name} must be a single line without control characters`);
  }
  if (/["\\$`]/.test(value)) {
    throw usage(
      `${name} must not contain a double quote, backslash, $ or backtick`,
    );
  }
  return value;
}

/**
 * Checks a token read from a file: one trailing newline is dropped, anything
 * else must be a non-empty run of printable, non-space characters.
 */
export function normalizeToken(name: string, raw: string): string {
  const token = raw.replace(/\r?\n$/, "");
  if (token.length === 0) throw usage(`${name} is empty`);
  if (/[\r\n]/.test(token)) {
    throw usage(`${name} contains a newline: a token is one line`);
  }
  // deno-lint-ignore no-control-regex
  if (/[\s\x00-\x1f\x7f]/.test(token)) {
    throw usage(`${name} contains whitespace or control characters`);
  }
  return token;
}

function normalizeSha(value: string | undefined): string {
  if (!value) {
    throw usage(
      "BOOTLOADER_SHA256 is required (sha256 of the bootloader binary)",
    );
  }
  const sha = value.trim().toLowerCase().replace(/^sha256[-:]/, "");
  if (!/^[0-9a-f]{64}$/.test(sha)) {
    throw usage("BOOTLOADER_SHA256 must be 64 hex digits");
  }
  return sha;
}

function envLine(key: string, value: string): string {
  return `${key}="${checkValue(key, value)}"\n`;
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
  const url = checkValue(
    "BOOTLOADER_URL",
    checkUrl("BOOTLOADER_URL", options.bootloaderUrl),
  );
  const sha = normalizeSha(options.bootloaderSha256);
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
  let config =
    "# assisted-bootloader configuration, written by Ignition (make generate-ignition)\n";
  if (options.apiUrl) {
    config += envLine("ASSISTED_API_URL", checkUrl("API_URL", options.apiUrl));
  }
  if (options.infraEnvId) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(options.infraEnvId)) {
      throw usage(
        "INFRA_ENV_ID must be an id such as a UUID (letters, digits, '.', '_', '-')",
      );
    }
    config += envLine("ASSISTED_INFRA_ENV_ID", options.infraEnvId);
  }
  if (options.ipxeUrl) {
    config += envLine(
      "ASSISTED_IPXE_URL",
      checkUrl("IPXE_URL", options.ipxeUrl),
    );
  }
  if (options.ssoUrl) {
    config += envLine("ASSISTED_SSO_URL", checkUrl("SSO_URL", options.ssoUrl));
  }
  if (options.token !== undefined) {
    files.push({
      path: TOKEN_PATH,
      mode: 0o600,
      contents: normalizeToken("The token (TOKEN_FILE)", options.token),
    });
    config += envLine("ASSISTED_TOKEN_FILE", TOKEN_PATH);
  }
  if (options.refreshToken !== undefined) {
    const token = normalizeToken(
      "The refresh token (REFRESH_TOKEN_FILE)",
      options.refreshToken,
    );
    files.push({ path: REFRESH_TOKEN_PATH, mode: 0o600, contents: token });
    config += envLine("ASSISTED_REFRESH_TOKEN_FILE", REFRESH_TOKEN_PATH);
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
    config += envLine("ASSISTED_CA_CERT", CA_PATH);
  }
  const kargs = options.extraKargs ?? [];
  for (const karg of kargs) {
    if (!karg || /\s/.test(karg)) {
      throw usage(
        `EXTRA_KARGS entry ${JSON.stringify(karg)} is empty or has whitespace`,
      );
    }
  }
  if (kargs.length) config += envLine("ASSISTED_APPEND_KARG", kargs.join(" "));
  // FCOS boots with the image's console kargs (CONSOLE_KARGS): the discovery
  // kernel gets the same, not the service's ttyS1 (docs/consoles.md).
  if (options.settings?.ASSISTED_CONSOLE === undefined) {
    config += envLine("ASSISTED_CONSOLE", "host");
  }
  for (const [key, value] of Object.entries(options.settings ?? {})) {
    if (!/^ASSISTED_[A-Z0-9_]+$/.test(key)) {
      throw usage(`Setting ${key} is not an ASSISTED_* name`);
    }
    config += envLine(key, value);
  }
  files.unshift(
    { path: CONFIG_PATH, mode: 0o600, contents: config },
    {
      path: DOWNLOAD_ENV_PATH,
      mode: 0o600,
      contents: "# Read by assisted-bootloader.service\n" +
        envLine("BOOTLOADER_URL", url) +
        envLine("BOOTLOADER_SHA256", sha),
    },
  );
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
