/**
 * What a response says about the file it carries: its length and its
 * validators (`ETag`, `Last-Modified`), each read only when well-formed, so
 * that what is sent back in `If-Range` or compared later is never a value a
 * server could smuggle anything into.
 *
 * @module
 */

/** An `ETag` fit to be sent back (`"…"` or `W/"…"`, visible characters only). */
const ENTITY_TAG = /^(W\/)?"[\x21\x23-\x7e]*"$/;
/** A `Last-Modified` fit to be sent back (printable ASCII, a date). */
const HTTP_DATE = /^[\x20-\x7e]+$/;

/** `ETag` and `Last-Modified` of a response, each only when it is well-formed. */
export function validators(
  response: Response,
): { etag?: string; lastModified?: string } {
  // Headers has already cut the whitespace around a value (fetch's and
  // the curl transport's alike).
  const etag = response.headers.get("etag") ?? undefined;
  const lastModified = response.headers.get("last-modified") ?? undefined;
  return {
    etag: etag && ENTITY_TAG.test(etag) ? etag : undefined,
    lastModified: lastModified && HTTP_DATE.test(lastModified) &&
        !Number.isNaN(Date.parse(lastModified))
      ? lastModified
      : undefined,
  };
}

/** `Content-Length` of a response, when it is a number. */
export function contentLength(response: Response): number | undefined {
  const value = response.headers.get("content-length");
  return value && /^\d+$/.test(value) ? Number(value) : undefined;
}
