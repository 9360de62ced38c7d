/**
 * iPXE settings: typed values in a tree of blocks, and `${…}` expansion
 * (`core/settings.c`). Values are binary strings (see `bytes.ts`).
 *
 * Blocks: the root (where `set x` stores), `net0` (alias `netX`) with its
 * child `net0.dhcp`, and any block `set blk/x` creates. An unscoped name is
 * searched in the root, then the built-ins, then every other block in
 * creation order, like iPXE's depth-first settings tree.
 *
 * @module
 */

import { strtoul } from "./bytes.ts";

/** A setting type name iPXE knows. */
export type SettingType =
  | "string"
  | "uristring"
  | "hex"
  | "hexhyp"
  | "hexraw"
  | "int8"
  | "int16"
  | "int32"
  | "uint8"
  | "uint16"
  | "uint32"
  | "ipv4"
  | "ipv6"
  | "uuid"
  | "guid"
  | "base64"
  | "busdevfn";

const TYPES: ReadonlySet<string> = new Set<SettingType>([
  "string",
  "uristring",
  "hex",
  "hexhyp",
  "hexraw",
  "int8",
  "int16",
  "int32",
  "uint8",
  "uint16",
  "uint32",
  "ipv4",
  "ipv6",
  "uuid",
  "guid",
  "base64",
  "busdevfn",
]);

/** A stored setting: raw bytes and the type they were stored with. */
export interface StoredSetting {
  /** Raw value (binary string). */
  raw: string;
  /** Type used to format it when no `:type` is asked for. */
  type: SettingType;
}

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

const INT_WIDTH: Record<string, number> = {
  int8: 1,
  int16: 2,
  int32: 4,
  uint8: 1,
  uint16: 2,
  uint32: 4,
};

/** Thrown when a value does not parse as the requested type. */
export class SettingParseError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SettingParseError";
  }
}

/** Returns true when `name` is a setting type iPXE knows. */
export function isSettingType(name: string): name is SettingType {
  return TYPES.has(name);
}

function hexByte(code: number): string {
  return code.toString(16).padStart(2, "0");
}

function parseHex(value: string, sep: string): string {
  let out = "";
  let i = 0;
  let count = 0;
  while (i < value.length) {
    if (count > 0 && sep !== "") {
      if (value[i] !== sep) {
        throw new SettingParseError(`invalid hex value "${value}"`);
      }
      i++;
    }
    const pair = value.slice(i, i + 2);
    if (!/^[0-9a-fA-F]{2}$/.test(pair)) {
      throw new SettingParseError(`invalid hex value "${value}"`);
    }
    out += String.fromCharCode(parseInt(pair, 16));
    i += 2;
    count++;
  }
  return out;
}

function numericValue(raw: string, signed: boolean): bigint | undefined {
  if (raw.length > 8) {
    // iPXE accepts longer values only when the extra leading bytes are padding.
    const pad = signed && raw.charCodeAt(0) & 0x80 ? 0xff : 0;
    for (let i = 0; i < raw.length - 8; i++) {
      if (raw.charCodeAt(i) !== pad) return undefined;
    }
  }
  let value = 0n;
  for (let i = 0; i < raw.length; i++) {
    value = (value << 8n) | BigInt(raw.charCodeAt(i));
  }
  const bits = BigInt(Math.min(raw.length, 8) * 8);
  if (signed && raw.length > 0 && (raw.charCodeAt(0) & 0x80)) {
    value -= 1n << bits;
  }
  if (!signed && raw.length > 8) value &= (1n << 64n) - 1n;
  return value;
}

function bigintToRaw(value: bigint, width: number): string {
  let out = "";
  for (let i = width - 1; i >= 0; i--) {
    out += String.fromCharCode(Number((value >> BigInt(i * 8)) & 0xffn));
  }
  return out;
}

function parseIpv4(value: string): string {
  let out = "";
  let rest = value;
  for (let part = 0; part < 4; part++) {
    const { value: n, end } = strtoul(rest, 0);
    if (end === 0 || n > 255n) {
      throw new SettingParseError(`invalid IPv4 address "${value}"`);
    }
    out += String.fromCharCode(Number(n));
    rest = rest.slice(end);
    if (part < 3) {
      if (rest[0] !== ".") {
        throw new SettingParseError(`invalid IPv4 address "${value}"`);
      }
      rest = rest.slice(1);
    }
  }
  if (rest !== "") {
    throw new SettingParseError(`invalid IPv4 address "${value}"`);
  }
  return out;
}

function parseIpv6(value: string): string {
  const bad = () => new SettingParseError(`invalid IPv6 address "${value}"`);
  let text = value;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    const v4 = parseIpv4(text.slice(lastColon + 1));
    tail.push(
      (v4.charCodeAt(0) << 8) | v4.charCodeAt(1),
      (v4.charCodeAt(2) << 8) | v4.charCodeAt(3),
    );
    // Drop the dotted quad and its separating colon (unless part of "::").
    const head = text.slice(0, lastColon + 1);
    text = head.endsWith("::") ? head : head.slice(0, -1);
  }
  const parseGroups = (s: string): number[] => {
    if (s === "") return [];
    return s.split(":").map((g) => {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
      return parseInt(g, 16);
    });
  };
  let groups: number[];
  const parts = text.split("::");
  if (parts.length > 2) throw bad();
  if (parts.length === 2) {
    const head = parseGroups(parts[0]);
    const rest = parseGroups(parts[1]);
    const fill = 8 - head.length - rest.length - tail.length;
    if (fill < 1) throw bad();
    groups = [...head, ...new Array(fill).fill(0), ...rest, ...tail];
  } else {
    groups = [...parseGroups(text), ...tail];
  }
  if (groups.length !== 8) throw bad();
  return groups.map((g) => String.fromCharCode(g >> 8, g & 0xff)).join("");
}

