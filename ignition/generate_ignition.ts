/**
 * `make generate-ignition`: writes the Ignition config for the assisted-bootloader disk image.
 *
 * Every parameter is a flag or the environment variable of the same name in
 * upper snake case (flags win): `--bootloader-url` / `BOOTLOADER_URL`, and so
 * on. Secrets are read from files on this machine and embedded as 0600 files
 * on the target; they never appear on a command line.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env ignition/generate_ignition.ts \
 *   --bootloader-url https://example.com/assisted-bootloader --bootloader-sha256 <hex> \
 *   --api-url https://api.openshift.com --infra-env-id <id> --refresh-token-file ~/.ocm-token
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { BootError, ExitCode } from "../lib/errors.ts";
import {
  firstSet,
  helpRows,
  type OptionTable,
  parseFlags,
  readEnv,
} from "../lib/config/option_table.ts";
import { type IgnitionOptions, renderIgnition } from "./mod.ts";
import { readNmConnections } from "./network.ts";

/** Default output path, relative to the working directory. */
export const DEFAULT_OUTPUT = "build/assisted-bootloader.ign";

/** The generator's options; each also reads the environment variable in upper snake case. */
const GENERATOR_OPTIONS = {
  "bootloader-url": {
    kind: "string",
    arg: "URL",
    help: "http(s) URL of the bootloader binary (required)",
  },
  "bootloader-sha256": {
    kind: "string",
    arg: "HEX",
    help: "its sha256 (required)",
  },
  "api-url": { kind: "string", arg: "URL", help: "Assisted Service API URL" },
  "infra-env-id": {
    kind: "string",
    arg: "ID",
    help: "InfraEnv id (this or --ipxe-url)",
  },
  "ipxe-url": { kind: "string", arg: "URL", help: "direct iPXE script URL" },
  "token-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding the token (embedded, mode 0600)",
  },
  "refresh-token-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding an offline refresh token (mode 0600)",
  },
  "sso-url": {
    kind: "string",
    arg: "URL",
    help: "SSO token endpoint for the refresh token",
  },
  "ca-bundle": { kind: "string", arg: "PATH", help: "PEM CA bundle to trust" },
  "ssh-keys": {
    kind: "string",
    arg: "PATH",
    help: "authorized_keys file for the core user",
  },
  "password-hash-file": {
    kind: "string",
    arg: "PATH",
    help: "file holding a crypt(3) hash for core",
  },
  "password-hash": { kind: "string", arg: "HASH", help: "the hash itself" },
  "extra-kargs": {
    kind: "string",
    arg: '"A B"',
    help: "kernel args appended to the discovery kernel",
  },
  "nm-connections": {
    kind: "string",
    arg: "DIR",
    help: "NetworkManager keyfiles (*.nmconnection) for the image",
  },
  // TARGET_*: this machine's own HTTP_PROXY must not slip into the image.
  "http-proxy": {
    kind: "string",
    arg: "URL",
    env: "TARGET_HTTP_PROXY",
    help: "HTTP_PROXY of the bootloader's unit",
  },
  "https-proxy": {
    kind: "string",
    arg: "URL",
    env: "TARGET_HTTPS_PROXY",
    help: "HTTPS_PROXY of the bootloader's unit",
  },
  "no-proxy": {
    kind: "string",
    arg: "LIST",
    env: "TARGET_NO_PROXY",
    help: "NO_PROXY of the bootloader's unit",
  },
  setting: {
    kind: "list",
    arg: "KEY=VALUE",
    help: "extra ASSISTED_* line in config.env (repeatable)",
  },
  output: {
    kind: "string",
    arg: "PATH",
    env: "IGNITION_OUT",
    help: `output file (default ${DEFAULT_OUTPUT}, "-" for stdout)`,
  },
  help: { kind: "boolean", short: "h", help: "show this help" },
} as const satisfies OptionTable;

/** Options given as flags only. */
const FLAG_ONLY = ["setting", "help"];

const HELP =
  `Usage: generate_ignition.ts [options]   (each option also reads the env var in CAPS)

Every value bound for the bootloader's config.env is checked as the bootloader checks it.

${
    helpRows(GENERATOR_OPTIONS, {
      flagWidth: 30,
      envWidth: 18,
      noEnv: (name) => FLAG_ONLY.includes(name) ? "(flag only)" : undefined,
    }).join("\n")
  }
`;

async function readInput(name: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "no such file"
      : (err as Error).message;
    throw new BootError(`Cannot read ${name} ${path}: ${why}`, ExitCode.Usage);
  }
}

