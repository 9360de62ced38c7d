/**
 * Reading the configuration's layers: flags, `ASSISTED_*` environment
 * variables, the `KEY=VALUE` config file and `assisted.*` kernel command-line
 * parameters, each into raw option values; merging them (flag > env > file >
 * cmdline, a list taken whole from one layer); and reading the files the
 * merged options name (InfraEnv id, tokens): a file another user can change
 * is not read (`path_trust.ts`). Every byte comes through
 * {@linkcode ConfigSources}, so a test (or a generator checking what a target
 * will see) can stand in for the machine. What the values mean is
 * validate.ts's job.
 *
 * @module
 */

import { parseKernelCmdline } from "../resolve/kargs.ts";
import {
  firstSet,
  type OptionValue,
  parseFlags,
  storeValue,
  usageError,
} from "./option_table.ts";
import { parseEnvFile } from "./env_file.ts";
import { readRegularTextFileSync } from "../regular_file.ts";
import {
  type UntrustedPart,
  untrustedPart,
  untrustedRefusal,
} from "../path_trust.ts";
import { hint, lookalike, optionOf, PINS } from "./option_names.ts";
import { DEFAULT_CONFIG_FILE, type OptionName, OPTIONS } from "./options.ts";

/** Where the layers are read from; each default is this machine. */
export interface ConfigSources {
  /** Environment variables (default: `Deno.env.toObject()`). */
  env?: Record<string, string>;
  /**
   * Kernel command line (default: read with `readTextFile` from
   * `ASSISTED_KERNEL_CMDLINE_FILE`, else `/proc/cmdline`; empty when unreadable).
   */
  cmdline?: string;
  /**
   * Reads a text file: the config file, /proc/cmdline, named files (default:
   * `readRegularTextFileSync`: a FIFO or a device is refused, never opened).
   */
  readTextFile?: (path: string) => string;
  /** Permission bits of a file, undefined when unknown (default: from `Deno.statSync`). */
  fileMode?: (path: string) => number | undefined;
  /**
   * The part of a file's path that another user controls (the file, a
   * directory or a link on the way), undefined when none is: such a config
   * file or named file is refused, unread (default: `untrustedPart`, which
   * walks this machine's file system; the kernel command line is not
   * checked).
   */
  untrustedPart?: (path: string) => UntrustedPart | undefined;
}

/** Option values as read from one layer, or merged. */
export type RawOptions = Partial<Record<OptionName, OptionValue>>;

/**
 * How each option was spelled where it was set, for messages: `--retries`,
 * `environment variable ASSISTED_RETRIES`, `config file /etc/x.env
 * ASSISTED_RETRIES`, `kernel command line parameter assisted.retries`.
 */
export type Origins = Partial<Record<OptionName, string>>;

/** The four layers, highest precedence first. */
export interface Layers {
  /** Command-line flags. */
  flags: RawOptions;
  /** `ASSISTED_*` environment variables. */
  env: RawOptions;
  /** The config file (empty when there is none). */
  file: RawOptions;
  /** `assisted.*` kernel command-line parameters. */
  cmdline: RawOptions;
  /** Where each option of each layer was set (for messages). */
  origins: { flags: Origins; env: Origins; file: Origins; cmdline: Origins };
  /** The running kernel's whole command line, as read (not an option layer: a fact of the host). */
  hostCmdline: string;
  /** Where the memory preflight reads `MemTotal` (`ASSISTED_MEMINFO_FILE`, else `/proc/meminfo`). */
  meminfoFile: string;
}

/**
 * A file named by an option, as read: its text and mode, why it could not be
 * read, or the part of its path another user controls (then it is not read).
 */
export type FileRead =
  | { text: string; mode?: number }
  | { error: string }
  | { untrusted: UntrustedPart };

/** Files named by the merged options (see {@linkcode NAMED_FILE_OPTIONS}), by path. */
export type NamedFiles = Record<string, FileRead>;

/** Options whose value is a file the configuration reads (its contents are validated). */
export const NAMED_FILE_OPTIONS: readonly OptionName[] = [
  "infra-env-id-file",
  "token-file",
  "refresh-token-file",
];

