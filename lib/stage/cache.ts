/**
 * Verified artifacts kept across runs in `<workDir>/cache/`: a hard link to
 * the verified file plus a JSON manifest (url, size, sha256, and the
 * validators the server gave: `ETag`, `Last-Modified`, `Content-Length`;
 * when it was verified), written only once the file is verified and in place.
 *
 * Only a download the server gave a real validator for is kept: a strong
 * `ETag` or a `Last-Modified`. `Content-Length` alone is none: a file
 * replaced by another of the same size would look unchanged.
 *
 * Reuse rule: the next run reuses the copy only when a `HEAD` (same request
 * policy, no `Authorization`) answers 200 with a validator (a strong `ETag`
 * or a `Last-Modified`) and every validator agrees — the `ETag` and the
 * `Last-Modified` each equal to the manifest's (a validator on one side only
 * is a change), a `Content-Length` equal to the file's size, and present when
 * the manifest recorded one — the entry is a regular file of ours (never a
 * link, a FIFO or a device), it hashes to the manifest's sha256 again, any
 * pin matches, and the format check passes; otherwise the artifact is
 * downloaded as usual. An entry the server says has changed is dropped at
 * once (it can never be reused, and the disk may be small). `HEAD` was chosen over a conditional `GET` (`If-None-Match` /
 * `If-Modified-Since` → 304) because it compares the size as well, and a
 * server that ignores the condition would start sending the whole body.
 *
 * The cache never fails a boot: an entry that cannot be read or written is
 * dropped or skipped, and logged.
 *
 * Four verbs: {@linkcode lookup} puts a reusable copy in place,
 * {@linkcode record} keeps a verified download, {@linkcode prune} drops what
 * the plan does not boot (before anything is downloaded), {@linkcode clear}
 * empties the cache (`--no-cache`). Which URLs may be kept is `artifact_url.ts`'s
 * `isCacheable`.
 *
 * @module
 */

import type { DownloadResult } from "./download.ts";
import { errorText } from "../errors.ts";
import { type Format, readHeadOf } from "./formats.ts";
import type { BusyBudget } from "../http/busy.ts";
import type { HttpClient } from "../http/request.ts";
import { log, redactUrl } from "../log.ts";
import { probe } from "../http/probe.ts";
import { sha256Hex, sha256Of } from "./sha256.ts";
import {
  clearName,
  createFile,
  discard,
  type FileIdentity,
  identityOf,
  isSameFile,
  openOwnFile,
} from "./work_dir.ts";

/** A verified file of this run, and whether it came from the cache. */
export type Fetched = DownloadResult & { cached?: boolean };

/** What `<workDir>/cache/<key>.json` holds. */
interface Manifest {
  /** Format version (1). */
  version: number;
  /** The artifact's URL, exactly as the plan has it. */
  url: string;
  /** Size in bytes. */
  size: number;
  /** sha256, hex. */
  sha256: string;
  /** `Last-Modified` of the download, when the server gave one. */
  lastModified?: string;
  /** `ETag` of the download, when the server gave one. */
  etag?: string;
  /** `Content-Length` of the download, when the server gave one. */
  contentLength?: number;
  /** When the file was verified (ISO 8601). */
  verifiedAt: string;
}

const CACHE_ENTRY = /^([0-9a-f]{32})(\.json)?(\.part)?$/;
const MANIFEST_LIMIT = 64 * 1024;

function cacheKey(url: string): string {
  return sha256Hex(url).slice(0, 32);
}

function cachePaths(dir: string, url: string) {
  const base = `${dir}/cache/${cacheKey(url)}`;
  return { file: base, manifest: `${base}.json` };
}

