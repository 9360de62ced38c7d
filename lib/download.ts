/**
 * Verified streaming downloads: each artifact goes straight to a file while
 * it is hashed (memory stays flat whatever the size), its length is checked
 * against `Content-Length`, transient failures are retried with backoff, a
 * body that stalls or trickles below a minimum rate is cut, and an
 * interrupted body is resumed with `Range` + `If-Range` when the server
 * allows it and the answer is provably the rest of the same version — except
 * the assisted `pxe-initrd`, whose bytes may differ between requests. A
 * resumed file is re-hashed whole from disk.
 *
 * Artifact requests never carry an `Authorization` header: signed URLs carry
 * their own credential.
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { isPxeInitrd } from "./artifact_url.ts";
import { BootError, errorText, ExitCode } from "./errors.ts";
import { type Format, readHeadOf } from "./formats.ts";
import {
  type HttpClient,
  HttpStatusError,
  isTransient,
  NetworkError,
  request,
  statusError,
} from "./http.ts";
import { log, redact } from "./log.ts";
import type { ProgressTracker } from "./progress.ts";
import { sha256Of } from "./sha256.ts";
import { withRetries } from "./retry.ts";
import {
  clearName,
  createFile,
  diskError,
  type FileIdentity,
  identityOf,
  isSameFile,
} from "./work_dir.ts";

/** Default `minSpeed`: bytes per second below which a body is cut (`--min-speed`). */
export const DEFAULT_MIN_SPEED = 1024;
/** Default `minSpeedTimeMs`: the window over which the rate is measured (`--min-speed-time`). */
export const DEFAULT_MIN_SPEED_TIME_MS = 30_000;

/** Options for {@linkcode download}. */
export interface DownloadOptions {
  /** Client with extra CAs or `--insecure` (from `createClient`). */
  client?: HttpClient;
  /** Retries after the first attempt (default 5). */
  retries?: number;
  /** Milliseconds to wait for the response headers, and for each body read (default 30 s). */
  timeoutMs?: number;
  /**
   * A body that brings fewer than `minSpeed` bytes per second over a window
   * of `minSpeedTimeMs` is cut (a network error: retried, resumed when
   * allowed, then Download). 0 turns the check off. Default
   * {@linkcode DEFAULT_MIN_SPEED}.
   */
  minSpeed?: number;
  /** The window for `minSpeed`, in milliseconds (default {@linkcode DEFAULT_MIN_SPEED_TIME_MS}). */
  minSpeedTimeMs?: number;
  /** Aborts the download. */
  signal?: AbortSignal;
  /** Expected sha256 (hex): a mismatch is fatal. */
  sha256?: string;
  /** Told about the bytes on disk. */
  tracker?: ProgressTracker;
  /**
   * Checks the first 4096 bytes (format) and the size of the whole file, and
   * returns the format it found (the result's `format`); throws to reject
   * the file.
   */
  check?: (head: Uint8Array, size: number) => Format;
  /** First backoff delay in milliseconds (default 500; tests use less). */
  baseDelayMs?: number;
  /** Longest backoff delay in milliseconds (default 30 s). */
  maxDelayMs?: number;
  /**
   * For long downloads whose digest is pinned (ignored without `sha256`): a
   * `.part` an earlier run left is resumed with `Range` (without `If-Range`:
   * nothing is known of the version of its bytes, the pin decides, over the
   * whole file re-hashed), and the `.part` a network failure leaves is kept
   * for the next run. The image pipeline uses it; the bootloader never does.
   */
  keepPart?: boolean;
}

/** The sha256 of a downloaded file is not the pinned one (Verify). */
export class DigestMismatchError extends BootError {
  /** The pinned sha256, hex, lower case. */
  readonly expected: string;
  /** The sha256 of what was downloaded, hex. */
  readonly actual: string;

  /** Creates the error for `url` (named, redacted, in the message). */
  constructor(url: string, expected: string, actual: string) {
    super(
      `sha256 mismatch for ${redact(url)}: expected ${expected}, got ${actual}`,
      ExitCode.Verify,
    );
    this.name = "DigestMismatchError";
    this.expected = expected;
    this.actual = actual;
  }
}

