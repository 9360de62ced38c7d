/**
 * Option tables: one description of a program's options gives its flags
 * (through `node:util` `parseArgs`), the environment variables that stand in
 * for them and the rows of its `--help`. The bootloader (lib/config/) and its
 * generators (ignition/, image/) read their options with these functions, so
 * a flag, a variable and a boolean mean the same thing in all three.
 *
 * @example
 * ```ts
 * import { firstSet, parseFlags, readEnv } from "./option_table.ts";
 * const TABLE = {
 *   output: { kind: "string", arg: "PATH", env: "OUT", help: "output file" },
 *   verbose: { kind: "boolean", short: "v", help: "debug logging" },
 * } as const;
 * const values = firstSet([
 *   parseFlags(["-v"], TABLE),
 *   readEnv(Object.entries({ OUT: "x" }), TABLE, { where: "environment variable" }),
 * ]); // { verbose: true, output: "x" }
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BootError, ExitCode } from "../errors.ts";

/** How an option's value is read: one string, a boolean, or a repeatable list. */
export type OptionKind = "string" | "boolean" | "list";

/** One row of an option table. */
export interface OptionSpec {
  /** String, boolean or repeatable list. */
  kind: OptionKind;
  /** One-letter flag (`-v`). */
  short?: string;
  /** One line for `--help` (and the generated docs). */
  help: string;
  /** Name of the value in `--help` (`URL`, `PATH`). */
  arg?: string;
  /** Environment variable, when it is not the table's prefix + upper snake case of the name. */
  env?: string;
}

/** Options by name (the flag without `--`). */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** A value as read: a string, a boolean, or the strings of a list option. */
export type OptionValue = string | boolean | string[];

/** Values read from one source (a layer), by option name; unset options are absent. */
export type OptionValues = Partial<Record<string, OptionValue>>;

/** A usage error (exit 2), the first letter upper-cased whoever built the message. */
export function usageError(message: string): BootError {
  return new BootError(
    message.replace(/^[a-z]/, (c) => c.toUpperCase()),
    ExitCode.Usage,
  );
}

/**
 * Reads flags: every option of `table` is a `--name` (and `-short`), a list
 * option repeatable. Unknown flags and stray arguments are usage errors
 * pointing at `--help`.
 */
export function parseFlags(argv: string[], table: OptionTable): OptionValues {
  const options: Record<
    string,
    { type: "string" | "boolean"; multiple?: boolean; short?: string }
  > = {};
  for (const [name, spec] of Object.entries(table)) {
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
      throw usageError(`Unexpected argument "${positionals[0]}" (see --help)`);
    }
    return values as OptionValues;
  } catch (err) {
    if (err instanceof BootError) throw err;
    // parseArgs: "Unknown option '--x'. To specify a positional argument, …"
    const message = err instanceof Error
      ? err.message.split("\n")[0].split(". To ")[0]
      : String(err);
    throw usageError(`${message.replace(/\.$/, "")} (see --help)`);
  }
}

/** True for the words a boolean accepts as true; false for the false ones; undefined otherwise. */
function booleanWord(value: string): boolean | undefined {
  const v = value.toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off", ""].includes(v)) return false;
  return undefined;
}

/**
 * Stores one textual value of `name` into `values`: a boolean from
 * `1/0, true/false, yes/no, on/off` (no value at all means true), a list
 * value appended, a string as it is. `where` names the source in errors.
 */
export function storeValue(
  values: OptionValues,
  name: string,
  kind: OptionKind,
  value: string | undefined,
  where: string,
): void {
  if (kind === "boolean") {
    const b = booleanWord(value ?? "1");
    if (b === undefined) {
      throw usageError(
        `${where} must be a boolean (1/0, true/false), got "${value}"`,
      );
    }
    values[name] = b;
  } else if (kind === "list") {
    if (value === undefined) throw usageError(`${where} needs a value`);
    values[name] = [...((values[name] as string[] | undefined) ?? []), value];
  } else {
    if (value === undefined) throw usageError(`${where} needs a value`);
    values[name] = value;
  }
}

/** The environment variable of an option: `spec.env`, else `prefix` + the name in upper snake case. */
export function envName(name: string, spec: OptionSpec, prefix = ""): string {
  return spec.env ?? prefix + name.toUpperCase().replaceAll("-", "_");
}

/** How {@linkcode readEnv} maps variables to options. */
export interface ReadEnvOptions {
  /** Names the source in errors, e.g. "environment variable" (the key is appended). */
  where: string;
  /** Prefix of the derived variable names (`ASSISTED_`); default none. */
  prefix?: string;
  /** Options never read from the environment (`help`). */
  flagOnly?: readonly string[];
  /** Rewrites a key before it is looked up (for case-insensitive names). */
  normalizeKey?: (key: string) => string;
  /** Called with a key that has the prefix but names no option (to refuse or ignore it). */
  onUnknown?: (key: string) => void;
  /** An empty value counts as unset (make passes every variable, set or not). */
  emptyIsUnset?: boolean;
}

/**
 * Reads `KEY=VALUE` pairs (the environment, a config file) into option
 * values. A list option's value is split on whitespace; a later pair of the
 * same option replaces an earlier one.
 */
export function readEnv(
  pairs: Iterable<[string, string | undefined]>,
  table: OptionTable,
  options: ReadEnvOptions,
): OptionValues {
  const prefix = options.prefix ?? "";
  const byKey = new Map<string, string>();
  for (const [name, spec] of Object.entries(table)) {
    if (!options.flagOnly?.includes(name)) {
      byKey.set(envName(name, spec, prefix), name);
    }
  }
  const values: OptionValues = {};
  for (const [key, value] of pairs) {
    const name = byKey.get(options.normalizeKey?.(key) ?? key);
    if (name === undefined) {
      if (key.startsWith(prefix)) options.onUnknown?.(key);
      continue;
    }
    if (value === undefined || (options.emptyIsUnset && value === "")) {
      continue;
    }
    const kind = table[name].kind;
    if (kind === "list") {
      values[name] = value.split(/\s+/).filter((v) => v !== "");
    } else {
      storeValue(values, name, kind, value, `${options.where} ${key}`);
    }
  }
  return values;
}

/** Merges layers, first layer first: an option is taken whole from the first layer that sets it. */
export function firstSet(layers: readonly OptionValues[]): OptionValues {
  const merged: OptionValues = {};
  for (const layer of [...layers].reverse()) {
    for (const [name, value] of Object.entries(layer)) {
      if (value !== undefined) merged[name] = value;
    }
  }
  return merged;
}

/** Layout of {@linkcode helpRows}. */
export interface HelpRowsOptions {
  /** Width of the flag column (default 34). */
  flagWidth?: number;
  /** Adds a column with each option's environment variable, this wide (default: no column). */
  envWidth?: number;
  /** Prefix of derived variable names (with `envWidth`). */
  prefix?: string;
  /** What the variable column says for an option that has none (with `envWidth`). */
  noEnv?: (name: string) => string | undefined;
}

/** One `--help` line per option: the flag with its value, optionally the variable, then the help. */
export function helpRows(
  table: OptionTable,
  options: HelpRowsOptions = {},
): string[] {
  return Object.entries(table).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${
      spec.arg ? ` ${spec.arg}` : ""
    }`;
    let row = `  ${flag.padEnd(options.flagWidth ?? 34)} `;
    if (options.envWidth !== undefined) {
      const env = options.noEnv?.(name) ?? envName(name, spec, options.prefix);
      row += `${env.padEnd(options.envWidth)} `;
    }
    return row + spec.help;
  });
}
