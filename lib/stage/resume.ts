/**
 * When an interrupted download may go on where it stopped, and whether an
 * answer is the rest of the same file: the state of one artifact's
 * responses, the `If-Range` validator (the first response's strong `ETag`,
 * else its `Last-Modified`), and where each answer's bytes go (`startOf`).
 * Without a validator nothing is resumed: a changed file could not be told
 * apart. An earlier run's bytes (`download`'s `keepPart`) are resumed without
 * one: the pinned digest vouches for the whole file.
 *
 * @module
 */

import { contentLength, validators } from "../http/entity.ts";
import { NetworkError, statusError } from "../http/request.ts";
import { redactUrl } from "../log.ts";
import type { Sha256Stream } from "./sha256_stream.ts";

/** What the responses so far said about one artifact, and what is on disk. */
export interface State {
  /** Bytes of the current file that are on disk and came from the server. */
  have: number;
  /** The first response said `Accept-Ranges: bytes`. */
  ranges: boolean;
  /** Full length the first response announced (`Content-Length`). */
  total?: number;
  /** The file on disk was put together from several responses. */
  resumed: boolean;
  /** Hash of the bytes written, when they all came from one response. */
  hash?: Sha256Stream;
  /** `Last-Modified` of the first response. */
  lastModified?: string;
  /** `ETag` of the first response. */
  etag?: string;
  /** The `have` bytes were left by an earlier run: their version is unknown (`keepPart`). */
  leftover?: boolean;
}

/**
 * The `If-Range` validator of the first response: its strong `ETag`, else
 * its `Last-Modified`; undefined when it had neither (then nothing is
 * resumed: without a validator a changed file cannot be told apart).
 */
export function ifRangeValue(state: State): string | undefined {
  if (state.etag && !state.etag.startsWith("W/")) return state.etag;
  return state.lastModified;
}

/** Where the next attempt starts: the bytes on disk when they can be resumed, else 0. */
export function resumeFrom(state: State, resumable: boolean): number {
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
 * Where the bytes of `response` go in the file: `from` for a `206` that is
 * the rest of the same file, 0 for a `200` (whose length, ranges and
 * validators become the state's). Anything else throws: a `206` that is not
 * the rest of the same version or a `416` (a network error after which the
 * next attempt starts over), another status (its {@linkcode HttpStatusError}).
 */
export async function startOf(
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
          redactUrl(url)
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
      `${redactUrl(url)}: the server refused to resume (416), starting over`,
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
        redactUrl(url)
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