/** Result of {@linkcode optionsFromArgs}: the options and where to write. */
export interface ParsedArgs {
  /** Generator options (files already read). */
  options: IgnitionOptions;
  /** Output path, or "-" for stdout. */
  output: string;
}

/**
 * Turns command-line flags and environment variables (flags win; empty
 * values count as unset) into generator options, reading the referenced files.
 */
export async function optionsFromArgs(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<ParsedArgs> {
  const values = firstSet([
    parseFlags(args, GENERATOR_OPTIONS),
    readEnv(Object.entries(env), GENERATOR_OPTIONS, {
      where: "environment variable",
      flagOnly: FLAG_ONLY,
      emptyIsUnset: true,
    }),
  ]);
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const get = (name: keyof typeof GENERATOR_OPTIONS): string | undefined => {
    const v = values[name] as string | undefined;
    return v === "" ? undefined : v;
  };
  const options: IgnitionOptions = {
    bootloaderUrl: get("bootloader-url") ?? "",
    bootloaderSha256: get("bootloader-sha256") ?? "",
    apiUrl: get("api-url"),
    infraEnvId: get("infra-env-id"),
    ipxeUrl: get("ipxe-url"),
    ssoUrl: get("sso-url"),
  };
  const tokenFile = get("token-file");
  if (tokenFile) options.token = await readInput("TOKEN_FILE", tokenFile);
  const refreshFile = get("refresh-token-file");
  if (refreshFile) {
    options.refreshToken = await readInput("REFRESH_TOKEN_FILE", refreshFile);
  }
  const ca = get("ca-bundle");
  if (ca) options.caBundle = await readInput("CA_BUNDLE", ca);
  const keys = get("ssh-keys");
  if (keys) {
    options.sshKeys = (await readInput("SSH_KEYS", keys)).split("\n").map((l) =>
      l.trim()
    )
      .filter((l) => l && !l.startsWith("#"));
    if (!options.sshKeys.length) {
      throw new BootError(`SSH_KEYS ${keys} holds no key`, ExitCode.Usage);
    }
  }
  const hashFile = get("password-hash-file");
  if (hashFile) {
    options.passwordHash = (await readInput("PASSWORD_HASH_FILE", hashFile))
      .replace(/\r?\n$/, "");
  }
  const hash = get("password-hash");
  if (hash) {
    if (hashFile) {
      throw new BootError(
        "Give PASSWORD_HASH or PASSWORD_HASH_FILE, not both",
        ExitCode.Usage,
      );
    }
    options.passwordHash = hash;
  }
  const nm = get("nm-connections");
  if (nm) options.nmConnections = await readNmConnections(nm);
  const proxy = {
    httpProxy: get("http-proxy"),
    httpsProxy: get("https-proxy"),
    noProxy: get("no-proxy"),
  };
  if (proxy.httpProxy || proxy.httpsProxy || proxy.noProxy) {
    options.proxy = proxy;
  }
  const kargs = get("extra-kargs");
  if (kargs) options.extraKargs = kargs.trim().split(/\s+/);
  for (const s of (values.setting as string[] | undefined) ?? []) {
    const eq = s.indexOf("=");
    if (eq <= 0) {
      throw new BootError(`--setting ${s} is not KEY=VALUE`, ExitCode.Usage);
    }
    (options.settings ??= {})[s.slice(0, eq)] = s.slice(eq + 1);
  }
  return { options, output: get("output") ?? DEFAULT_OUTPUT };
}

/** Writes `text` to `path` atomically (temp file + rename), mode 0600: it holds secrets. */
export async function writeSecretFile(
  path: string,
  text: string,
): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await Deno.writeTextFile(tmp, text, { mode: 0o600 });
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new BootError(
      `Cannot write ${path}: ${(err as Error).message}`,
      ExitCode.Disk,
    );
  }
}

/** CLI entry point; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  try {
    const { options, output } = await optionsFromArgs(
      args,
      Deno.env.toObject(),
    );
    const text = await renderIgnition(options);
    if (output === "-") {
      await Deno.stdout.write(new TextEncoder().encode(text));
    } else {
      await writeSecretFile(output, text);
      console.error(
        `generate-ignition: wrote ${output} (mode 0600: it embeds the bootloader's secrets)`,
      );
    }
    return 0;
  } catch (err) {
    if (err instanceof BootError) {
      console.error(`generate-ignition: ${err.message}`);
      return err.exitCode;
    }
    throw err;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
