/**
 * Logging to stderr with secret redaction.
 *
 * stdout is reserved for machine-readable output (`--print-plan`, `--no-kexec`),
 * so every log line goes to stderr, one line per message, readable in the
 * journal. Every message passes through {@linkcode redact} and then
 * {@linkcode escapeControls}: text a server wrote (an error body, an iPXE
 * `echo`, a URL) can neither hide a secret nor move the cursor, recolour the
 * terminal or forge a second log line.
 *
 * @module
 */

import { isCredentialParam } from "./credentials.ts";

const secrets = new Set<string>();

/**
 * Registers a secret value (a token read from a file, say) so that it never
 * appears in a log line, whatever its shape.
 */
export function addSecret(value: string): void {
  const v = value.trim();
  if (v.length >= 8) secrets.add(v);
}

/**
 * Where a value written in text ends: a quoted value at its closing quote;
 * otherwise at whitespace, `&` or `#`, punctuation that ends it (`,` `.`
 * `)`…) given back to the text that follows.
 */
const VALUE = String.raw`"[^"]*"?|'[^']*'?|[^\s&#]*`;

/** Redacts a matched value: the quotes of a quoted value stay, and the punctuation after an unquoted one. */
function redactValue(value: string): string {
  if (value === "") return value;
  const q = value[0];
  if (q === '"' || q === "'") {
    return `${q}REDACTED${value.length > 1 && value.endsWith(q) ? q : ""}`;
  }
  const tail = /[,.;:!?)\]}>"']+$/.exec(value)?.[0] ?? "";
  return tail.length === value.length ? value : `REDACTED${tail}`;
}