/** A downloaded and verified artifact. */
export interface DownloadResult {
  /** The URL as given. */
  url: string;
  /** The file it was written to. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** sha256 of the whole file, hex. */
  sha256: string;
  /** The file that was verified: what later readers must find at `path`. */
  identity: FileIdentity;
  /** What the `check` found the file to be (absent without a `check`). */
  format?: Format;
  /** True when the file was put together from more than one response. */
  resumed: boolean;
  /** Requests made (1 when nothing was retried). */
  attempts: number;
  /** `Last-Modified` of the response(s) the file came from, when given. */
  lastModified?: string;
  /** `ETag` of the response(s) the file came from, when given. */
  etag?: string;
  /** The full length the server announced (`Content-Length` or `Content-Range`), when it did. */
  contentLength?: number;
}

/** What a `HEAD` answered about an artifact. */
export interface ProbeResult {
  /** HTTP status of the final response (after redirects). */
  status: number;
  /** `Content-Length`, when given. */
  contentLength?: number;
  /** `Last-Modified`, when given. */
  lastModified?: string;
  /** `ETag`, when given. */
  etag?: string;
}

/** Options for {@linkcode probe}. */
export interface ProbeOptions {
  /** Client with extra CAs or `--insecure` (from `createClient`). */
  client?: HttpClient;
  /** Milliseconds for the whole exchange (default 30 s). */
  timeoutMs?: number;
  /** Aborts the request. */
  signal?: AbortSignal;
}

/**
 * Sends one `HEAD` for `url` through the downloads' request policy (capped
 * redirects, no `Authorization`, timeout), without retries. Any status is
 * returned; a network failure throws a {@linkcode NetworkError}.
 */
export async function probe(
  url: string,
  options: ProbeOptions = {},
): Promise<ProbeResult> {
  const response = await request(url, {
    method: "HEAD",
    headers: { "accept-encoding": "identity" },
    client: options.client,
    timeoutMs: options.timeoutMs,
    signal: options.signal,
  });
  // A 303 turns the request into a GET: never read a body here.
  await response.body?.cancel().catch(() => {});
  const { lastModified, etag } = validators(response);
  return {
    status: response.status,
    contentLength: contentLength(response),
    ...(lastModified ? { lastModified } : {}),
    ...(etag ? { etag } : {}),
  };
}

interface State {
  /** Bytes of the current file that are on disk and came from the server. */
  have: number;
  /** The first response said `Accept-Ranges: bytes`. */
  ranges: boolean;
  /** Full length the first response announced (`Content-Length`). */
  total?: number;
  /** The file on disk was put together from several responses. */
  resumed: boolean;
  /** Hash of the bytes written, when they all came from one response. */
  hash?: Hash;
  /** `Last-Modified` of the first response. */
  lastModified?: string;
  /** `ETag` of the first response. */
  etag?: string;
  /** The `have` bytes were left by an earlier run: their version is unknown (`keepPart`). */
  leftover?: boolean;
}

/** An `ETag` fit to be sent back (`"…"` or `W/"…"`, visible characters only). */
const ENTITY_TAG = /^(W\/)?"[\x21\x23-\x7e]*"$/;
/** A `Last-Modified` fit to be sent back (printable ASCII, a date). */
const HTTP_DATE = /^[\x20-\x7e]+$/;

/** `ETag` and `Last-Modified` of a response, each only when it is well-formed. */
function validators(
  response: Response,
): { etag?: string; lastModified?: string } {
  const etag = response.headers.get("etag")?.trim();
  const lastModified = response.headers.get("last-modified")?.trim();
  return {
    etag: etag && ENTITY_TAG.test(etag) ? etag : undefined,
    lastModified: lastModified && HTTP_DATE.test(lastModified) &&
        !Number.isNaN(Date.parse(lastModified))
      ? lastModified
      : undefined,
  };
}

/**
 * The `If-Range` validator of the first response: its strong `ETag`, else
 * its `Last-Modified`; undefined when it had neither (then nothing is
 * resumed: without a validator a changed file cannot be told apart).
 */
function ifRangeValue(state: State): string | undefined {
  if (state.etag && !state.etag.startsWith("W/")) return state.etag;
  return state.lastModified;
}

/** Where the next attempt starts: the bytes on disk when they can be resumed, else 0. */
function resumeFrom(state: State, resumable: boolean): number {
  if (state.leftover) return resumable ? state.have : 0;
  return resumable && state.ranges && state.have > 0 &&
      state.total !== undefined && state.have < state.total &&
      ifRangeValue(state) !== undefined
    ? state.have
    : 0;
}