/** `assisted.*` kernel parameters that are not options (read by the initramfs's /init and /net-setup). */
const CMDLINE_OTHERS = new Set([
  "on-failure",
  "retry-delay",
  "proxy",
  "no-proxy",
]);

/** `ASSISTED_*` variables that are not options. */
const ENV_OTHERS = new Set([
  "kernel-cmdline-file",
  "meminfo-file",
  "debug",
  "local-disks-root",
]);

function statMode(path: string): number | undefined {
  try {
    return Deno.statSync(path).mode ?? undefined;
  } catch {
    return undefined;
  }
}

/** How files are read: the injected functions, else this machine's. */
interface FileAccess {
  readTextFile: (path: string) => string;
  fileMode: (path: string) => number | undefined;
  untrustedPart: (path: string) => UntrustedPart | undefined;
}

function fileAccess(sources: ConfigSources): FileAccess {
  return {
    readTextFile: sources.readTextFile ?? readRegularTextFileSync,
    fileMode: sources.fileMode ?? statMode,
    untrustedPart: sources.untrustedPart ?? untrustedPart,
  };
}

/** Why a file could not be read, in a few words. */
function readError(err: unknown): string {
  return err instanceof Deno.errors.NotFound
    ? "no such file"
    : err instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : err instanceof Error
    ? err.message
    : String(err);
}

/** Reads a file: its text and mode, or a one-line reason. */
function readFile(files: FileAccess, path: string): FileRead {
  try {
    return { text: files.readTextFile(path), mode: files.fileMode(path) };
  } catch (err) {
    return { error: readError(err) };
  }
}

/**
 * Reads a file that decides what the machine boots (the config file, a named
 * file): not at all when another user can change it.
 */
function readTrustedFile(files: FileAccess, path: string): FileRead {
  let untrusted: UntrustedPart | undefined;
  try {
    untrusted = files.untrustedPart(path);
  } catch (err) {
    return { error: readError(err) };
  }
  return untrusted ? { untrusted } : readFile(files, path);
}

/** The kernel command line: given, or read from `ASSISTED_KERNEL_CMDLINE_FILE` or `/proc/cmdline` (empty when unreadable). */
function kernelCmdline(
  sources: ConfigSources,
  env: Record<string, string>,
  files: FileAccess,
): string {
  if (sources.cmdline !== undefined) return sources.cmdline;
  const read = readFile(
    files,
    env.ASSISTED_KERNEL_CMDLINE_FILE ?? "/proc/cmdline",
  );
  return "text" in read ? read.text : "";
}

/** True when `mode` lets users other than the owner read the file. */
function sharedMode(mode: number | undefined): boolean {
  return mode !== undefined && (mode & 0o044) !== 0;
}

/** `(mode 0644): chmod 600 PATH`, the end of a warning about a shared file. */
function chmodAdvice(path: string, mode: number): string {
  return `(mode ${
    (mode & 0o777).toString(8).padStart(4, "0")
  }): chmod 600 ${path}`;
}

/**
 * Reads the flags (every option of the table, `--help` and `--version`
 * included). An empty value (`--work-dir ''`) is a usage error, as in every
 * layer.
 */
export function readFlags(argv: string[]): RawOptions {
  const flags = parseFlags(argv, OPTIONS) as RawOptions;
  for (const [name, value] of Object.entries(flags)) {
    const values = Array.isArray(value) ? value : [value];
    if (values.some((v) => typeof v === "string" && v.trim() === "")) {
      throw usageError(
        `--${name} is empty: give it a value, or leave it out`,
      );
    }
  }
  return flags;
}

/**
 * Splits a kernel command line like Linux does (`next_arg`): each argument as
 * `param` or `param=value`, with the kernel's quote removal.
 */
export function splitKernelCmdline(cmdline: string): string[] {
  return parseKernelCmdline(cmdline).map((a) =>
    a.value === undefined ? a.param : `${a.param}=${a.value}`
  );
}

/**
 * Stores one value read from a layer (a list from the environment or the
 * config file is one value split on whitespace; the kernel command line
 * repeats its key). An empty value is refused: it would silently override
 * (drop) what a layer below sets, a pin included; so is an option set twice
 * in one layer with different values.
 */
