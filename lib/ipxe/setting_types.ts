/**
 * iPXE setting types (`core/settings.c`): how a value given as text is
 * stored as bytes for each type, how stored bytes are shown, and the integer
 * types' numbers. Values are binary strings (see `bytes.ts`).
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
