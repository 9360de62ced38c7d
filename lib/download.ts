/**
 * Verified streaming downloads: each artifact goes straight to a file while
 * it is hashed (memory stays flat whatever the size), its length is checked
 * against `Content-Length`, transient failures are retried with backoff, and
 * an interrupted body is resumed with `Range` when the server allows it —
 * except the assisted `pxe-initrd`, whose bytes may differ between requests.
 * A resumed file is re-hashed whole from disk.
 *
 * Artifact requests never carry an `Authorization` header: signed URLs carry
 * their own credential.
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { BootError, ExitCode } from "./errors.ts";
import { readHead } from "./formats.ts";
import {
  errorText,
  HttpStatusError,
  isTransient,
  NetworkError,
  request,
  statusError,
  withRetries,
} from "./http.ts";
import { log, redact } from "./log.ts";
import type { ProgressTracker } from "./progress.ts";

/** Options for {@linkcode download}. */
export interface DownloadOptions {
  /** Client with extra CAs or `--insecure` (from `createClient`). */
  client?: Deno.HttpClient;
  /** Retries after the first attempt (default 5). */
  retries?: number;
  /** Milliseconds to wait for the response headers, and for each body read (default 30 s). */
  timeoutMs?: number;
  /** Aborts the download. */
  signal?: AbortSignal;
  /** Expected sha256 (hex): a mismatch is fatal. */
  sha256?: string;
  /** Told about the bytes on disk. */
  tracker?: ProgressTracker;
  /** Checks the first 4096 bytes (format); throws to reject the file. */
  check?: (head: Uint8Array) => void;
  /** First backoff delay in milliseconds (default 500; tests use less). */
  baseDelayMs?: number;
  /** Longest backoff delay in milliseconds (default 30 s). */
  maxDelayMs?: number;
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
  /** True when the file was put together from more than one response. */
  resumed: boolean;
  /** Requests made (1 when nothing was retried). */
  attempts: number;
  /** `Last-Modified` of the response(s), absent when missing or when two responses disagreed. */
  lastModified?: string;
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
}

/** Options for {@linkcode probe}. */
export interface ProbeOptions {
  /** Client with extra CAs or `--insecure` (from `createClient`). */
  client?: Deno.HttpClient;
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
  const lastModified = response.headers.get("last-modified")?.trim();
  return {
    status: response.status,
    contentLength: contentLength(response),
    ...(lastModified ? { lastModified } : {}),
  };
}

/** True for the assisted image service's `pxe-initrd`, which must never be resumed. */
export function isPxeInitrd(url: string): boolean {
  try {
    return new URL(url).pathname.endsWith("/pxe-initrd");
  } catch {
    return false;
  }
}

const DISK_CODES = new Set([
  "ENOSPC",
  "EDQUOT",
  "EROFS",
  "EACCES",
  "EPERM",
  "ENOENT",
  "ENOTDIR",
]);

/**
 * Maps a file-system failure (disk full, read-only, permission, missing
 * directory) on `path` to a
 * {@linkcode BootError} with exit code Disk; returns any other error unchanged.
 */
export function diskError(err: unknown, path: string): unknown {
  if (err instanceof BootError) return err;
  const code = (err as { code?: unknown })?.code;
  if (
    err instanceof Deno.errors.PermissionDenied ||
    err instanceof Deno.errors.NotFound ||
    (typeof code === "string" && DISK_CODES.has(code))
  ) {
    return new BootError(
      `Cannot write ${path}: ${errorText(err)}`,
      ExitCode.Disk,
      { cause: err },
    );
  }
  return err;
}

/** The sha256 (hex) of a file, read in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

interface State {
  /** Bytes of the current file that are on disk and came from the server. */
  have: number;
  /** The server said `Accept-Ranges: bytes`. */
  ranges: boolean;
  /** Full length, when the server said it. */
  total?: number;
  /** The file on disk was put together from several responses. */
  resumed: boolean;
  /** Hash of the bytes written, when they all came from one response. */
  hash?: Hash;
  /** `Last-Modified` of the first full response. */
  lastModified?: string;
  /** A later response (a resume) named another `Last-Modified`. */
  lastModifiedChanged?: boolean;
}

function parseContentRange(
  value: string | null,
): { start: number; total?: number } | undefined {
  const m = value?.match(/^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i);
  if (!m) return undefined;
  return {
    start: Number(m[1]),
    total: m[3] === "*" ? undefined : Number(m[3]),
  };
}

