/**
 * The error the iPXE interpreter throws.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import { escapeControls, redact } from "../log.ts";

/**
 * The script failed, booted nothing, or hit a safety cap. The message is one
 * line naming the script URL (redacted) and line, e.g.
 * `script http://h/boot.ipxe line 7: goto: label "x" not found`.
 *
 * Its exit code is Script (3), unless it was caused by another
 * {@linkcode BootError} (a chained script the API refused: Api, 4), whose
 * exit code it keeps.
 */
export class IpxeError extends BootError {
  /** Creates the error; the message is redacted and control characters are escaped (one line). */
  constructor(message: string, options?: ErrorOptions) {
    const cause = options?.cause;
    super(
      escapeControls(redact(message)),
      cause instanceof BootError ? cause.exitCode : ExitCode.Script,
      options,
    );
    this.name = "IpxeError";
  }
}