/** Reads and validates a manifest; throws when it is not a regular file of ours or not a manifest for `url`. */
async function readManifest(path: string, url: string): Promise<Manifest> {
  using file = await openOwnFile(path);
  const bytes = new Uint8Array(MANIFEST_LIMIT + 1);
  let have = 0;
  while (have < bytes.length) {
    const n = await file.read(bytes.subarray(have));
    if (n === null) break;
    have += n;
  }
  if (have > MANIFEST_LIMIT) throw new Error("the manifest is too large");
  let m: Partial<Manifest>;
  try {
    m = JSON.parse(new TextDecoder().decode(bytes.subarray(0, have)));
  } catch {
    throw new Error("the manifest is not JSON");
  }
  if (
    m?.version === 1 && m.url === url && typeof m.size === "number" &&
    m.size > 0 && typeof m.sha256 === "string" &&
    /^[0-9a-f]{64}$/.test(m.sha256) &&
    (m.lastModified === undefined || typeof m.lastModified === "string") &&
    (m.etag === undefined || typeof m.etag === "string") &&
    (m.contentLength === undefined || typeof m.contentLength === "number")
  ) return m as Manifest;
  throw new Error("the manifest is not valid");
}

async function dropEntry(paths: { file: string; manifest: string }) {
  // The manifest first: without it nothing is ever reused.
  await discard(paths.manifest);
  await discard(paths.file);
}

/** True for an `ETag` that vouches for the bytes (a strong one, not `W/"…"`). */
function isStrong(etag: string | undefined): etag is string {
  return etag !== undefined && !etag.startsWith("W/");
}

/** True when a response gave a validator a copy can be kept and reused on: a strong `ETag` or a `Last-Modified`. */
export function hasValidator(
  answer: { etag?: string; lastModified?: string },
): boolean {
  return isStrong(answer.etag) || answer.lastModified !== undefined;
}

/** Why the cached copy of an artifact cannot be reused after this `HEAD`, or undefined when it can. */
export function staleReason(
  manifest: {
    size: number;
    etag?: string;
    lastModified?: string;
    contentLength?: number;
  },
  head: {
    status: number;
    contentLength?: number;
    lastModified?: string;
    etag?: string;
  },
): string | undefined {
  if (head.status !== 200) return `HEAD answered ${head.status}`;
  if (!hasValidator(manifest)) {
    return "it was kept without a validator (a strong ETag or Last-Modified)";
  }
  if (!hasValidator(head)) {
    return "the server gives neither a strong ETag nor Last-Modified (Content-Length alone cannot tell a changed file)";
  }
  if (head.etag !== manifest.etag) {
    return `ETag changed (${manifest.etag ?? "none"} → ${head.etag ?? "none"})`;
  }
  if (head.lastModified !== manifest.lastModified) {
    return `Last-Modified changed (${manifest.lastModified ?? "none"} → ${
      head.lastModified ?? "none"
    })`;
  }
  if (
    head.contentLength !== undefined && head.contentLength !== manifest.size
  ) {
    return `the size changed (${manifest.size} → ${head.contentLength} bytes)`;
  }
  if (
    manifest.contentLength !== undefined && head.contentLength === undefined
  ) {
    return "HEAD gives no Content-Length";
  }
  return undefined;
}

/** Options for {@linkcode lookup}. */
export interface LookupOptions {
  /** The work directory (the cache is its `cache/`). */
  workDir: string;
  /** How the artifact is named in log lines. */
  label: string;
  /** The pinned sha256, if any. */
  pin?: string;
  /** The format check of the first bytes and the size (the result's `format`); throws to reject. */
  check: (head: Uint8Array, size: number) => Format;
  /** Client with extra CAs or `--insecure`. */
  client?: HttpClient;
  /** Milliseconds for the `HEAD`. */
  timeoutMs?: number;
  /** How long a busy server may still be waited for (the run's budget). */
  busy?: BusyBudget;
  /** Aborts the `HEAD`. */
  signal: AbortSignal;
}

/**
 * Puts the cached copy of `url` at `dest` (a hard link) when it may be reused
 * (see the module's reuse rule); undefined (and the artifact is downloaded)
 * otherwise. The result's identity is the file that was hashed and checked,
 * and `dest` is that very file.
 */