function formatIpv6(raw: string): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) {
    groups.push((raw.charCodeAt(i) << 8) | raw.charCodeAt(i + 1));
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${
    hex.slice(bestStart + bestLen).join(":")
  }`;
}

function swapGuid(raw: string): string {
  const b = raw.split("");
  return [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], ...b.slice(8)].join(
    "",
  );
}

function parseUuid(value: string): string {
  const m =
    /^([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})$/
      .exec(value);
  if (!m) throw new SettingParseError(`invalid UUID "${value}"`);
  return parseHex(m.slice(1).join(""), "");
}

function formatUuid(raw: string): string {
  const h = [...raw].map((c) => hexByte(c.charCodeAt(0))).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${
    h.slice(16, 20)
  }-${h.slice(20)}`;
}

const URI_RESERVED = "%/#:@?=&+";

/** iPXE `uri_encode(0, …)`: %-escape non-printing characters, space, and `%/#:@?=&+`. */
export function uriEncode(raw: string): string {
  let out = "";
  for (const ch of raw) {
    const c = ch.charCodeAt(0);
    if (c <= 0x20 || c >= 0x7f || URI_RESERVED.includes(ch)) {
      out += `%${c.toString(16).toUpperCase().padStart(2, "0")}`;
    } else {
      out += ch;
    }
  }
  return out;
}

function uriDecode(value: string): string {
  return value.replace(
    /%([0-9a-fA-F]{2})/g,
    (_, h: string) => String.fromCharCode(parseInt(h, 16)),
  );
}

/**
 * Parses a formatted value as `type` into raw bytes (iPXE `setting_parse`).
 * Throws {@linkcode SettingParseError} when it does not parse.
 */
export function parseSettingValue(type: SettingType, value: string): string {
  switch (type) {
    case "string":
      return value;
    case "uristring":
      return uriDecode(value);
    case "hex":
      return parseHex(value, ":");
    case "hexhyp":
      return parseHex(value, "-");
    case "hexraw":
      return parseHex(value, "");
    case "int8":
    case "int16":
    case "int32":
    case "uint8":
    case "uint16":
    case "uint32": {
      const { value: n, end } = strtoul(value, 0);
      if (end !== value.length) {
        throw new SettingParseError(`invalid integer value "${value}"`);
      }
      return bigintToRaw(n, INT_WIDTH[type]);
    }
    case "ipv4":
      return parseIpv4(value);
    case "ipv6":
      return parseIpv6(value);
    case "uuid":
      return parseUuid(value);
    case "guid":
      return swapGuid(parseUuid(value));
    case "base64":
      try {
        return atob(value);
      } catch {
        throw new SettingParseError(`invalid base64 value "${value}"`);
      }
    case "busdevfn":
      throw new SettingParseError(`cannot store a busdevfn value`);
  }
}

/**
 * Formats raw bytes as `type` (iPXE `setting_format`); undefined when the raw
 * value cannot be shown as that type (wrong length), which expands to "".
 */
export function formatSettingValue(
  type: SettingType,
  raw: string,
): string | undefined {
  const bytes = () => [...raw].map((c) => hexByte(c.charCodeAt(0)));
  switch (type) {
    case "string":
      return raw;
    case "uristring":
      return uriEncode(raw);
    case "hex":
      return bytes().join(":");
    case "hexhyp":
      return bytes().join("-");
    case "hexraw":
      return bytes().join("");
    case "int8":
    case "int16":
    case "int32": {
      const n = numericValue(raw, true);
      return n === undefined ? undefined : n.toString();
    }
    case "uint8":
    case "uint16":
    case "uint32": {
      const n = numericValue(raw, false);
      return n === undefined ? undefined : `0x${n.toString(16)}`;
    }
    case "ipv4":
      return raw.length === 4
        ? [...raw].map((c) => c.charCodeAt(0)).join(".")
        : undefined;
    case "ipv6":
      return raw.length === 16 ? formatIpv6(raw) : undefined;
    case "uuid":
      return raw.length === 16 ? formatUuid(raw) : undefined;
    case "guid":
      return raw.length === 16 ? formatUuid(swapGuid(raw)) : undefined;
    case "base64":
      return btoa(raw);
    case "busdevfn": {
      const n = numericValue(raw, false);
      if (n === undefined) return undefined;
      const v = Number(n & 0xffffffffn);
      return `${hexByte((v >> 8) & 0xff)}:${hexByte((v >> 3) & 0x1f)}.${
        (v & 7).toString(16)
      }`;
    }
  }
}

/** Numeric value of a stored setting, when its type is an integer type (iPXE `setting_numerate`). */
export function numerate(stored: StoredSetting): bigint | undefined {
  if (!(stored.type in INT_WIDTH)) return undefined;
  return numericValue(stored.raw, stored.type.startsWith("int"));
}

/** Raw bytes of a number stored as an integer type (iPXE `setting_denumerate`). */
export function denumerate(
  type: SettingType,
  value: bigint,
): string | undefined {
  const width = INT_WIDTH[type];
  return width === undefined ? undefined : bigintToRaw(value, width);
}

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
