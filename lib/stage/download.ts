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
 * When a body may be resumed is `resume.ts`'s rule; reading it (one reused
 * buffer) is `body_reader.ts`'s, and the stall and minimum-rate watchdog is
 * `lib/http/idle.ts`'s.
 *
 * @module
 */

import { isPxeInitrd } from "./artifact_url.ts";
import { bodyReader } from "./body_reader.ts";
import { BootError, errorText, ExitCode } from "../errors.ts";
import { type Format, readHeadOf } from "./formats.ts";
import {
  type HttpClient,
  HttpStatusError,
  isTransient,
  NetworkError,
  request,
} from "../http/request.ts";
import { log, redactUrl } from "../log.ts";
import type { ProgressTracker } from "./progress.ts";
import { sha256Of } from "./sha256.ts";
import { openSha256Stream } from "./sha256_stream.ts";
import { WritePipeline } from "./write_pipeline.ts";
import { ifRangeValue, resumeFrom, startOf, type State } from "./resume.ts";
import { withRetries } from "../http/retry.ts";
import { bodyExcerpt } from "../http/error_text.ts";
import { type BusyBudget, busyMessage } from "../http/busy.ts";
import {
  DEFAULT_MIN_SPEED,
  DEFAULT_MIN_SPEED_TIME_MS,
  watchBody,
} from "../http/idle.ts";
import {
  createFile,
  diskError,
  type FileIdentity,
  identityOf,
  isSameFile,
  renameVerified,
} from "./work_dir.ts";

/** Options for {@linkcode download}. */
export interface DownloadOptions {
  /** Client with extra CAs or `--insecure` (from `createClient`). */
  client?: HttpClient;
  /** Retries after the first attempt, busy answers aside (default 5). */
  retries?: number;
  /**
   * How long busy servers (`503`, `429`, refused or reset connections) may
   * still be waited for: the run's budget (default: 15 min for this download).
   */
  busy?: BusyBudget;
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
      `sha256 mismatch for ${
        redactUrl(url)
      }: expected ${expected}, got ${actual}`,
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
    await renameVerified(part, dest, { identity });
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
      `${
        redactUrl(url)
      }: resuming at byte ${state.have} (left by an earlier run)`,
    );
  }
  let attempts = 0;
  try {
    const how = () => {
      const from = resumeFrom(state, resumable);
      return from > 0 ? `resuming at byte ${from}` : "from the start";
    };
    await withRetries(async () => {
      attempts++;
      await attempt(url, file, path, state, options, resumable);
    }, {
      retries,
      busy: options.busy,
      signal: options.signal,
      baseDelayMs: options.baseDelayMs,
      maxDelayMs: options.maxDelayMs,
      retryable: isTransient,
      onBusy: (wait) =>
        log.warn(`${busyMessage(redactUrl(url), wait)}, ${how()}`),
      onRetry: (err, n, delay) => {
        log.warn(
          `${errorText(err)}; retry ${n}/${retries} in ${
            (delay / 1000).toFixed(1)
          } s, ${how()}`,
        );
      },
    });
  } catch (err) {
    state.hash?.close();
    throw finalError(err, url, attempts);
  }
  const hash = state.hash;
  state.hash = undefined;
  const size = state.have;
  if (size === 0) {
    hash?.close();
    throw new BootError(`${redactUrl(url)} is empty`, ExitCode.Verify);
  }
  let sha256: string;
  try {
    const onDisk = (await file.stat()).size;
    if (
      onDisk !== size || (state.total !== undefined && size !== state.total)
    ) {
      throw new BootError(
        `${redactUrl(url)}: ${onDisk} bytes on disk, expected ${
          state.total ?? size
        }`,
        ExitCode.Verify,
      );
    }
    if (state.resumed || !hash) {
      hash?.close();
      sha256 = await sha256Of(file);
    } else {
      sha256 = await hash.digest();
    }
  } catch (err) {
    hash?.close();
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
    const body = bodyExcerpt(err.body);
    return new BootError(
      `Cannot download ${redactUrl(url)}: HTTP ${err.status}${
        body ? ` (${body})` : ""
      }${tries}`,
      ExitCode.Download,
      { cause: err },
    );
  }
  if (err instanceof NetworkError) {
    return new BootError(
      `Cannot download ${redactUrl(url)}: ${err.reason}${tries}`,
      ExitCode.Download,
      { cause: err },
    );
  }
  return err;
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
    // Only when the size is wrong: on ext4, a file truncated to zero and then
    // written is flushed to disk on close (auto_da_alloc), which costs a
    // fresh 1 GiB download a quarter of a second before it can be used.
    if ((await file.stat()).size !== start) await file.truncate(start);
    await file.seek(start, Deno.SeekMode.Start);
  } catch (err) {
    await response.body?.cancel().catch(() => {});
    throw diskError(err, path);
  }
  state.have = start;
  state.hash?.close();
  state.hash = start === 0 ? openSha256Stream() : undefined;
  const pipeline = new WritePipeline({
    write: async (bytes) => {
      try {
        let done = 0;
        while (done < bytes.length) {
          done += await file.write(bytes.subarray(done));
        }
      } catch (err) {
        throw diskError(err, path);
      }
    },
    hash: state.hash,
    onWritten: (bytes) => {
      state.have += bytes;
      options.tracker?.update(state.have, state.total);
    },
  });
  let received = start;
  const watch = watchBody(url, {
    timeoutMs,
    minSpeed: options.minSpeed ?? DEFAULT_MIN_SPEED,
    windowMs: options.minSpeedTimeMs ?? DEFAULT_MIN_SPEED_TIME_MS,
    position: () => received,
    abort: (err) => idle.abort(err),
  });
  try {
    const read = bodyReader(response.body);
    if (read) {
      await pipeline.fill(async () => {
        try {
          return await read();
        } catch (err) {
          if (idle.signal.aborted) throw idle.signal.reason;
          if (options.signal?.aborted) throw err;
          throw new NetworkError(
            `${redactUrl(url)}: connection lost after ${received} bytes: ${
              errorText(err)
            }`,
            url,
            { cause: err },
          );
        }
      }, (bytes) => {
        watch.received(bytes);
        received += bytes;
      });
    }
  } finally {
    watch.stop();
    await pipeline.drain();
  }
  if (state.total !== undefined && state.have !== state.total) {
    throw new NetworkError(
      `${
        redactUrl(url)
      }: the body ended after ${state.have} of ${state.total} bytes`,
      url,
    );
  }
}
