/**
 * Retries with exponential backoff and full jitter, for every request the
 * bootloader (and the image pipeline) makes: by default only failures a retry
 * may cure ({@linkcode isTransient}) are retried, and a server's
 * `Retry-After` wins over the computed delay.
 *
 * @example
 * ```ts
 * const body = await withRetries(() => fetchSomething(), { retries: 3 });
 * ```
 *
 * @module
 */

import { HttpStatusError, isTransient } from "./request.ts";

/** Options for {@linkcode withRetries}. */
export interface RetryOptions {
  /** Attempts after the first one (default 5). */
  retries?: number;
  /** First backoff delay in milliseconds (default 500). */
  baseDelayMs?: number;
  /** Longest backoff delay in milliseconds (default 30 s). */
  maxDelayMs?: number;
  /** Decides whether a failure is retried (default {@linkcode isTransient}). */
  retryable?: (err: unknown) => boolean;
  /** Told about each retry before its delay. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Stops waiting. */
  signal?: AbortSignal;
  /** Random source in [0, 1) for the jitter (tests make it deterministic). */
  random?: () => number;
}

/** The delay before retry number `attempt` (1-based): exponential, capped, with full jitter. */
export function backoffDelay(
  attempt: number,
  options: RetryOptions = {},
): number {
  const base = options.baseDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  const ceiling = Math.min(max, base * 2 ** (attempt - 1));
  const random = options.random ?? Math.random;
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/**
 * Runs `fn` until it succeeds, it fails with a non-retryable error, or the
 * retries are spent. A server's `Retry-After` wins over the computed backoff
 * (within `maxDelayMs`).
 */
export async function withRetries<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const retries = options.retries ?? 5;
  const retryable = options.retryable ?? isTransient;
  for (let attempt = 0;; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= retries || !retryable(err) || options.signal?.aborted) {
        throw err;
      }
      let delay = backoffDelay(attempt + 1, options);
      if (err instanceof HttpStatusError && err.retryAfterMs !== undefined) {
        delay = Math.min(err.retryAfterMs, options.maxDelayMs ?? 30_000);
      }
      options.onRetry?.(err, attempt + 1, delay);
      await sleep(delay, options.signal);
    }
  }
}

/** Waits `ms` milliseconds (resolves early when `signal` aborts). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
