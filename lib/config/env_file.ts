/**
 * The `KEY=VALUE` file format of the config file (`--config`), read by the
 * bootloader and written by the Ignition generator.
 *
 * The generator's files are read by two parsers: the bootloader's
 * {@linkcode parseEnvFile} and systemd's `EnvironmentFile=` (the unit reads
 * `download.env` that way, and config.env is valid as one). They agree on
 * what {@linkcode formatEnvLine} writes, a subset of both syntaxes:
 *
 * - one line per value, no control character (a newline cannot be written)
 *   nor U+2028/U+2029 (line and paragraph separators);
 * - a value without `"` or `\` between double quotes (systemd treats only
 *   those two specially there: `$` and `` ` `` are literal, EnvironmentFile=
 *   expands no variables);
 * - else, a value without `'` between single quotes (literal for both);
 * - a value with `'` and also `"` or `\` is refused.
 *
 * @example
 * ```ts
 * formatEnvLine("ASSISTED_IPXE_URL", "http://h/x?a='1'"); // `ASSISTED_IPXE_URL="http://h/x?a='1'"\n`
 * formatEnvLine("ASSISTED_SET", 'a="b c"');               // `ASSISTED_SET='a="b c"'\n`
 * ```
 *
 * @module
 */

import { usageError } from "./option_table.ts";

/** Parses a `KEY=VALUE` file (comments with `#`, optional single or double quotes). */
export function parseEnvFile(text: string, path: string): [string, string][] {
  const pairs: [string, string][] = [];
  text.split("\n").forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(trimmed);
    if (!m) {
      throw usageError(
        `Config file ${path} line ${i + 1}: expected KEY=VALUE`,
      );
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

/**
 * Why `value` cannot be written by {@linkcode formatEnvLine}, or undefined
 * when it can.
 */
export function unwritableReason(value: string): string | undefined {
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) {
    return "it holds a newline or another control character";
  }
  // parseEnvFile's line pattern stops at them, as JavaScript's `.` does.
  if (/[\u2028\u2029]/.test(value)) {
    return "it holds a Unicode line or paragraph separator";
  }
  if (!value.isWellFormed()) return "it is not valid Unicode";
  if (/["\\]/.test(value) && value.includes("'")) {
    return `it holds a ' and also a " or \\`;
  }
  return undefined;
}

/**
 * One `KEY="VALUE"` line (with its newline) that the bootloader and systemd
 * read back as exactly `value`; a value outside the subset both agree on (see
 * the module documentation) is a usage error naming `what`.
 */
export function formatEnvLine(key: string, value: string, what = key): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
    throw usageError(`${key} is not a variable name`);
  }
  const why = unwritableReason(value);
  if (why !== undefined) {
    throw usageError(
      `${what} cannot be written to an environment file: ${why}`,
    );
  }
  const q = /["\\]/.test(value) ? "'" : '"';
  return `${key}=${q}${value}${q}\n`;
}
