/**
 * iPXE settings: typed values in a tree of blocks, and `${…}` expansion
 * (`core/settings.c`). Values are binary strings (see `bytes.ts`); each type
 * stores and shows them as `setting_types.ts` says.
 *
 * Blocks: the root (where `set x` stores), `net0` (alias `netX`) with its
 * child `net0.dhcp`, and any block `set blk/x` creates. An unscoped name is
 * searched in the root, then the built-ins, then every other block in
 * creation order, like iPXE's depth-first settings tree.
 *
 * @module
 */

import {
  formatSettingValue,
  isSettingType,
  parseSettingValue,
  SettingParseError,
  type SettingType,
  type StoredSetting,
} from "./setting_types.ts";

/** Types of iPXE's predefined named settings (used by `set` and `${name}`). */
const NAMED_TYPES: Record<string, SettingType> = {
  mac: "hex",
  hwaddr: "hex",
  ip: "ipv4",
  netmask: "ipv4",
  gateway: "ipv4",
  dns: "ipv4",
  "next-server": "ipv4",
  "dhcp-server": "ipv4",
  syslog: "ipv4",
  ip6: "ipv6",
  uuid: "uuid",
  "user-id": "hex",
  priority: "int8",
  "skip-san-boot": "uint8",
  "san-drive": "uint8",
  "san-filename": "string",
  unixtime: "uint32",
  busloc: "uint32",
  busid: "hex",
  mtu: "int16",
};

/** A parsed `[block/]name[:type]`. */
export interface SettingName {
  /** Block name (`net0`, `net0.dhcp`), or undefined for the unscoped search / root. */
  block?: string;
  /** Setting name. */
  name: string;
  /** Explicit `:type`, when given (may be unknown: see {@linkcode SettingName.badType}). */
  type?: SettingType;
  /** The `:type` given is not a type iPXE knows. */
  badType?: string;
}

/** Splits `[block/]name[:type]` like iPXE `parse_setting_name` (first `/`, then first `:`). */
export function parseSettingName(text: string): SettingName {
  let block: string | undefined;
  let rest = text;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    block = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  }
  const out: SettingName = { name: rest };
  if (block !== undefined) out.block = canonicalBlock(block);
  const colon = rest.indexOf(":");
  if (colon >= 0) {
    out.name = rest.slice(0, colon);
    const t = rest.slice(colon + 1);
    if (isSettingType(t)) out.type = t;
    else out.badType = t;
  }
  return out;
}

function canonicalBlock(block: string): string {
  if (block === "netX") return "net0";
  if (block.startsWith("netX.")) return `net0${block.slice(4)}`;
  return block;
}

/** Default type of a named setting: its predefined type, else string. */
export function defaultType(name: string): SettingType {
  return NAMED_TYPES[name] ?? "string";
}

/** Options for {@linkcode Settings}. */
export interface SettingsOptions {
  /** Built-in values computed on demand (`buildarch`, `cwuri`, …), searched after the root block. */
  builtin?: (name: string) => StoredSetting | undefined;
  /** Cap on substitutions in one {@linkcode Settings.expand} call. */
  maxExpansions?: number;
  /** Cap on the length of an expanded string. */
  maxLength?: number;
  /** Cap on the bytes all stored settings hold together. */
  maxTotalBytes?: number;
}

/** Thrown when an expansion or the settings store exceeds its caps (a self-referencing value). */
export class ExpansionLimitError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ExpansionLimitError";
  }
}

/** The settings tree of one interpreter run. */
export class Settings {
  #blocks = new Map<string, Map<string, StoredSetting>>();
  #builtin: (name: string) => StoredSetting | undefined;
  #maxExpansions: number;
  #maxLength: number;
  #maxTotal: number;
  #totalBytes = 0;

  /** Creates the tree with an empty root, `net0` and `net0.dhcp`. */
  constructor(options: SettingsOptions = {}) {
    this.#builtin = options.builtin ?? (() => undefined);
    this.#maxExpansions = options.maxExpansions ?? 10_000;
    this.#maxLength = options.maxLength ?? 1 << 20;
    this.#maxTotal = options.maxTotalBytes ?? 16 << 20;
    for (const b of ["", "net0", "net0.dhcp"]) this.#blocks.set(b, new Map());
  }

