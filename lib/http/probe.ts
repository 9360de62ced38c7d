/**
 * One `HEAD` for an artifact, through the downloads' request policy: what the
 * server says of it (status, length, validators) without its body. The
 * artifact cache compares it with its manifest; the memory preflight reads
 * the length.
 *
 * @module
 */

import type { BusyBudget } from "./busy.ts";
import { type HttpClient, HttpStatusError, request } from "./request.ts";
import { parseRetryAfter } from "./retry_after.ts";
import { redact } from "../log.ts";
import { withRetries } from "./retry.ts";
import { contentLength, validators } from "./entity.ts";

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
  /** How long a busy server may still be waited for (the run's budget; default 15 min). */
  busy?: BusyBudget;
  /** Aborts the request. */
  signal?: AbortSignal;
}

/**
 * Sends a `HEAD` for `url` through the downloads' request policy (capped
 * redirects, no `Authorization`, timeout). A busy server (`503`, `429`, a
 * refused or reset connection) is waited for within the budget, like a
 * download; nothing else is retried. Any other status, and a busy one once
 * the budget is spent, is returned; a network failure throws a
 * `NetworkError`.
 */
export async function probe(
  url: string,
  options: ProbeOptions = {},
): Promise<ProbeResult> {
  let busy: ProbeResult | undefined;
  try {
    return await withRetries(async () => {
      const { result, retryAfterMs } = await probeOnce(url, options);
      if (result.status !== 503 && result.status !== 429) return result;
      busy = result;
      throw new HttpStatusError(result.status, url, "", retryAfterMs);
    }, {
      retries: 0,
      busy: options.busy,
      label: `HEAD ${redact(url)}`,
      signal: options.signal,
    });
  } catch (err) {
    if (err instanceof HttpStatusError && busy) return busy;
    throw err;
  }
}

async function probeOnce(
  url: string,
  options: ProbeOptions,
): Promise<{ result: ProbeResult; retryAfterMs?: number }> {
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
    result: {
      status: response.status,
      contentLength: contentLength(response),
      ...(lastModified ? { lastModified } : {}),
      ...(etag ? { etag } : {}),
    },
    retryAfterMs: parseRetryAfter(response.headers.get("retry-after")),
  };
}
