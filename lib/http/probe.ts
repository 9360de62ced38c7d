/**
 * One `HEAD` for an artifact, through the downloads' request policy: what the
 * server says of it (status, length, validators) without its body. The
 * artifact cache compares it with its manifest.
 *
 * @module
 */

import { type HttpClient, request } from "./request.ts";
import { contentLength, validators } from "../stage/resume.ts";

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
