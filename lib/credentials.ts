/**
 * What counts as a credential in an URL, in one place: the logger redacts
 * exactly these, and an URL that carries one is never cached, never gets the
 * bearer token and is fetched again through the script when it answers
 * 401/403 (it has probably expired).
 *
 * A credential is a `user:password@`, or a query parameter whose name, as a
 * server reads it (percent escapes and `+` decoded, any case), is one of
 * {@linkcode CREDENTIAL_PARAMS}: `api%5Fkey=` and `API_KEY=` are `api_key=`.
 *
 * @module
 */

/**
 * Query parameters that carry a credential: the assisted service's
 * (`api_key`, `image_token`), OAuth's, and those of the presigned URLs of
 * object stores (S3, GCS, Azure) a mirror may hand out.
 */
export const CREDENTIAL_PARAMS: ReadonlySet<string> = new Set([
  "api_key",
  "image_token",
  "token",
  "access_token",
  "refresh_token",
  "id_token",
  "password",
  "x-amz-signature",
  "x-amz-security-token",
  "x-amz-credential",
  "x-goog-signature",
  "x-goog-credential",
  "sig",
  "signature",
]);

/** A query parameter's name as a server reads it: `+` is a space, percent escapes decoded, lower case. */
export function paramName(raw: string): string {
  const plus = raw.replaceAll("+", " ");
  try {
    return decodeURIComponent(plus).toLowerCase();
  } catch {
    // A stray "%": decode what can be decoded.
    return plus.replace(
      /%([0-9a-fA-F]{2})/g,
      (_, hex) => String.fromCharCode(parseInt(hex, 16)),
    ).toLowerCase();
  }
}

/** True when `raw` (a query parameter's name as written) names a credential. */
export function isCredentialParam(raw: string): boolean {
  return CREDENTIAL_PARAMS.has(paramName(raw));
}

/**
 * True when `url` carries a credential of its own: a `user:password@`, or a
 * query parameter {@linkcode isCredentialParam} names (parameters split on
 * `&` and `;`, as servers do).
 */
export function hasCredential(url: string): boolean {
  const hash = url.indexOf("#");
  const rest = hash < 0 ? url : url.slice(0, hash);
  const q = rest.indexOf("?");
  if (q >= 0) {
    for (const part of rest.slice(q + 1).split(/[&;]/)) {
      const eq = part.indexOf("=");
      if (isCredentialParam(eq < 0 ? part : part.slice(0, eq))) return true;
    }
  }
  try {
    const parsed = new URL(url);
    return parsed.username !== "" || parsed.password !== "";
  } catch {
    return false;
  }
}
