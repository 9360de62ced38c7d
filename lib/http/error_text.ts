/**
 * One-line texts for what went wrong in an exchange: the runtime's network
 * error without its repetitions (the URL, which the caller says already;
 * "fetch failed"; "error sending request for url"), and an excerpt of an
 * error body only when it is text.
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { redact } from "../log.ts";

/**
 * The reason a request failed, as one line without the URL: Deno's
 * `fetch failed: error sending request for url (URL): client error
 * (Connect): tcp connect error: Connection refused (os error 111)` becomes
 * `fetch failed: tcp connect error: Connection refused (os error 111)`.
 *
 * @example
 * ```ts
 * networkReason(new TypeError("fetch failed")); // "fetch failed"
 * ```
 */
export function networkReason(err: unknown): string {
  return errorText(err)
    .replace(/error sending request for url \([^)]*\): /g, "")
    .replace(/client error \([A-Za-z]+\): /g, "");
}

/**
 * The first line of an error body, at most `max` characters, redacted; ""
 * when the body is not text (a kernel sent with an error status: its bytes
 * say nothing and would garble the terminal).
 */
export function bodyExcerpt(body: string, max = 120): string {
  const line = body.split("\n")[0].trim().slice(0, max);
  // NUL and other C0 controls but tab and CR, DEL, and the replacement
  // character of bytes that are not UTF-8: binary.
  for (const char of line) {
    const code = char.codePointAt(0)!;
    if (
      (code < 0x20 && code !== 0x09 && code !== 0x0d) || code === 0x7f ||
      code === 0xfffd
    ) return "";
  }
  return redact(line);
}
