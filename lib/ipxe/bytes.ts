/**
 * "Binary strings": the interpreter works on strings whose characters are
 * bytes (code points 0–255), like iPXE works on C strings. This keeps
 * command lines and `${x:hex}` byte-exact whatever the encoding of the script.
 *
 * @module
 */

/** Converts bytes (or a JavaScript string, encoded as UTF-8) to a binary string. */
export function toBinary(input: Uint8Array | string): string {
  const bytes = typeof input === "string"
    ? new TextEncoder().encode(input)
    : input;
  let out = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    out += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return out;
}

/** Converts a binary string to bytes. */
export function binaryToBytes(binary: string): Uint8Array {
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i) & 0xff;
  return out;
}

/** Converts a binary string to a JavaScript string, decoding it as UTF-8 (invalid bytes become U+FFFD). */
export function fromBinary(binary: string): string {
  return new TextDecoder().decode(binaryToBytes(binary));
}

/** C `isspace` on one character: space, `\t`, `\n`, `\v`, `\f`, `\r`. */
export function isSpace(ch: string | undefined): boolean {
  return ch === " " || ch === "\t" || ch === "\n" || ch === "\v" ||
    ch === "\f" ||
    ch === "\r";
}

const U64 = (1n << 64n) - 1n;

/** Result of {@linkcode strtoul}. */
export interface StrtoulResult {
  /** The value, modulo 2^64 (a leading `-` negates it, like iPXE's `strtoul`). */
  value: bigint;
  /** Index of the first character that was not consumed. */
  end: number;
}

function digitValue(ch: string): number {
  const c = ch.charCodeAt(0) | 0x20;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 10;
  return 99;
}

/**
 * iPXE `strtoul(text, &end, base)` on a 64-bit build: skips leading
 * whitespace, accepts a sign, and with base 0 detects `0x` (hex) and `0`
 * (octal) prefixes.
 */
export function strtoul(text: string, base = 0): StrtoulResult {
  let i = 0;
  while (isSpace(text[i])) i++;
  let negate = false;
  if (text[i] === "-") {
    negate = true;
    i++;
  } else if (text[i] === "+") {
    i++;
  }
  if (base === 0) {
    if (text[i] === "0") {
      i++;
      base = 8;
      if (text[i] === "x" || text[i] === "X") {
        i++;
        base = 16;
      }
    } else {
      base = 10;
    }
  } else if (
    base === 16 && text[i] === "0" &&
    (text[i + 1] === "x" || text[i + 1] === "X")
  ) {
    i += 2;
  }
  let value = 0n;
  while (i < text.length) {
    const d = digitValue(text[i]);
    if (d >= base) break;
    value = (value * BigInt(base) + BigInt(d)) & U64;
    i++;
  }
  if (negate) value = (-value) & U64;
  return { value, end: i };
}

/**
 * iPXE `parse_integer`: the whole text must be an integer (any base);
 * returns it as an unsigned 32-bit number, or undefined when invalid.
 */
export function parseInteger(text: string): number | undefined {
  if (text === "") return undefined;
  const { value, end } = strtoul(text, 0);
  if (end !== text.length) return undefined;
  return Number(value & 0xffffffffn);
}
