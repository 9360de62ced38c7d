/**
 * What an artifact's URL says about it: whether it carries its own
 * credential (a signed URL, which expires), whether it is the assisted image
 * service's `pxe-initrd` (whose bytes differ between requests), and so
 * whether its verified copy may be kept across runs.
 *
 * @module
 */

/** True for an URL that carries its own credential (`image_token=`, `api_key=`). */
export function isSignedUrl(url: string): boolean {
  return /[?&](image_token|api_key)=/i.test(url);
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
 * True for an URL whose artifact may be kept across runs: not signed
 * (`image_token=`, `api_key=`), no user:password, not the assisted
 * `…/pxe-initrd` (its bytes change per request and contain secrets).
 */
export function isCacheable(url: string): boolean {
  if (isSignedUrl(url) || isPxeInitrd(url)) return false;
  try {
    const parsed = new URL(url);
    return parsed.username === "" && parsed.password === "" &&
      (parsed.protocol === "http:" || parsed.protocol === "https:");
  } catch {
    return false;
  }
}
