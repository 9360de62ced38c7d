/**
 * What the bootloader on a target will make of its configuration: its own
 * parser (lib/config/) reads the config file the run script passes with
 * `--config`, the files it names and the kernel command line, from the files
 * an Ignition config writes instead of a disk. The generators use it to
 * refuse, before anything is built, a configuration the bootloader would
 * refuse on the target: the unit does not retry exit 2, so such an image
 * could never boot.
 *
 * @module
 */

import {
  type CheckedOption,
  type Config,
  OPTIONS,
  readConfig,
  readKernelCmdline,
  VALUE_CHECKS,
} from "../lib/config/mod.ts";
import { BootError, ExitCode } from "../lib/errors.ts";
import type { TargetFile } from "./mod.ts";
import { modeProblem } from "../lib/path_trust.ts";

/** Options of {@linkcode bootloaderView}. */
export interface ViewOptions {
  /** Path of the config file on the target (what the run script passes to `--config`). */
  configPath: string;
  /** The target's kernel command line (default: none). */
  cmdline?: string;
}

/** What the bootloader would run with, and the warnings it would log. */
export interface BootloaderView {
  /** The validated configuration. */
  config: Config;
  /** Warnings (an unknown `assisted.*` kernel parameter, say). */
  warnings: string[];
}

/**
 * Parses `files` (target path → contents and mode) the way the bootloader
 * will on the target, with no environment; a configuration it would refuse is
 * a usage error saying so.
 */
export function bootloaderView(
  files: readonly TargetFile[],
  options: ViewOptions,
): BootloaderView {
  const byPath = new Map(files.map((f) => [f.path, f]));
  const warnings: string[] = [];
  let parsed;
  try {
    parsed = readConfig(["--config", options.configPath], {
      env: {},
      cmdline: options.cmdline ?? "",
      readTextFile: (path) => {
        const file = byPath.get(path);
        if (!file) throw new Deno.errors.NotFound(path);
        return file.contents;
      },
      fileMode: (path) => byPath.get(path)?.mode,
      // The target's files, not this machine's: root's, in a directory
      // only root may write, so their modes alone decide.
      untrustedPart: (path) => {
        const file = byPath.get(path);
        return file && modeProblem(path, file.mode);
      },
      warn: (message) => warnings.push(message),
    });
  } catch (err) {
    if (!(err instanceof BootError)) throw err;
    throw new BootError(
      `The bootloader would refuse this config: ${err.message}`,
      ExitCode.Usage,
    );
  }
  if (parsed.kind !== "run") throw new Error("--config parsed as --help");
  return { config: parsed.config, warnings };
}

/**
 * Checks the `assisted.*` parameters of a kernel command line on their own
 * (no config file to read them with): each value as the bootloader checks it.
 * Returns the bootloader's warnings (unknown `assisted.*` keys).
 */
export function checkKernelParameters(cmdline: string): string[] {
  const warnings: string[] = [];
  const raw = readKernelCmdline(cmdline, (m) => warnings.push(m));
  for (const [name, value] of Object.entries(raw)) {
    if (!(name in VALUE_CHECKS) || typeof value === "boolean") continue;
    const what = `kernel command line parameter assisted.${
      name.replaceAll("-", "_")
    }`;
    const option = name as CheckedOption;
    const values = OPTIONS[option].kind === "list"
      ? value as string[]
      : [(value as string).trim()];
    for (const v of values) VALUE_CHECKS[option](v, what);
  }
  return warnings;
}