function contentLength(response: Response): number | undefined {
  const value = response.headers.get("content-length");
  return value && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

/**
 * Downloads `url` to `dest` and verifies it (length, non-empty, pin, and the
 * caller's `check` of the first bytes).
 *
 * The bytes go to `dest + ".part"`, which is renamed to `dest` only when every
 * check passed and removed when one failed: a file at `dest` is always a
 * verified one.
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
  try {
    const result = await downloadTo(url, part, options);
    if (options.check) {
      let head: Uint8Array;
      try {
        head = await readHead(part, 4096);
      } catch (err) {
        throw diskError(err, part);
      }
      options.check(head);
    }
    try {
      await Deno.rename(part, dest);
    } catch (err) {
      throw diskError(err, dest);
    }
    options.tracker?.finish({ size: result.size, sha256: result.sha256 });
    return { ...result, path: dest };
  } catch (err) {
    options.tracker?.fail();
    await Deno.remove(part).catch(() => {});
    throw err;
  }
}

async function downloadTo(
  url: string,
  dest: string,
  options: DownloadOptions,
): Promise<DownloadResult> {
  const resumable = !isPxeInitrd(url);
  const retries = options.retries ?? 5;
  const state: State = { have: 0, ranges: false, resumed: false };
  try {
    (await Deno.open(dest, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o600,
    })).close();
  } catch (err) {
    throw diskError(err, dest);
  }
  let attempts = 0;
  try {
    await withRetries(async () => {
      attempts++;
      await attempt(url, dest, state, options, resumable);
    }, {
      retries,
      signal: options.signal,
      baseDelayMs: options.baseDelayMs,
      maxDelayMs: options.maxDelayMs,
      retryable: isTransient,
      onRetry: (err, n, delay) => {
        const how = resumable && state.ranges && state.have > 0
          ? `resuming at byte ${state.have}`
          : "from the start";
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
    const onDisk = (await Deno.stat(dest)).size;
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
      ? await sha256File(dest)
      : state.hash.digest("hex");
  } catch (err) {
    throw diskError(err, dest);
  }
  if (options.sha256 && sha256 !== options.sha256.toLowerCase()) {
    throw new BootError(
      `sha256 mismatch for ${
        redact(url)
      }: expected ${options.sha256.toLowerCase()}, got ${sha256}`,
      ExitCode.Verify,
    );
  }
  return {
    url,
    path: dest,
    size,
    sha256,
    resumed: state.resumed,
    attempts,
    ...(state.lastModified && !state.lastModifiedChanged
      ? { lastModified: state.lastModified }
      : {}),
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

/** One request: appends to the file from `state.have` (resume) or rewrites it from 0. */
async function attempt(
  url: string,
  dest: string,
  state: State,
  options: DownloadOptions,
  resumable: boolean,
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const from = resumable && state.ranges && state.have > 0 ? state.have : 0;
  const headers: Record<string, string> = { "accept-encoding": "identity" };
  if (from > 0) headers["range"] = `bytes=${from}-`;
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
  let start: number;
  if (from > 0 && response.status === 206) {
    const range = parseContentRange(response.headers.get("content-range"));
    if (!range || range.start !== from) {
      await response.body?.cancel();
      state.ranges = false;
      throw new NetworkError(
        `${
          redact(url)
        }: unexpected Content-Range in the answer to a resume, restarting`,
        url,
      );
    }
    start = from;
    if (range.total !== undefined) state.total = range.total;
    state.resumed = true;
    if (
      (response.headers.get("last-modified")?.trim() || undefined) !==
        state.lastModified
    ) state.lastModifiedChanged = true;
  } else if (from > 0 && response.status === 416) {
    await response.body?.cancel();
    state.ranges = false;
    throw new NetworkError(
      `${redact(url)}: the server refused to resume (416), restarting`,
      url,
    );
  } else if (response.status === 200) {
    start = 0;
    state.total = contentLength(response);
    state.ranges = /\bbytes\b/i.test(
      response.headers.get("accept-ranges") ?? "",
    );
    state.resumed = false;
    state.lastModified = response.headers.get("last-modified")?.trim() ||
      undefined;
    state.lastModifiedChanged = false;
  } else {
    throw await statusError(response, url);
  }

  let file: Deno.FsFile;
  try {
    file = await Deno.open(dest, { write: true });
    await file.truncate(start);
    await file.seek(start, Deno.SeekMode.Start);
  } catch (err) {
    await response.body?.cancel();
    throw diskError(err, dest);
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
      throw diskError(err, dest);
    }
    hash?.update(pending.subarray(0, used));
    state.have += used;
    used = 0;
    options.tracker?.update(state.have, state.total);
  }

  let last = Date.now();
  const watchdog = setInterval(() => {
    if (Date.now() - last > timeoutMs) {
      idle.abort(
        new NetworkError(
          `${redact(url)}: no data for ${
            Number((timeoutMs / 1000).toFixed(1))
          } s after ${state.have + used} bytes`,
          url,
        ),
      );
    }
  }, Math.max(10, Math.min(1000, timeoutMs / 4)));
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
      last = Date.now();
      let value = chunk.value;
      while (value.length > 0) {
        const n = Math.min(value.length, pending.length - used);
        pending.set(value.subarray(0, n), used);
        used += n;
        value = value.subarray(n);
        if (used === pending.length) await flush();
      }
    }
  } finally {
    clearInterval(watchdog);
    try {
      await flush();
    } finally {
      file.close();
    }
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
