/**
 * The error the iPXE interpreter throws.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import { redact } from "../log.ts";

/**
 * The script failed, booted nothing, or hit a safety cap. The message is one
 * line naming the script URL (redacted) and line, e.g.
 * `script http://h/boot.ipxe line 7: goto: label "x" not found`.
 */
export class IpxeError extends BootError {
  /** Creates the error; the message is redacted and control characters are escaped (one line). */
  constructor(message: string, options?: ErrorOptions) {
    super(redact(oneLine(message)), ExitCode.Script, options);
    this.name = "IpxeError";
  }
}

/** Escapes control characters (newlines included) as `\xNN` so a message stays on one line. */
function oneLine(text: string): string {
  return text.replace(
    CONTROL,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/g;
