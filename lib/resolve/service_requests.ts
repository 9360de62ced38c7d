/**
 * What every request to the service and to its SSO shares: their options,
 * how a failed one and an error body read in one line, and the warning for a
 * token sent over plain http (once per origin and kind of token).
 *
 * @module
 */

import { errorText } from "../errors.ts";
import type { HttpClient } from "../http/request.ts";
import { HttpStatusError, NetworkError, readAtMost } from "../http/request.ts";
import type { BusyBudget } from "../http/busy.ts";
import type { IdleWatch } from "../http/idle.ts";
import { log, redact, redactUrl } from "../log.ts";

/** Options shared by the client's requests. */
export interface ClientOptions {
  /** Client with extra CA certificates. */
  client?: HttpClient;
  /** Retries on network errors and 5xx (busy answers aside). */
  retries?: number;
  /** How long busy servers may still be waited for (the run's budget). */
  busy?: BusyBudget;
  /** Per-request timeout in milliseconds. */
  timeoutMs?: number;
  /**
   * A body (a script, an SSO answer) slower than this many bytes per second
   * over `minSpeedTimeMs` is cut and retried (`--min-speed`; 0: never).
   */
  minSpeed?: number;
  /** The window for `minSpeed`, in milliseconds (`--min-speed-time`). */
  minSpeedTimeMs?: number;
  /** Base backoff delay in milliseconds (tests shorten it). */
  baseDelayMs?: number;
}

/**
 * Turns an error body of assisted-service (`{"code","reason"}` or
 * `{"code","message"}`), SSO (`error_description`) or the image service
 * (plain text) into one line.
 */
export function errorBodyText(body: string): string {
  const text = body.trim();
  try {
    const json = JSON.parse(text);
    if (json && typeof json === "object") {
      const parts = [
        json.reason,
        json.message,
        json.error_description,
        json.error,
      ].filter((v) => typeof v === "string" && v !== "");
      if (parts.length > 0) return redact(parts[0]).slice(0, 300);
    }
  } catch {
    // Not JSON: plain text.
  }
  const line = text.split("\n")[0].replace(/<[^>]*>/g, " ").replace(/\s+/g, " ")
    .trim();
  return redact(line).slice(0, 300);
}

/** Origins already warned about, per kind of token. */
const warnedPlainHttp = new Set<string>();

/** Warns once per token kind and origin when `url` is plain http. */
export function warnPlainHttp(url: URL, what: string): void {
  const key = `${what} ${url.origin}`;
  if (url.protocol !== "http:" || warnedPlainHttp.has(key)) return;
  warnedPlainHttp.add(key);
  log.warn(
    `${what} is sent over plain http to ${
      redact(url.origin)
    }: anyone on the network path can read it (use https)`,
  );
}

/** A failed request to the service in a few words: its status and error body, or why it failed. */
export function describe(err: unknown): string {
  if (err instanceof HttpStatusError) {
    return `HTTP ${err.status}: ${errorBodyText(err.body)}`;
  }
  // The line names the URL already.
  if (err instanceof NetworkError) return redact(err.reason);
  return errorText(err);
}

/** Options for {@linkcode readAnswer}. */
export interface ReadAnswerOptions {
  /** The URL that answered, for the message. */
  url: string;
  /** The watch the body came through. */
  idle: IdleWatch;
  /** Bytes read at most (read one more to see that an answer is too long). */
  maxBytes: number;
  /** What the body is, for the message (`the answer`, `the body`). */
  what: string;
}

/**
 * Reads at most `maxBytes` of a watched body. A cut by the watch is its own
 * error; any other failure (a reset, a body shorter than its
 * `Content-Length`) is a {@linkcode NetworkError}, retried like any other:
 * `…: connection lost while reading the body: …`.
 */
export async function readAnswer(
  response: Response,
  options: ReadAnswerOptions,
): Promise<Uint8Array> {
  try {
    return await readAtMost(response.body, options.maxBytes);
  } catch (err) {
    if (options.idle.signal.aborted) throw options.idle.signal.reason;
    throw new NetworkError(
      `${
        redactUrl(options.url)
      }: connection lost while reading ${options.what}: ${errorText(err)}`,
      options.url,
      { cause: err },
    );
  }
}