function parseContentRange(
  value: string | null,
): { start: number; end: number; total?: number } | undefined {
  const m = value?.match(/^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i);
  if (!m) return undefined;
  return {
    start: Number(m[1]),
    end: Number(m[2]),
    total: m[3] === "*" ? undefined : Number(m[3]),
  };
}

function contentLength(response: Response): number | undefined {
  const value = response.headers.get("content-length");
  return value && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

/**
 * Why a `206` is not the rest of the file the first response started, or
 * undefined when it is: it must start where asked, announce the same total
 * length, and carry the same `ETag` and `Last-Modified`.
 */
function spliceRisk(
  response: Response,
  state: State,
  from: number,
): string | undefined {
  const range = parseContentRange(response.headers.get("content-range"));
  if (!range) return "no valid Content-Range";
  if (range.start !== from) {
    return `it starts at byte ${range.start}, not ${from}`;
  }
  if (range.total !== state.total) {
    return `the file is now ${range.total ?? "of unknown length"}${
      range.total === undefined ? "" : " bytes"
    }, not ${state.total} bytes`;
  }
  if (range.end < range.start || range.end >= range.total!) {
    return `its range ${range.start}-${range.end} is not inside the file`;
  }
  const { etag, lastModified } = validators(response);
  if (etag !== state.etag) {
    return `its ETag changed (${state.etag ?? "none"} → ${etag ?? "none"})`;
  }
  if (lastModified !== state.lastModified) {
    return `its Last-Modified changed (${state.lastModified ?? "none"} → ${
      lastModified ?? "none"
    })`;
  }
  return undefined;
}

/**
 * Downloads `url` to `dest` and verifies it (length, non-empty, pin, and the
 * caller's `check` of the first bytes and the size).
 *
 * The bytes go to `dest + ".part"`, created exclusively (a leftover at that
 * name — file, link, FIFO — is removed, never written through) and written
 * through one open file for every attempt; it is renamed to `dest` only when
 * every check passed, and removed when one failed: a file at `dest` is always
 * a verified one, and the result's `identity` says which.
 *
 * An interrupted body is resumed only with `If-Range` (the first response's
 * strong `ETag`, else its `Last-Modified`) when the first response announced
 * `Accept-Ranges: bytes` and its length; a `200` to the resume starts over
 * from byte 0, and a `206` that is not the rest of the same version (another
 * start, total length, `ETag` or `Last-Modified`) is dropped and the next
 * attempt starts over. A resumed file is re-hashed whole from disk.
 *
 * Throws a {@linkcode BootError}: Download (5) when the server or the network
 * fails for good (the cause is the {@linkcode HttpStatusError} or
 * {@linkcode NetworkError}), Verify (6) for an empty file, a short file, a pin
 * mismatch or a failed check, Disk (8) when `dest` cannot be written.
 */
export async function download(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const part = `${dest}.part`;
  const keepPart = options.keepPart === true && options.sha256 !== undefined;
  let file: Deno.FsFile | undefined;
  try {
    const leftover = keepPart ? await openLeftover(part) : undefined;
    file = leftover?.file ?? await createFile(part);
    const result = await downloadTo(url, file, part, {
      ...options,
      leftover: leftover?.size ?? 0,
    });
    let identity: FileIdentity;
    let format: Format | undefined;
    try {
      if (options.check) {
        format = options.check(await readHeadOf(file), result.size);
      }
      identity = identityOf(await file.stat());
    } catch (err) {
      throw diskError(err, part);
    }
    file.close();
    file = undefined;
    await clearName(dest);
    try {
      await Deno.rename(part, dest);
      if (!isSameFile(await Deno.lstat(dest), identity)) {
        throw new BootError(
          `${dest} was replaced while the bootloader put it in place`,
          ExitCode.Disk,
        );
      }
    } catch (err) {
      throw diskError(err, dest);
    }
    options.tracker?.finish({ size: result.size, sha256: result.sha256 });
    return {
      ...result,
      path: dest,
      identity,
      ...(format !== undefined ? { format } : {}),
    };
  } catch (err) {
    options.tracker?.fail();
    if (file) {
      file.close();
      // A network failure keeps what came for the next run (`keepPart`).
      const partial = err instanceof BootError &&
        err.exitCode === ExitCode.Download;
      if (!keepPart || !partial) await Deno.remove(part).catch(() => {});
    }
    throw err;
  }
}

/**
 * The `.part` an earlier run left at `path`, open for reading and writing
 * with its size, when it is a non-empty regular file of ours (anything else
 * there is replaced by a new file, `undefined`).
 */
async function openLeftover(
  path: string,
): Promise<{ file: Deno.FsFile; size: number } | undefined> {
  let file: Deno.FsFile | undefined;
  try {
    const named = await Deno.lstat(path);
    // Without --allow-sys the owner cannot be known: the pin still decides.
    let uid: number | null = null;
    try {
      uid = Deno.uid();
    } catch {
      // unknown
    }
    if (
      !named.isFile || named.size === 0 || (uid !== null && named.uid !== uid)
    ) {
      return undefined;
    }
    file = await Deno.open(path, { read: true, write: true });
    const opened = await file.stat();
    if (!opened.isFile || !isSameFile(opened, identityOf(named))) {
      file.close();
      return undefined;
    }
    return { file, size: opened.size };
  } catch {
    file?.close();
    return undefined;
  }
}

async function downloadTo(
  url: string,
  file: Deno.FsFile,
  path: string,
  options: DownloadOptions & { leftover: number },
): Promise<Omit<DownloadResult, "identity">> {
  const resumable = !isPxeInitrd(url);
  const retries = options.retries ?? 5;
  const state: State = {
    have: options.leftover,
    ranges: false,
    resumed: false,
    leftover: options.leftover > 0,
  };
  if (state.leftover && resumable) {
    log.info(
      `${redact(url)}: resuming at byte ${state.have} (left by an earlier run)`,
    );
  }
  let attempts = 0;
  try {
    await withRetries(async () => {
      attempts++;
      await attempt(url, file, path, state, options, resumable);
    }, {
      retries,
      signal: options.signal,
      baseDelayMs: options.baseDelayMs,
      maxDelayMs: options.maxDelayMs,
      retryable: isTransient,
      onRetry: (err, n, delay) => {
        const from = resumeFrom(state, resumable);
        const how = from > 0 ? `resuming at byte ${from}` : "from the start";
        log.warn(
          `${errorText(err)}; retry ${n}/${retries} in ${
            (delay / 1000).toFixed(1)
          } s, ${how}`,
        );
      },
    });
  } catch (err) {
    throw finalError(err, url, attempts);
  }
  const size = state.have;
  if (size === 0) {
    throw new BootError(`${redact(url)} is empty`, ExitCode.Verify);
  }
  let sha256: string;
  try {
    const onDisk = (await file.stat()).size;
    if (
      onDisk !== size || (state.total !== undefined && size !== state.total)
    ) {
      throw new BootError(
        `${redact(url)}: ${onDisk} bytes on disk, expected ${
          state.total ?? size
        }`,
        ExitCode.Verify,
      );
    }
    sha256 = state.resumed || !state.hash
      ? await sha256Of(file)
      : state.hash.digest("hex");
  } catch (err) {
    throw diskError(err, path);
  }
  if (options.sha256 && sha256 !== options.sha256.toLowerCase()) {
    throw new DigestMismatchError(url, options.sha256.toLowerCase(), sha256);
  }
  return {
    url,
    path,
    size,
    sha256,
    resumed: state.resumed,
    attempts,
    ...(state.lastModified ? { lastModified: state.lastModified } : {}),
    ...(state.etag ? { etag: state.etag } : {}),
    ...(state.total !== undefined ? { contentLength: state.total } : {}),
  };
}

function finalError(err: unknown, url: string, attempts: number): unknown {
  if (err instanceof BootError) return err;
  const tries = attempts > 1 ? ` (after ${attempts} attempts)` : "";
  if (err instanceof HttpStatusError) {
    const body = err.body.split("\n")[0].trim().slice(0, 120);
    return new BootError(
      `Cannot download ${redact(url)}: HTTP ${err.status}${
        body ? ` (${redact(body)})` : ""
      }${tries}`,
      ExitCode.Download,
      { cause: err },
    );
  }
  if (err instanceof NetworkError) {
    return new BootError(
      `Cannot download ${redact(url)}: ${
        err.message.replace(`${redact(err.url)}: `, "")
      }${tries}`,
      ExitCode.Download,
      { cause: err },
    );
  }
  return err;
}

/**
 * Where the bytes of `response` go in the file: `from` for a `206` that is
 * the rest of the same file, 0 for a `200` (whose length, ranges and
 * validators become the state's). Anything else throws: a `206` that is not
 * the rest of the same version or a `416` (a network error after which the
 * next attempt starts over), another status (its {@linkcode HttpStatusError}).
 */
async function startOf(
  response: Response,
  state: State,
  from: number,
  url: string,
): Promise<number> {
  if (from > 0 && response.status === 206 && state.leftover) {
    return leftoverStart(response, state, from, url);
  }
  if (from > 0 && response.status === 206) {
    const why = spliceRisk(response, state, from);
    if (why) {
      await response.body?.cancel().catch(() => {});
      // The next attempt starts over from byte 0.
      state.ranges = false;
      throw new NetworkError(
        `${
          redact(url)
        }: the answer to a resume is not the rest of the same file (${why}), starting over`,
        url,
      );
    }
    state.resumed = true;
    return from;
  }
  if (from > 0 && response.status === 416) {
    await response.body?.cancel().catch(() => {});
    state.ranges = false;
    state.leftover = false;
    throw new NetworkError(
      `${redact(url)}: the server refused to resume (416), starting over`,
      url,
    );
  }
  if (response.status !== 200) throw await statusError(response, url);
  const { etag, lastModified } = validators(response);
  state.total = contentLength(response);
  state.ranges = /\bbytes\b/i.test(
    response.headers.get("accept-ranges") ?? "",
  );
  state.resumed = false;
  state.leftover = false;
  state.etag = etag;
  state.lastModified = lastModified;
  return 0;
}

/**
 * Where the bytes of a `206` answering the resume of a leftover go: `from`,
 * when its `Content-Range` starts there inside a known total length (which,
 * with its validators, becomes the state's, as a first response's would).
 * Otherwise a network error, after which the next attempt starts over.
 */
async function leftoverStart(
  response: Response,
  state: State,
  from: number,
  url: string,
): Promise<number> {
  const range = parseContentRange(response.headers.get("content-range"));
  state.leftover = false;
  if (
    !range || range.start !== from || range.total === undefined ||
    range.end < range.start || range.end >= range.total
  ) {
    await response.body?.cancel().catch(() => {});
    throw new NetworkError(
      `${
        redact(url)
      }: the answer to the resume of an earlier run's bytes has no usable Content-Range, starting over`,
      url,
    );
  }
  const { etag, lastModified } = validators(response);
  state.total = range.total;
  state.ranges = true;
  state.resumed = true;
  state.etag = etag;
  state.lastModified = lastModified;
  return from;
}

/** Options for {@linkcode watchBody}. */
interface WatchOptions {
  /** The longest silence, in milliseconds. */
  timeoutMs: number;
  /** Bytes per second below which the body is cut (0: never). */
  minSpeed: number;
  /** The window `minSpeed` is measured over, in milliseconds. */
  windowMs: number;
  /** Bytes of the file on disk or in the buffer, for messages. */
  position: () => number;
  /** Aborts the body read with a {@linkcode NetworkError}. */
  abort: (err: NetworkError) => void;
}

/**
 * Watches a body for a stall (nothing for `timeoutMs`) or a trickle (fewer
 * than `minSpeed` bytes per second over each window of `windowMs`), and
 * aborts it with a network error naming which. Call `received` for every
 * chunk, `stop` at the end.
 */
function watchBody(
  url: string,
  options: WatchOptions,
): { received: (bytes: number) => void; stop: () => void } {
  const { timeoutMs, minSpeed, windowMs } = options;
  let received = 0;
  let last = Date.now();
  let windowStart = last;
  let windowFrom = 0;
  const seconds = (ms: number) => Number((ms / 1000).toFixed(1));
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - last > timeoutMs) {
      options.abort(
        new NetworkError(
          `${redact(url)}: no data for ${
            seconds(timeoutMs)
          } s after ${options.position()} bytes`,
          url,
        ),
      );
    } else if (minSpeed > 0 && now - windowStart >= windowMs) {
      const got = received - windowFrom;
      if (got < minSpeed * (now - windowStart) / 1000) {
        options.abort(
          new NetworkError(
            `${redact(url)}: slower than ${minSpeed} bytes/s (${got} bytes in ${
              seconds(now - windowStart)
            } s) after ${options.position()} bytes`,
            url,
          ),
        );
      }
      windowStart = now;
      windowFrom = received;
    }
  }, Math.max(10, Math.min(1000, timeoutMs / 4, windowMs / 4)));
  return {
    received: (bytes) => {
      last = Date.now();
      received += bytes;
    },
    stop: () => clearInterval(timer),
  };
}

