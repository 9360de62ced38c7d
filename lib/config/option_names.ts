/**
 * How a key of a layer names an option: after its prefix (`ASSISTED_`,
 * `assisted.`) in any case, with `-` or `_`; and which option a key that
 * names none looks like (`KERNEL_SHA256`, `ASISTED_KERNEL_SHA256`), for the
 * hints and warnings that keep a typo from silently dropping a pin.
 *
 * @module
 */

import { FLAG_ONLY, type OptionName, OPTIONS } from "./options.ts";

/** Option names by their letters and digits alone (`KERNELSHA256`), for typo hints. */
const SQUASHED = new Map(
  (Object.keys(OPTIONS) as OptionName[]).filter((name) =>
    !FLAG_ONLY.includes(name)
  ).map((name) => [name.replace(/[^a-z0-9]/g, "").toUpperCase(), name]),
);

/**
 * Options whose silent loss would weaken the boot: a name that looks like
 * one of them and is not read is worth a warning wherever it appears.
 */
export const PINS: readonly OptionName[] = [
  "kernel-sha256",
  "initrd-sha256",
  "artifact-sha256",
  "ca-cert-sha256",
];

/** The option `key` names after `prefix` (both in any case, `-` or `_`), or undefined. */
export function optionOf(key: string, prefix: string): OptionName | undefined {
  if (!key.toLowerCase().startsWith(prefix.toLowerCase())) return undefined;
  const name = key.slice(prefix.length).toLowerCase().replaceAll("_", "-");
  return name in OPTIONS && !FLAG_ONLY.includes(name as OptionName)
    ? name as OptionName
    : undefined;
}

/** The option `key` looks like a misspelling of (`KERNEL_SHA256`, `ASISTED_KERNEL_SHA256`), if any. */
export function lookalike(
  key: string,
  only?: readonly OptionName[],
): OptionName | undefined {
  const squashed = key.replace(/[^A-Za-z0-9]/g, "").toUpperCase();
  let best: OptionName | undefined;
  let bestLength = 0;
  for (const [letters, name] of SQUASHED) {
    if (only && !only.includes(name)) continue;
    // The longest name that ends the key (CACERTSHA256 over CACERT…).
    if (squashed.endsWith(letters) && letters.length > bestLength) {
      best = name;
      bestLength = letters.length;
    }
  }
  return best;
}

/** ` (did you mean ASSISTED_KERNEL_SHA256?)` for a key that looks like an option, else "". */
export function hint(key: string, spell: (name: OptionName) => string): string {
  const name = lookalike(key);
  return name ? ` (did you mean ${spell(name)}?)` : "";
}