export async function lookup(
  url: string,
  dest: string,
  options: LookupOptions,
): Promise<Fetched | undefined> {
  const { label } = options;
  const paths = cachePaths(options.workDir, url);
  try {
    await Deno.lstat(paths.manifest);
  } catch {
    return undefined;
  }
  const skip = (why: string) => {
    log.info(`${label}: cached copy not used (${why}), downloading`);
    return undefined;
  };
  let manifest: Manifest;
  try {
    manifest = await readManifest(paths.manifest, url);
  } catch (err) {
    await dropEntry(paths);
    return skip(errorText(err));
  }
  if (options.pin && options.pin.toLowerCase() !== manifest.sha256) {
    return skip("it does not match the pinned sha256");
  }
  let file: Deno.FsFile;
  try {
    file = await openOwnFile(paths.file);
  } catch (err) {
    await dropEntry(paths);
    return skip(errorText(err));
  }
  let checked: Reusable | NotReused;
  try {
    checked = await checkCopy(file, { url, manifest, options });
  } finally {
    file.close();
  }
  if ("skip" in checked) {
    if (checked.drop) await dropEntry(paths);
    if (checked.corrupt) {
      log.warn(`${label}: ${checked.skip}, downloading`);
      return undefined;
    }
    return skip(checked.skip);
  }
  const { identity, format } = checked;
  try {
    await clearName(dest);
    await Deno.link(paths.file, dest);
    if (!isSameFile(await Deno.lstat(dest), identity)) {
      await discard(dest);
      return skip("it was replaced while it was being checked");
    }
  } catch (err) {
    return skip(`cannot link it: ${errorText(err)}`);
  }
  log.info(
    `${label}: cached copy verified (sha256 ${manifest.sha256}), not downloaded`,
  );
  return {
    url,
    path: dest,
    size: manifest.size,
    sha256: manifest.sha256,
    identity,
    format,
    resumed: false,
    attempts: 0,
    cached: true,
  };
}

/** A cached copy that may be reused: the file checked, and its format. */
interface Reusable {
  identity: FileIdentity;
  format: Format;
}

/** Why a cached copy is not reused, and whether its entry is dropped for good. */
interface NotReused {
  skip: string;
  drop: boolean;
  /** The copy is corrupt: worth a warning, not a note. */
  corrupt?: boolean;
}

/**
 * Checks the open cached copy against its manifest: its size, the server's
 * answer to a HEAD (the file has not changed there), its sha256, and the
 * format the artifact must have.
 */
async function checkCopy(
  file: Deno.FsFile,
  context: { url: string; manifest: Manifest; options: LookupOptions },
): Promise<Reusable | NotReused> {
  const { url, manifest, options } = context;
  const identity = identityOf(await file.stat());
  if (identity.size !== manifest.size) {
    return { skip: "its size on disk is wrong", drop: true };
  }
  let head;
  try {
    head = await probe(url, {
      client: options.client,
      timeoutMs: options.timeoutMs,
      busy: options.busy,
      signal: options.signal,
    });
  } catch (err) {
    if (options.signal.aborted) throw err;
    return { skip: `HEAD failed: ${errorText(err)}`, drop: false };
  }
  const stale = staleReason(manifest, head);
  // The server says the file changed: the copy can never be reused.
  if (stale) return { skip: stale, drop: head.status === 200 };
  let sha256: string;
  try {
    sha256 = await sha256Of(file);
  } catch (err) {
    return { skip: `cannot read it: ${errorText(err)}`, drop: true };
  }
  if (sha256 !== manifest.sha256) {
    return {
      skip:
        `cached copy is corrupt (sha256 ${sha256}, expected ${manifest.sha256})`,
      drop: true,
      corrupt: true,
    };
  }
  try {
    return {
      identity,
      format: options.check(await readHeadOf(file), identity.size),
    };
  } catch (err) {
    return { skip: errorText(err), drop: true };
  }
}

/**
 * The entries being recorded, by cache file path: a plan that names one URL
 * twice (an initrd given twice) records it once, never two writers on the
 * same names at the same time.
 */
const recording = new Map<string, Promise<void>>();