function store(
  values: RawOptions,
  origins: Origins,
  name: OptionName,
  value: string | undefined,
  where: string,
): void {
  const kind = OPTIONS[name].kind;
  const repeats = where.startsWith("kernel");
  if (value !== undefined && value.trim() === "") {
    throw usageError(
      `${where} is empty: give it a value, or remove it (an empty value does not unset an option)`,
    );
  }
  const earlier = origins[name];
  const before = JSON.stringify(values[name]);
  if (kind === "list" && !repeats) {
    values[name] = value!.split(/\s+/).filter((v) => v !== "");
  } else {
    storeValue(values, name, kind, value, where);
  }
  if (
    earlier !== undefined && !(kind === "list" && repeats) &&
    before !== JSON.stringify(values[name])
  ) {
    throw usageError(`${earlier} and ${where} set the same option differently`);
  }
  origins[name] ??= where;
}

/**
 * Reads the `assisted.*` parameters of a kernel command line (a repeated key
 * makes a list; the key in any case, `-` or `_`). An unknown `assisted.*` key
 * goes to `warn`: the initramfs's /init reads its own, and a typo is not
 * worth refusing to boot; so does a parameter that looks like a pin without
 * being one (`kernel_sha256=`). An empty value is a usage error. `origins`
 * is told how each option was spelled.
 */
export function readKernelCmdline(
  cmdline: string,
  warn: (message: string) => void,
  origins: Origins = {},
): RawOptions {
  const raw: RawOptions = {};
  // The kernel's own split: an "=" first in an argument is part of its name.
  for (const { param, value } of parseKernelCmdline(cmdline)) {
    if (!param.toLowerCase().startsWith("assisted.")) {
      const pin = lookalike(param, PINS);
      if (pin) {
        warn(
          `ignoring kernel command line parameter ${param}: not read (did you mean assisted.${
            pin.replaceAll("-", "_")
          }?)`,
        );
      }
      continue;
    }
    const name = optionOf(param, "assisted.");
    if (name === undefined) {
      const key = param.slice(9).toLowerCase().replaceAll("_", "-");
      if (!CMDLINE_OTHERS.has(key)) {
        warn(
          `ignoring unknown kernel command line parameter ${param}${
            hint(param.slice(9), (n) => `assisted.${n.replaceAll("-", "_")}`)
          }`,
        );
      }
      continue;
    }
    store(raw, origins, name, value, `kernel command line parameter ${param}`);
  }
  return raw;
}

/**
 * Reads `ASSISTED_*` pairs; a key names its option in any case, `-` or `_`
 * (`assisted_kernel_sha256`). In a config file (`strict`) every key must name
 * an option: an unknown one is an error (exit 2), with a hint when it looks
 * like one of ours (`KERNEL_SHA256`, `ASSISTED_KERNEL_SHA`): a typo must not
 * silently drop a pin. In the environment, which other programs share, an
 * unknown `ASSISTED_*` variable, or one that looks like a pin, is a warning.
 * An empty value is an error in both.
 */
function readAssistedPairs(
  pairs: Iterable<[string, string]>,
  where: string,
  options: { strict: boolean; warn: (message: string) => void },
): { values: RawOptions; origins: Origins } {
  const values: RawOptions = {};
  const origins: Origins = {};
  const spell = (name: OptionName) =>
    `ASSISTED_${name.toUpperCase().replaceAll("-", "_")}`;
  for (const [key, value] of pairs) {
    const name = optionOf(key, "ASSISTED_");
    if (name !== undefined) {
      store(values, origins, name, value, `${where} ${key}`);
      continue;
    }
    const assisted = key.toUpperCase().startsWith("ASSISTED_");
    if (assisted && ENV_OTHERS.has(optionOfKey(key))) continue;
    if (options.strict) {
      throw usageError(`${where}: unknown setting ${key}${hint(key, spell)}`);
    }
    if (assisted || lookalike(key, PINS)) {
      options.warn(
        `ignoring ${where} ${key}: ${assisted ? "no such option" : "not read"}${
          hint(key, spell)
        }`,
      );
    }
  }
  return { values, origins };
}

function optionOfKey(key: string): string {
  return key.slice(9).toLowerCase().replaceAll("_", "-");
}

