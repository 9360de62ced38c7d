/**
 * Configuration: command-line flags, `ASSISTED_*` environment variables, a
 * `KEY=VALUE` config file and `assisted.*` kernel command-line parameters.
 *
 * Three steps, one module each:
 *
 * 1. read the layers, and the files the options name (layers.ts), through
 *    injected {@linkcode ConfigSources};
 * 2. merge them: flag > env > file > cmdline, a list taken whole from one
 *    layer (layers.ts);
 * 3. validate the result into a {@linkcode Config} (validate.ts): pure, it
 *    returns the secrets it found.
 *
 * The option table and `--help` are options.ts; the config file format is
 * env_file.ts. {@linkcode parseConfig} runs the steps for the bootloader and
 * hands warnings and secrets to the logger; {@linkcode readConfig} runs them
 * for a caller that keeps both (a generator checking what a target will read).
 *
 * @example
 * ```ts
 * const r = parseConfig(["--ipxe-url", "http://h/boot.ipxe", "--print-plan"], { env: {}, cmdline: "" });
 * ```
 *
 * @module
 */

import { addSecret, log } from "../log.ts";
import {
  type ConfigSources,
  mergeLayers,
  mergeOrigins,
  readFlags,
  readLayers,
  readNamedFiles,
} from "./layers.ts";
import { helpText, VERSION } from "./options.ts";
import { type Config, validateConfig } from "./validate.ts";

export {
  DEFAULT_API_URL,
  DEFAULT_CONFIG_FILE,
  DEFAULT_SSO_URL,
  DEFAULT_WORK_DIR,
  FLAG_ONLY,
  helpText,
  type OptionName,
  OPTIONS,
  type OptionSpec,
  VERSION,
} from "./options.ts";
export {
  type ConfigSources,
  type FileRead,
  type Layers,
  mergeLayers,
  mergeOrigins,
  NAMED_FILE_OPTIONS,
  type NamedFiles,
  type Origins,
  type RawOptions,
  readFlags,
  readKernelCmdline,
  readLayers,
  readNamedFiles,
  splitKernelCmdline,
} from "./layers.ts";
export { formatEnvLine, parseEnvFile, unwritableReason } from "./env_file.ts";
export {
  type CheckedOption,
  checkSha256,
  checkUrl,
  checkValue,
  type Config,
  MAX_TIMEOUT_SECONDS,
  type Mode,
  normalizeMac,
  validateConfig,
  type Validated,
  type ValidateOptions,
  VALUE_CHECKS,
} from "./validate.ts";

/** What a caller asked for besides booting. */
export type ParseResult = { kind: "help"; text: string } | {
  kind: "version";
  text: string;
} | {
  kind: "run";
  config: Config;
  /** Tokens the configuration holds (registered with the logger by {@linkcode parseConfig}). */
  secrets: string[];
};

/** Options of {@linkcode readConfig}: where to read from, where warnings go. */
export interface ReadConfigOptions extends ConfigSources {
  /** Receives each warning as it is found (default: dropped). */
  warn?: (message: string) => void;
}

/**
 * Reads, merges and validates the configuration from every layer, touching
 * nothing but `options`' sources: warnings go to `options.warn`, secrets are
 * returned.
 */
export function readConfig(
  argv: string[],
  options: ReadConfigOptions = {},
): ParseResult {
  const warn = options.warn ?? (() => {});
  const flags = readFlags(argv);
  if (flags.help) return { kind: "help", text: helpText() };
  if (flags.version) {
    return { kind: "version", text: `assisted-bootloader ${VERSION}` };
  }
  const layers = readLayers(flags, options, warn);
  const merged = mergeLayers(layers);
  const files = readNamedFiles(merged, options, warn);
  const { config, secrets } = validateConfig(merged, files, {
    origins: mergeOrigins(layers),
  });
  return {
    kind: "run",
    config: {
      ...config,
      hostCmdline: layers.hostCmdline,
      meminfoFile: layers.meminfoFile,
    },
    secrets,
  };
}

/**
 * The bootloader's configuration: {@linkcode readConfig} with its warnings
 * logged and its secrets registered with the logger, so no log line shows
 * them.
 */
export function parseConfig(
  argv: string[],
  sources: ConfigSources = {},
): ParseResult {
  const result = readConfig(argv, {
    ...sources,
    warn: (message) => log.warn(message),
  });
  if (result.kind === "run") result.secrets.forEach(addSecret);
  return result;
}
