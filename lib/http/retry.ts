/**
 * Retries, for every request the bootloader (and the image pipeline) makes.
 *
 * A busy server (`503`, `429`, a connection refused or reset: `busy.ts`) is
 * waited for: its answers are retried with capped exponential backoff and
 * full jitter, honouring `Retry-After`, without counting against `retries`,
 * for as long as the run's {@linkcode BusyBudget} lasts, each wait said on
 * one line. Other failures a retry may cure ({@linkcode isTransient} by
 * default) are retried `retries` times, with exponential backoff and jitter
 * (half to all of the window), a server's `Retry-After` winning over it.
 *
 * @example
 * ```ts
 * const body = await withRetries(() => fetchSomething(), { retries: 3, label: "the script" });
 * ```
 *
 * @module
 */

import {
  BusyBudget,
  busyDelay,
  busyMessage,
  busyReason,
  type BusyWait,
  DEFAULT_BUSY_TIMEOUT_MS,
  formatDuration,
} from "./busy.ts";
import { HttpStatusError, isTransient } from "./request.ts";
import { log } from "../log.ts";

/** Options for {@linkcode withRetries}. */
export interface RetryOptions {
  /** Attempts after the first one for failures other than busy answers (default 5). */
  retries?: number;
  /** First backoff delay in milliseconds for those failures (default 500). */
  baseDelayMs?: number;
  /** Longest backoff delay in milliseconds for those failures (default 30 s). */
  maxDelayMs?: number;
  /**
   * Decides whether a failure other than a busy answer is retried (default
   * {@linkcode isTransient}); busy answers are waited for whatever it says.
   */
  retryable?: (err: unknown) => boolean;
  /** Told about each retry after a failure other than a busy answer, before its delay. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /**
   * How long busy servers may still be waited for: the run's budget, shared
   * by all its requests (default: a budget of
   * {@linkcode DEFAULT_BUSY_TIMEOUT_MS} for this call alone).
   */
  busy?: BusyBudget;
  /** What a busy wait's line names (a redacted URL, "SSO token exchange"). */
  label?: string;
  /**
   * Told about each busy wait before it (default: one warning line,
   * {@linkcode busyMessage} of `label`).
   */
  onBusy?: (wait: BusyWait) => void;
  /** Stops waiting. */
  signal?: AbortSignal;
  /** Random source in [0, 1) for the jitter (tests make it deterministic). */
  random?: () => number;
  /** Waits `ms` (default {@linkcode sleep}; tests pass a fake clock's). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** The delay before retry number `attempt` (1-based): exponential, capped, with jitter (half to all of it). */
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
 * Runs `fn` until it succeeds, it fails with an error that is neither a busy
 * answer within the budget nor retryable, or the retries are spent. `fn` is
 * given the number of attempts before this one.
 */
export async function withRetries<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const retries = options.retries ?? 5;
  const retryable = options.retryable ?? isTransient;
  const budget = options.busy ?? new BusyBudget(DEFAULT_BUSY_TIMEOUT_MS);
  const wait = options.sleep ?? sleep;
  let failures = 0;
  let busyWaits = 0;
  for (let attempt = 0;; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const reason = busyReason(err);
      if (reason !== undefined && budget.remainingMs > 0) {
        busyWaits++;
        const waitedMs = budget.spentMs;
        const delay = busyDelay(busyWaits, {
          retryAfterMs: retryAfterOf(err),
          random: options.random,
          remainingMs: budget.remainingMs,
        });
        const told: BusyWait = {
          err,
          reason,
          attempt: busyWaits,
          ...delay,
          waitedMs,
          budgetMs: budget.limitMs,
        };
        if (options.onBusy) options.onBusy(told);
        else log.warn(busyMessage(options.label ?? "request", told));
        const end = budget.begin();
        try {
          await wait(delay.delayMs, options.signal);
        } finally {
          end();
        }
        continue;
      }
      if (reason !== undefined && budget.sayingSpent()) {
        log.warn(
          `servers stayed busy for ${
            formatDuration(budget.limitMs)
          } of waiting (--busy-timeout): a busy answer now counts as a failed attempt (--retries)`,
        );
      }
      if (failures >= retries || !retryable(err)) throw err;
      failures++;
      let delay = backoffDelay(failures, options);
      const asked = retryAfterOf(err);
      if (asked !== undefined) {
        delay = Math.min(asked, options.maxDelayMs ?? 30_000);
      }
      options.onRetry?.(err, failures, delay);
      await wait(delay, options.signal);
    }
  }
}

function retryAfterOf(err: unknown): number | undefined {
  return err instanceof HttpStatusError ? err.retryAfterMs : undefined;
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
