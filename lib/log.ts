/**
 * Logging to stderr with secret redaction.
 *
 * stdout is reserved for machine-readable output (`--print-plan`, `--no-kexec`),
 * so every log line goes to stderr, one line per message, readable in the
 * journal. Every line passes through {@linkcode redact} first.
 *
 * @module
 */

const QUERY_SECRETS = [
  "api_key",
  "image_token",
  "token",
  "access_token",
  "refresh_token",
];
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
 * Removes credentials from text: `api_key=`, `image_token=` and other token
 * query parameters, `Bearer` values, and every registered secret.
 *
 * @example
 * ```ts
 * redact("https://h/x?api_key=abc&arch=x86_64"); // "https://h/x?api_key=REDACTED&arch=x86_64"
 * ```
 */
export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("REDACTED");
  const names = QUERY_SECRETS.join("|");
  out = out.replace(
    new RegExp(`([?&;](?:${names})=)[^&\\s"']*`, "gi"),
    "$1REDACTED",
  );
  out = out.replace(/(Bearer\s+)[^\s"']+/gi, "$1REDACTED");
  out = out.replace(
    /("(?:access_token|refresh_token|id_token)"\s*:\s*")[^"]*/g,
    "$1REDACTED",
  );
  return out;
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
  const emit = () => {
    for (const line of redact(message).split("\n")) {
      sink(`assisted-bootloader: ${prefix}${line}`);
    }
  };
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