  #searchOrder(
    block: string | undefined,
  ): Array<Map<string, StoredSetting> | "builtin"> | undefined {
    if (block === undefined || block === "") {
      const out: Array<Map<string, StoredSetting> | "builtin"> = [
        this.#blocks.get("")!,
        "builtin",
      ];
      for (const [name, map] of this.#blocks) if (name !== "") out.push(map);
      return out;
    }
    if (block === "builtin") return ["builtin"];
    if (!this.#blocks.has(block)) return undefined;
    const out: Array<Map<string, StoredSetting> | "builtin"> = [];
    for (const [name, map] of this.#blocks) {
      if (name === block || name.startsWith(`${block}.`)) out.push(map);
    }
    return out;
  }

  /** Fetches the stored value of a setting (searching like iPXE), or undefined. */
  fetch(block: string | undefined, name: string): StoredSetting | undefined {
    const order = this.#searchOrder(block);
    if (!order) return undefined;
    for (const entry of order) {
      const found = entry === "builtin" ? this.#builtin(name) : entry.get(name);
      if (found) return found;
    }
    return undefined;
  }

  /** Formatted value of `[block/]name[:type]`, or undefined when unset / unknown / unformattable. */
  fetchFormatted(fullName: string): string | undefined {
    const parsed = parseSettingName(fullName);
    if (parsed.badType !== undefined) return undefined;
    const stored = this.fetch(parsed.block, parsed.name);
    if (!stored) return undefined;
    return formatSettingValue(parsed.type ?? stored.type, stored.raw);
  }

  /** Stores raw bytes (creating the block if needed); an empty raw value deletes. */
  storeRaw(
    block: string | undefined,
    name: string,
    stored: StoredSetting | undefined,
  ): void {
    const key = block ?? "";
    let map = this.#blocks.get(key);
    if (!map) {
      map = new Map();
      this.#blocks.set(key, map);
    }
    const before = map.get(name)?.raw.length ?? 0;
    const after = stored?.raw.length ?? 0;
    if (this.#totalBytes - before + after > this.#maxTotal) {
      throw new ExpansionLimitError(
        `settings would hold more than ${this.#maxTotal} bytes`,
      );
    }
    this.#totalBytes += after - before;
    if (!stored || stored.raw === "") map.delete(name);
    else map.set(name, stored);
  }

  /**
   * `set`-style store of a formatted value: `[block/]name[:type]` with the
   * explicit type, the named setting's type, or string. Empty deletes.
   * Throws {@linkcode SettingParseError} for a bad value or type.
   */
  storeFormatted(fullName: string, value: string | undefined): void {
    const parsed = parseSettingName(fullName);
    if (parsed.badType !== undefined) {
      throw new SettingParseError(`unknown setting type "${parsed.badType}"`);
    }
    const type = parsed.type ?? defaultType(parsed.name);
    if (value === undefined || value === "") {
      this.storeRaw(parsed.block, parsed.name, undefined);
      return;
    }
    this.storeRaw(parsed.block, parsed.name, {
      raw: parseSettingValue(type, value),
      type,
    });
  }

  /**
   * Expands `${…}` in a string with iPXE's algorithm: find the first `}`
   * after the most recent `${`, substitute, rescan from the start, until no
   * `${…}` remains. Unknown settings, blocks and types expand to "".
   * Throws {@linkcode ExpansionLimitError} past the caps.
   */
  expand(text: string): string {
    let str = text;
    for (let count = 0;; count++) {
      // The first "}" after the first "${", and the last "${" before it: the
      // same pair as iPXE's character-by-character scan, found natively.
      const first = str.indexOf("${");
      if (first < 0) return str;
      const end = str.indexOf("}", first + 2);
      if (end < 0) return str;
      const start = str.lastIndexOf("${", end - 1);
      if (count >= this.#maxExpansions) {
        throw new ExpansionLimitError(
          `expanding "${
            text.slice(0, 80)
          }" needed more than ${this.#maxExpansions} substitutions (a setting refers to itself?)`,
        );
      }
      // The value is a C string: a NUL byte ends it.
      const value = (this.fetchFormatted(str.slice(start + 2, end)) ?? "")
        .split("\0")[0];
      str = str.slice(0, start) + value + str.slice(end + 1);
      if (str.length > this.#maxLength) {
        throw new ExpansionLimitError(
          `expanding "${
            text.slice(0, 80)
          }" grew past ${this.#maxLength} bytes (a setting refers to itself?)`,
        );
      }
    }
  }
}
