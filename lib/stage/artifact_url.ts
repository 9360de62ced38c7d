/**
 * What an artifact's URL says about it: whether it carries its own
 * credential (a signed URL, which expires: the notion of a credential is
 * `credentials.ts`'s, the one the logger redacts), whether it is the assisted
 * image service's `pxe-initrd` (whose bytes differ between requests), and so
 * whether its verified copy may be kept across runs.
 *
 * @module
 */

import { hasCredential } from "../credentials.ts";

/**
 * True for an URL that carries its own credential (`image_token=`,
 * `api_key=` in any spelling a server decodes, a presigned URL's signature,
 * a `user:password@`): see `credentials.ts`.
 */
export function isSignedUrl(url: string): boolean {
  return hasCredential(url);
}

/** True for the assisted image service's `pxe-initrd`, which must never be resumed. */
export function isPxeInitrd(url: string): boolean {
  try {
    return new URL(url).pathname.endsWith("/pxe-initrd");
  } catch {
    return false;
  }
}

/**
 * True for an URL whose artifact may be kept across runs: http or https,
 * without a credential of its own ({@linkcode isSignedUrl}), not the assisted
 * `…/pxe-initrd` (its bytes change per request and contain secrets).
 */
export function isCacheable(url: string): boolean {
  if (isSignedUrl(url) || isPxeInitrd(url)) return false;
  try {
    const { protocol } = new URL(url);
    return protocol === "http:" || protocol === "https:";
  } catch {
    return false;
  }
}