/** A parameter's name and `=`, after what may stand before a parameter. */
const PARAM = /(?:^|[\s?&;,("'])([^\s=&;#?"']+)=/g;

/**
 * Redacts the value of every parameter {@linkcode isCredentialParam} names;
 * another parameter's value is searched for the next name (`a=1;token=…`).
 */
function redactParams(text: string): string {
  let out = "";
  let from = 0;
  const param = new RegExp(PARAM);
  for (let m = param.exec(text); m; m = param.exec(text)) {
    const start = m.index + m[0].length;
    if (!isCredentialParam(m[1])) {
      // "=" ends the match; a separator in the value can start the next one.
      param.lastIndex = start;
      continue;
    }
    const value = new RegExp(VALUE, "y");
    value.lastIndex = start;
    const found = value.exec(text)?.[0] ?? "";
    out += text.slice(from, start) + redactValue(found);
    from = start + found.length;
    param.lastIndex = from;
  }
  return out + text.slice(from);
}

/**
 * Removes credentials from text: the `user:password@` of URLs (whatever
 * characters it holds), every query parameter {@linkcode isCredentialParam}
 * names (`api_key=`, `image_token=`, `api%5Fkey=`, `X-Amz-Signature=`…),
 * `Bearer` and `Basic` values, JSON token fields and every registered secret
 * — quoted values whole, and the text that follows intact. A backslash that
 * ends an URL's host (a URL parser reads it as `/`) is shown as `/`, so that
 * `http://a\@b/` cannot pass for an URL of `b`.
 *
 * @example
 * ```ts
 * redact("https://h/x?api_key=abc&arch=x86_64"); // "https://h/x?api_key=REDACTED&arch=x86_64"
 * redact("http://admin:pw@h/boot.ipxe"); // "http://REDACTED@h/boot.ipxe"
 * ```
 */
export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("REDACTED");
  // Special schemes read "\" as "/" (WHATWG URL): show it so.
  out = out.replace(/\b((?:https?|wss?|ftp):)[\\/]{2,}/gi, "$1//");
  out = out.replace(
    /\b((?:https?|wss?|ftp):\/\/[^\/?#\\\s@]*)\\/gi,
    "$1/",
  );
  // The userinfo ends at the last "@" before the path, query or fragment
  // (like URL parsers); "http:user:pw@h" without slashes is an URL too.
  out = out.replace(
    /\b([a-z][a-z0-9+.-]*:\/\/|https?:)[^\s\/?#\\]*@/gi,
    "$1REDACTED@",
  );
  out = redactParams(out);
  out = out.replace(
    new RegExp(`\\b(Bearer|Basic)(\\s+)(${VALUE})`, "gi"),
    (_, scheme: string, space: string, value: string) =>
      `${scheme}${space}${redactValue(value)}`,
  );
  out = out.replace(
    /("(?:access_token|refresh_token|id_token|api_key|image_token|token)"\s*:\s*")((?:[^"\\]|\\.)*)/g,
    "$1REDACTED",
  );
  return out;
}

/**
 * An URL for a log line: in the normal form a URL parser gives it (the host
 * it really names: punycode for a look-alike, `\` as `/`, default port
 * dropped), then redacted; text that does not parse is only redacted.
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return redact(url);
  }
  if (parsed.username !== "" || parsed.password !== "") {
    parsed.username = "REDACTED";
    parsed.password = "";
  }
  return redact(parsed.href);
}

/**
 * Control characters and characters that reorder or break text (C0, DEL, C1,
 * line and paragraph separators, bidirectional overrides and isolates).
 */
const CONTROLS =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Makes text safe for a terminal or the journal, on one line: every control
 * character (newlines and escape sequences included) is written as a visible
 * `\xNN` or `\u{NNNN}` escape.
 *
 * @example
 * ```ts
 * escapeControls("ok\x1b[2J\nforged"); // "ok\\x1b[2J\\x0aforged"
 * ```
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u{${code.toString(16)}}`;
  });
}

/** The characters of {@linkcode CONTROLS} that `JSON.stringify` leaves raw. */
const JSON_RAW_CONTROLS =
  /[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * `JSON.stringify(value, null, 2)` that is also safe for a terminal: the
 * characters {@linkcode escapeControls} escapes, which JSON leaves raw above
 * U+007E (DEL, C1, separators, bidirectional controls), are written as
 * `\uNNNN` too. Still valid JSON, parsing to the same value.
 */
export function safeJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    JSON_RAW_CONTROLS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Log levels in increasing order of importance. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Record<LogLevel, number> = {
  debug: 0,
  info: 1,
  warn: 2,
  error: 3,
};
let threshold: LogLevel = "info";
let sink: (line: string) => void = (line) => {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
};

/** Options for {@linkcode configureLog}. */
export interface ConfigureLogOptions {
  /** Lowest level written. */
  level?: LogLevel;
  /** Where lines go (tests capture them); defaults to stderr. */
  sink?: (line: string) => void;
}

/** Sets the level and the destination of log lines. */
export function configureLog(options: ConfigureLogOptions): void {
  if (options.level) threshold = options.level;
  if (options.sink) sink = options.sink;
}

let wrapper: ((emit: () => void) => void) | undefined;

/**
 * Lets a live display (progress bars) wrap every log write: the wrapper erases
 * what it drew, calls `emit` to write the lines, and draws again. `undefined`
 * removes it.
 */
export function setLineWrapper(wrap?: (emit: () => void) => void): void {
  wrapper = wrap;
}

function write(level: LogLevel, message: string): void {
  if (ORDER[level] < ORDER[threshold]) return;
  const prefix = level === "info" ? "" : `${level}: `;
  const line = escapeControls(redact(message));
  const emit = () => sink(`assisted-bootloader: ${prefix}${line}`);
  if (wrapper) wrapper(emit);
  else emit();
}
/** The logger: one method per level. */
export const log = {
  /** Details useful when debugging (`--verbose`). */
  debug: (message: string): void => write("debug", message),
  /** Progress of the boot sequence. */
  info: (message: string): void => write("info", message),
  /** Something went wrong but the boot goes on (a retry, `--insecure`). */
  warn: (message: string): void => write("warn", message),
  /** The reason the bootloader is about to stop. */
  error: (message: string): void => write("error", message),
};
