/**
 * The checks a plan passes before anything it names is downloaded: every
 * artifact's scheme is one the bootloader fetches (`file:` only when the
 * user's own first script was a `file:` URL), and no pin would be silently
 * ignored (`pins.ts`). A failure is the user's or the script's: no retry
 * helps.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import { redactUrl } from "../log.ts";
import { checkPins, type CheckPinsOptions } from "./pins.ts";
import type { KexecPlan } from "../plan.ts";

/** Options for {@linkcode checkPlan}. */
export interface CheckPlanOptions extends CheckPinsOptions {
  /**
   * `file:` artifacts are allowed (default false): only when the first
   * script was the user's own `file:` URL.
   */
  localFiles?: boolean;
}

const SCHEMES = new Set(["http:", "https:", "file:"]);

/**
 * Refuses, before any download, an artifact the bootloader cannot fetch (nfs,
 * tftp…: Download), a `file:` one unless `localFiles` (Download), and pins
 * that would be ignored (Usage, {@linkcode checkPins}).
 */
export function checkPlan(plan: KexecPlan, options: CheckPlanOptions): void {
  checkPins(plan, options);
  for (const { url } of [plan.kernel, ...plan.initrds]) {
    let protocol: string;
    try {
      protocol = new URL(url).protocol;
    } catch (err) {
      throw new BootError(
        `${redactUrl(url)} is not a valid URL`,
        ExitCode.Download,
        { cause: err },
      );
    }
    if (!SCHEMES.has(protocol)) {
      throw new BootError(
        `Unsupported URL scheme "${protocol.slice(0, -1)}" in ${
          redactUrl(url)
        } (artifacts are fetched over http, https or file)`,
        ExitCode.Download,
      );
    }
    if (protocol === "file:" && !options.localFiles) {
      throw new BootError(
        `Refused to read ${
          redactUrl(url)
        }: local files are read only when --ipxe-url is a file: URL`,
        ExitCode.Download,
      );
    }
  }
}
