/**
 * Per-image pins (`--artifact-sha256 URL=HEX`) and the URL comparison they
 * rest on. Pins fail closed: the script and the user may spell one URL
 * differently (`HTTP://H:80/a/../i`, `%7e` or `~`), so both sides are
 * compared in a normal form; a pin that matches no image of the plan, and two
 * pins for one image that disagree, are usage errors, never ignored.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import { redactUrl } from "../log.ts";
import type { KexecPlan } from "../plan.ts";

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** Upper-case percent escapes, and unescaped unreserved characters (RFC 3986 §6.2.2). */
function normalizePercent(text: string): string {
  return text.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : `%${hex.toUpperCase()}`;
  });
}

/**
 * The form in which two URLs that fetch the same resource compare equal, or
 * undefined when `url` does not parse: WHATWG parsing (scheme and host in
 * lower case, default port dropped, `.` and `..` segments resolved, `%2e`
 * included), percent escapes in upper case and unreserved characters
 * unescaped, no fragment, no empty query.
 *
 * @example
 * ```ts
 * normalizeUrl("HTTP://H:80/a/../%7euser/./i?"); // "http://h/~user/i"
 * ```
 */
export function normalizeUrl(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const user = u.username || u.password
    ? `${normalizePercent(u.username)}${
      u.password ? `:${normalizePercent(u.password)}` : ""
    }@`
    : "";
  const authority = u.host !== "" || u.protocol === "file:"
    ? `//${user}${u.host}`
    : "";
  const search = u.search.length > 1 ? normalizePercent(u.search) : "";
  return `${u.protocol}${authority}${normalizePercent(u.pathname)}${search}`;
}

/** True when the pin `key` names `url`: the same normal form, or `key` has no query and names `url` without its query. */
function pinMatches(key: string, url: string): boolean {
  const k = normalizeUrl(key);
  const u = normalizeUrl(url);
  if (k === undefined || u === undefined) return false;
  if (k === u) return true;
  return !k.includes("?") && k === u.split("?")[0];
}

/**
 * The pin for `url` in `pins` (URL → hex): every key that names it (see
 * {@linkcode normalizeUrl}; a key without a query matches any query). Throws
 * a {@linkcode BootError} (Usage) when two matching keys disagree.
 */
export function artifactPin(
  url: string,
  pins: Record<string, string> = {},
): string | undefined {
  let found: { key: string; value: string } | undefined;
  for (const [key, value] of Object.entries(pins)) {
    if (!pinMatches(key, url)) continue;
    if (found && found.value.toLowerCase() !== value.toLowerCase()) {
      throw new BootError(
        `--artifact-sha256 ${redactUrl(found.key)} and ${
          redactUrl(key)
        } both pin ${redactUrl(url)}, with different digests`,
        ExitCode.Usage,
      );
    }
    found ??= { key, value };
  }
  return found?.value;
}

/** Options for {@linkcode checkPins}. */
export interface CheckPinsOptions {
  /** `--artifact-sha256` pins: URL → hex. */
  artifactSha256?: Record<string, string>;
  /** `--kernel-sha256`. */
  kernelSha256?: string;
}

/**
 * Refuses pins that would be silently ignored: an `--artifact-sha256` that
 * names no kernel or initrd of `plan`, two pins for one image that disagree,
 * or a `--kernel-sha256` that disagrees with an `--artifact-sha256` for the
 * kernel's URL. Throws a {@linkcode BootError} (Usage).
 */
export function checkPins(plan: KexecPlan, options: CheckPinsOptions): void {
  const pins = options.artifactSha256 ?? {};
  const urls = [plan.kernel.url, ...plan.initrds.map((i) => i.url)];
  for (const key of Object.keys(pins)) {
    if (!urls.some((url) => pinMatches(key, url))) {
      throw new BootError(
        `--artifact-sha256 ${
          redactUrl(key)
        } matches no kernel or initrd the script boots`,
        ExitCode.Usage,
      );
    }
  }
  for (const url of urls) artifactPin(url, pins);
  const kernelPin = artifactPin(plan.kernel.url, pins);
  if (
    options.kernelSha256 && kernelPin &&
    options.kernelSha256.toLowerCase() !== kernelPin.toLowerCase()
  ) {
    throw new BootError(
      "--kernel-sha256 and the --artifact-sha256 of the kernel's URL disagree",
      ExitCode.Usage,
    );
  }
}