/**
 * Reads the environment, kernel command line and config file layers under
 * the flags already read. The config file is `--config` (from the flags, the
 * environment or the command line), else {@linkcode DEFAULT_CONFIG_FILE} when
 * it exists. Warnings (an unknown kernel parameter, a config file holding a
 * token that others can read) go to `warn` as they are found.
 */
export function readLayers(
  flags: RawOptions,
  sources: ConfigSources,
  warn: (message: string) => void,
): Layers {
  const files = fileAccess(sources);
  const vars = sources.env ?? Deno.env.toObject();
  const origins = {
    flags: flagOrigins(flags),
    env: {} as Origins,
    file: {} as Origins,
    cmdline: {} as Origins,
  };
  const read1 = readAssistedPairs(
    Object.entries(vars),
    "environment variable",
    { strict: false, warn },
  );
  const env = read1.values;
  origins.env = read1.origins;
  const hostCmdline = kernelCmdline(sources, vars, files);
  const cmdline = readKernelCmdline(hostCmdline, warn, origins.cmdline);
  const given = (flags.config ?? env.config ?? cmdline.config) as
    | string
    | undefined;
  const path = given ?? DEFAULT_CONFIG_FILE;
  const read = readTrustedFile(files, path);
  let file: RawOptions = {};
  if ("untrusted" in read) {
    // The default one too: whoever can put it there decides the boot.
    throw usageError(untrustedRefusal(`Config file ${path}`, read.untrusted));
  }
  if ("error" in read) {
    // The default config file is optional.
    if (given !== undefined) {
      throw usageError(`Cannot read config file ${path}: ${read.error}`);
    }
  } else {
    const fromFile = readAssistedPairs(
      parseEnvFile(read.text, path),
      `config file ${path}`,
      { strict: true, warn },
    );
    file = fromFile.values;
    origins.file = fromFile.origins;
    // A secret in a file others can read is no secret: say so (the run goes
    // on, the file may be on a read-only medium).
    if (file.token !== undefined && sharedMode(read.mode)) {
      warn(
        `Config file ${path} holds ASSISTED_TOKEN and is readable by other users ${
          chmodAdvice(path, read.mode!)
        }`,
      );
    }
  }
  const meminfoFile = vars.ASSISTED_MEMINFO_FILE ?? "/proc/meminfo";
  return { flags, env, file, cmdline, origins, hostCmdline, meminfoFile };
}

/** `--name` for every flag given. */
function flagOrigins(flags: RawOptions): Origins {
  const origins: Origins = {};
  for (const name of Object.keys(flags) as OptionName[]) {
    origins[name] = `--${name}`;
  }
  return origins;
}

/** Merges the layers: flag > env > file > cmdline, each option (a list too) taken whole from one layer. */
export function mergeLayers(layers: Layers): RawOptions {
  return firstSet([
    layers.flags,
    layers.env,
    layers.file,
    layers.cmdline,
  ]) as RawOptions;
}

/** Where each merged option was set: the spelling in the layer {@linkcode mergeLayers} took it from. */
export function mergeOrigins(layers: Layers): Origins {
  const { flags, env, file, cmdline } = layers.origins;
  return firstSet([flags, env, file, cmdline]) as Origins;
}

/** What a warning calls the file each secret-holding option names. */
const SECRET_FILES: Partial<Record<OptionName, string>> = {
  "token-file": "Token file",
  "refresh-token-file": "Refresh token file",
};

/**
 * Reads the files the merged options name ({@linkcode NAMED_FILE_OPTIONS}); a
 * failure, or a path another user controls (the file is then not read), is
 * kept for validation to report, not thrown. A token file others can read is
 * reported to `warn`.
 */
export function readNamedFiles(
  merged: RawOptions,
  sources: ConfigSources,
  warn: (message: string) => void,
): NamedFiles {
  const access = fileAccess(sources);
  const files: NamedFiles = {};
  for (const name of NAMED_FILE_OPTIONS) {
    const value = merged[name];
    if (typeof value !== "string") continue;
    const path = value.trim();
    const read = files[path] ??= readTrustedFile(access, path);
    const subject = SECRET_FILES[name];
    if (subject && "text" in read && sharedMode(read.mode)) {
      warn(
        `${subject} ${path} is readable by other users ${
          chmodAdvice(path, read.mode!)
        }`,
      );
    }
  }
  return files;
}
