/**
 * URI parsing and relative resolution the way iPXE does it (`core/uri.c`,
 * `core/basename.c`), including its deviations from RFC 3986:
 *
 * - only leading `./` and `../` of a relative path are processed;
 * - a scheme may contain only letters, `-` and `_`;
 * - `//host/x` without a scheme is a path on the base host;
 * - the fragment starts at the first raw `#`.
 *
 * Strings are kept as they are written (no re-encoding).
 *
 * {@linkcode isLocalUri} answers the one question the bootloader's trust
 * rule asks of an URI (does it name the local file system?) the way the
 * fetcher will read it, not the way iPXE splits it.
 *
 * @module
 */

/** The parts of a URI as iPXE splits them. */
export interface ParsedUri {
  /** Scheme without the colon, when present. */
  scheme?: string;
  /** Opaque part (`data:…`, `urn:…`) of a non-hierarchical URI. */
  opaque?: string;
  /** Authority (`user@host:port`) after `//`, when present. */
  authority?: string;
  /** Path, when present. */
  path?: string;
  /** Query without the `?`, when present. */
  query?: string;
  /** Fragment without the `#`, when present. */
  fragment?: string;
}

const SCHEME_CHAR = /^[A-Za-z_-]$/;

/** Splits a URI string into its parts (iPXE `parse_uri`). */
export function parseUri(text: string): ParsedUri {
  const uri: ParsedUri = {};
  let raw = text;
  const hash = raw.indexOf("#");
  if (hash >= 0) {
    uri.fragment = raw.slice(hash + 1);
    raw = raw.slice(0, hash);
  }
  const question = raw.indexOf("?");
  if (question >= 0) {
    uri.query = raw.slice(question + 1);
    raw = raw.slice(0, question);
  }
  let i = 0;
  while (i < raw.length && SCHEME_CHAR.test(raw[i])) i++;
  if (i > 0 && raw[i] === ":") {
    uri.scheme = raw.slice(0, i);
    raw = raw.slice(i + 1);
    if (raw.startsWith("//")) {
      const rest = raw.slice(2);
      const slash = rest.indexOf("/");
      uri.authority = slash >= 0 ? rest.slice(0, slash) : rest;
      if (slash >= 0) uri.path = rest.slice(slash);
    } else if (raw.startsWith("/")) {
      uri.path = raw;
    } else {
      uri.opaque = raw;
    }
  } else if (raw !== "") {
    uri.path = raw;
  }
  return uri;
}

/** Joins URI parts back into a string (iPXE `format_uri`, without re-encoding). */
export function formatUri(uri: ParsedUri): string {
  let out = "";
  if (uri.scheme !== undefined) out += `${uri.scheme}:`;
  if (uri.opaque !== undefined) out += uri.opaque;
  if (uri.authority !== undefined) out += `//${uri.authority}`;
  if (uri.path !== undefined) out += uri.path;
  if (uri.query !== undefined) out += `?${uri.query}`;
  if (uri.fragment !== undefined) out += `#${uri.fragment}`;
  return out;
}

/**
 * Directory part of a path (iPXE `dirname`): `/a/b` → `/a`, `/a` → `/`,
 * `a` → `.`.
 */
export function dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash === 0) return "/";
  if (slash > 0) return path.slice(0, slash);
  return ".";
}

/** Last component of a path (iPXE `basename`): `/a/b` → `b`, `/a/` → ``. */
export function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Resolves a relative path against a base path (iPXE `resolve_path`). */
export function resolvePath(basePath: string, relativePath: string): string {
  if (relativePath.startsWith("/")) return relativePath;
  let base = dirname(basePath);
  let rel = relativePath;
  while (rel.startsWith(".")) {
    if (rel === ".") {
      rel = "";
    } else if (rel.startsWith("./")) {
      rel = rel.slice(2);
    } else if (rel === "..") {
      base = dirname(base);
      rel = "";
    } else if (rel.startsWith("../")) {
      base = dirname(base);
      rel = rel.slice(3);
    } else {
      break;
    }
  }
  return base + (base.endsWith("/") ? "" : "/") + rel;
}

/**
 * Resolves `relative` against `base` (iPXE `resolve_uri`).
 *
 * @example
 * ```ts
 * resolveUri("http://h/demo/boot.php?x=1", "initrd.img"); // "http://h/demo/initrd.img"
 * ```
 */
export function resolveUri(base: string | undefined, relative: string): string {
  const rel = parseUri(relative);
  if (rel.scheme !== undefined || base === undefined) return relative;
  const out = parseUri(base);
  if (rel.path !== undefined) {
    out.path = resolvePath(out.path ?? "/", rel.path);
    out.query = rel.query;
    out.fragment = rel.fragment;
  } else if (rel.query !== undefined) {
    out.query = rel.query;
    out.fragment = rel.fragment;
  } else if (rel.fragment !== undefined) {
    out.fragment = rel.fragment;
  }
  if (out.path !== undefined && out.opaque !== undefined) {
    out.opaque = undefined;
  }
  return formatUri(out);
}

/**
 * Default iPXE image name for a URI: the basename of its path (the query is
 * not included), or of its opaque part; undefined when it has neither.
 */
export function imageNameFromUri(uri: string): string | undefined {
  const parsed = parseUri(uri);
  const named = parsed.path ?? parsed.opaque;
  return named === undefined ? undefined : basename(named);
}

/**
 * True when `uri` (a resolved, absolute URI) names the local file system the
 * way the bootloader's fetchers would read it: a `file:` URL after WHATWG
 * parsing (any case, stray spaces and tabs removed), or, when it does not
 * parse, an iPXE scheme `file`.
 */
export function isLocalUri(uri: string): boolean {
  try {
    return new URL(uri).protocol === "file:";
  } catch {
    return parseUri(uri).scheme?.toLowerCase() === "file";
  }
}