/**
 * Records the verified file `result` for later runs, only when the server
 * gave a validator ({@linkcode hasValidator}: a strong `ETag` or a
 * `Last-Modified`). Never fails the boot: a cache that cannot be written is
 * only logged. While the same URL is being recorded (the same URL twice in
 * a plan), a second call waits for that one and leaves the entry to it.
 */
export async function record(
  dir: string,
  result: DownloadResult,
): Promise<void> {
  if (!hasValidator(result)) return;
  const key = cachePaths(dir, result.url).file;
  const earlier = recording.get(key);
  if (earlier) return await earlier;
  const writing = write(dir, result);
  recording.set(key, writing);
  try {
    await writing;
  } finally {
    recording.delete(key);
  }
}

/** Writes the cache entry of `result` (file, then manifest); failures are logged. */
async function write(dir: string, result: DownloadResult): Promise<void> {
  const paths = cachePaths(dir, result.url);
  const part = `${paths.file}.part`;
  const manifestPart = `${paths.manifest}.part`;
  try {
    await Deno.mkdir(`${dir}/cache`, { mode: 0o700 }).catch((err) => {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
    await dropEntry(paths);
    await clearName(part);
    await Deno.link(result.path, part);
    if (!isSameFile(await Deno.lstat(part), result.identity)) {
      throw new Error(`${result.path} is not the file that was verified`);
    }
    await Deno.rename(part, paths.file);
    const manifest: Manifest = {
      version: 1,
      url: result.url,
      size: result.size,
      sha256: result.sha256,
      ...(result.lastModified !== undefined
        ? { lastModified: result.lastModified }
        : {}),
      ...(result.etag !== undefined ? { etag: result.etag } : {}),
      ...(result.contentLength !== undefined
        ? { contentLength: result.contentLength }
        : {}),
      verifiedAt: new Date().toISOString(),
    };
    // Written last, and atomically: a manifest always names a verified file.
    const out = await createFile(manifestPart);
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(manifest) + "\n");
      let done = 0;
      while (done < bytes.length) done += await out.write(bytes.subarray(done));
    } finally {
      out.close();
    }
    await Deno.rename(manifestPart, paths.manifest);
  } catch (err) {
    await dropEntry(paths);
    await discard(part);
    await discard(manifestPart);
    log.warn(`Cannot cache ${redactUrl(result.url)}: ${errorText(err)}`);
  }
}

/**
 * Removes every entry of the cache (`--no-cache`: none will be used), when
 * `<dir>/cache` is a directory of ours (not checked at start then): anything
 * else there is left alone.
 */
export async function clear(dir: string): Promise<void> {
  try {
    const info = await Deno.lstat(`${dir}/cache`);
    let uid: number | null = null;
    try {
      uid = Deno.uid();
    } catch {
      // unknown: the lstat above refused links already
    }
    if (!info.isDirectory || (uid !== null && info.uid !== uid)) return;
  } catch {
    return;
  }
  await prune(dir, []);
}

/**
 * Removes the `.part` files of cache entries being written (synchronous and
 * never failing: for a run that is stopped, just before it exits).
 */
export function discardPartialSync(dir: string): void {
  try {
    for (const entry of Deno.readDirSync(`${dir}/cache`)) {
      if (entry.isDirectory || !CACHE_ENTRY.exec(entry.name)?.[3]) continue;
      try {
        Deno.removeSync(`${dir}/cache/${entry.name}`);
      } catch {
        // Gone already, or nothing we can do.
      }
    }
  } catch {
    // No cache directory, or nothing we can do.
  }
}

/** Removes cache entries for other URLs than `keep`, and leftover `.part` files (never a directory). */
export async function prune(dir: string, keep: string[]): Promise<void> {
  const keys = new Set(keep.map(cacheKey));
  try {
    for await (const entry of Deno.readDir(`${dir}/cache`)) {
      const m = CACHE_ENTRY.exec(entry.name);
      if (!entry.isDirectory && m && (m[3] || !keys.has(m[1]))) {
        await discard(`${dir}/cache/${entry.name}`);
      }
    }
  } catch {
    // No cache directory: nothing to prune.
  }
}