/**
 * One request: appends to the file from `state.have` (a resume that passed
 * every check) or rewrites it from byte 0.
 */
async function attempt(
  url: string,
  file: Deno.FsFile,
  path: string,
  state: State,
  options: DownloadOptions,
  resumable: boolean,
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const from = resumeFrom(state, resumable);
  const headers: Record<string, string> = { "accept-encoding": "identity" };
  if (from > 0) {
    headers["range"] = `bytes=${from}-`;
    // An earlier run's bytes have no validator: the pin vouches for them.
    if (!state.leftover) headers["if-range"] = ifRangeValue(state)!;
  }
  const idle = new AbortController();
  const signal = options.signal
    ? AbortSignal.any([options.signal, idle.signal])
    : idle.signal;
  const response = await request(url, {
    headers,
    client: options.client,
    timeoutMs,
    timeoutScope: "headers",
    signal,
  });
  const start = await startOf(response, state, from, url);
  try {
    await file.truncate(start);
    await file.seek(start, Deno.SeekMode.Start);
  } catch (err) {
    await response.body?.cancel().catch(() => {});
    throw diskError(err, path);
  }
  state.have = start;
  if (start === 0) state.hash = createHash("sha256");
  const hash = start === 0 ? state.hash : undefined;
  const pending = new Uint8Array(1 << 20);
  let used = 0;
  async function flush(): Promise<void> {
    let done = 0;
    try {
      while (done < used) {
        done += await file.write(pending.subarray(done, used));
      }
    } catch (err) {
      throw diskError(err, path);
    }
    hash?.update(pending.subarray(0, used));
    state.have += used;
    used = 0;
    options.tracker?.update(state.have, state.total);
  }

  const watch = watchBody(url, {
    timeoutMs,
    minSpeed: options.minSpeed ?? DEFAULT_MIN_SPEED,
    windowMs: options.minSpeedTimeMs ?? DEFAULT_MIN_SPEED_TIME_MS,
    position: () => state.have + used,
    abort: (err) => idle.abort(err),
  });
  try {
    const read = bodyReader(response.body);
    while (read) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await read();
      } catch (err) {
        if (idle.signal.aborted) throw idle.signal.reason;
        if (options.signal?.aborted) throw err;
        throw new NetworkError(
          `${redact(url)}: connection lost after ${state.have + used} bytes: ${
            errorText(err)
          }`,
          url,
          { cause: err },
        );
      }
      if (chunk.done) break;
      let value = chunk.value;
      watch.received(value.length);
      while (value.length > 0) {
        const n = Math.min(value.length, pending.length - used);
        pending.set(value.subarray(0, n), used);
        used += n;
        value = value.subarray(n);
        if (used === pending.length) await flush();
      }
    }
  } finally {
    watch.stop();
    await flush();
  }
  if (state.total !== undefined && state.have !== state.total) {
    throw new NetworkError(
      `${
        redact(url)
      }: the body ended after ${state.have} of ${state.total} bytes`,
      url,
    );
  }
}

/**
 * Reads a body into one reused buffer with a BYOB reader when the body is a
 * byte stream (fetch bodies are): no allocation per chunk, so memory stays
 * flat and the garbage collector has nothing to chase. Falls back to the
 * default reader (the `--insecure` path). A chunk is valid until the next call.
 */
function bodyReader(
  body: ReadableStream<Uint8Array> | null,
): (() => Promise<ReadableStreamReadResult<Uint8Array>>) | undefined {
  if (!body) return undefined;
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    const reader = body.getReader();
    return () => reader.read();
  }
  let buffer = new ArrayBuffer(256 * 1024);
  return async () => {
    const result = await byob.read(new Uint8Array(buffer));
    if (result.value) buffer = result.value.buffer as ArrayBuffer;
    return result.done
      ? { done: true, value: undefined }
      : { done: false, value: result.value };
  };
}
