/**
 * A busy server is not a failure: what counts as busy, how long a run waits
 * for busy servers, and how long each wait is.
 *
 * Busy answers are `503`, `429` and a connection refused, reset or closed
 * before any answer came (a server restarting, a proxy at its limit). They
 * are retried without counting against `--retries`, until the run has spent
 * its {@linkcode BusyBudget} (`--busy-timeout`) waiting for busy servers;
 * after that a busy answer counts like any other error.
 *
 * Each wait is the server's `Retry-After` (at most
 * {@linkcode MAX_RETRY_AFTER_MS}, at least {@linkcode BUSY_BASE_MS}) plus a
 * random share of an exponential window (full jitter: {@linkcode BUSY_BASE_MS}
 * doubling up to {@linkcode BUSY_WINDOW_CAP_MS}), so that a herd of machines
 * told the same `Retry-After` spreads out instead of coming back in
 * lock-step. Every wait lasting at least {@linkcode BUSY_BASE_MS} bounds the
 * busy answers one request can get: at most one per second of waiting.
 *
 * @example
 * ```ts
 * const budget = new BusyBudget(15 * 60_000);
 * const { delayMs } = busyDelay(3, { retryAfterMs: 2000, random: () => 0.5 }); // 2000 + 0.5 × 4000
 * ```
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { HttpStatusError, NoAnswerError } from "./request.ts";

/**
 * Default `--busy-timeout`: 15 minutes of waiting per run. A rack's herd
 * drains in minutes, a restarting service is back in a few; 15 minutes plus
 * the downloads stays well inside the disk image unit's `TimeoutStartSec`
 * (45 min), which would kill the run without a word, and the unit's restart
 * (30 s later) starts a new budget.
 */
export const DEFAULT_BUSY_TIMEOUT_MS = 15 * 60_000;
/**
 * The longest `Retry-After` honoured (5 minutes): a broken or hostile server
 * asking for hours gets asked again after this (and the budget still ends
 * the run's waiting).
 */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;
/** The first backoff window, and the shortest wait after a busy answer (1 s). */
export const BUSY_BASE_MS = 1000;
/** The largest backoff window (30 s): the window doubles up to it. */
export const BUSY_WINDOW_CAP_MS = 30_000;

/**
 * How long a run may wait for busy servers, in total: concurrent waits (the
 * kernel and an initrd both told to come back) count once, as the time
 * during which at least one request was waiting.
 */
export class BusyBudget {
  /** The budget in milliseconds (0: busy answers are ordinary errors). */
  readonly limitMs: number;
  #now: () => number;
  #spent = 0;
  #waiting = 0;
  #since = 0;
  #spentSaid = false;

  /** Creates a budget of `limitMs`; `now` is the clock (tests inject one). */
  constructor(limitMs: number, options: { now?: () => number } = {}) {
    this.limitMs = Math.max(0, limitMs);
    this.#now = options.now ?? Date.now;
  }

  /** Milliseconds spent waiting so far (a wait under way included). */
  get spentMs(): number {
    const current = this.#waiting > 0 ? this.#now() - this.#since : 0;
    return this.#spent + current;
  }

  /** Milliseconds left to wait (0 once spent). */
  get remainingMs(): number {
    return Math.max(0, this.limitMs - this.spentMs);
  }

  /** Marks the start of a wait; call the function returned when it ends. */
  begin(): () => void {
    if (this.#waiting++ === 0) this.#since = this.#now();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#waiting === 0) this.#spent += this.#now() - this.#since;
    };
  }

  /** True the first time it is asked once the budget is spent (to say so once per run). */
  sayingSpent(): boolean {
    if (this.#spentSaid || this.limitMs === 0 || this.remainingMs > 0) {
      return false;
    }
    this.#spentSaid = true;
    return true;
  }
}

const REFUSED =
  /connection refused|os error 111|ECONNREFUSED|couldn't connect to server/i;
const RESET = /connection reset|os error 104|ECONNRESET|recv failure/i;
const CLOSED =
  /connection closed before message completed|empty reply from server|unexpected eof|incomplete message/i;

/**
 * Why `err` is a busy answer (`HTTP 503`, `HTTP 429`, `connection refused`,
 * `connection reset`, `connection closed`), or undefined when it is not one:
 * any other status, a timeout, a body cut after the headers, a refused
 * redirect.
 */
export function busyReason(err: unknown): string | undefined {
  if (err instanceof HttpStatusError) {
    return err.status === 503 || err.status === 429
      ? `HTTP ${err.status}`
      : undefined;
  }
  if (!(err instanceof NoAnswerError) || err.timedOut) return undefined;
  const text = errorText(err.cause);
  if (REFUSED.test(text)) return "connection refused";
  if (RESET.test(text)) return "connection reset";
  if (CLOSED.test(text)) return "connection closed";
  return undefined;
}

/** Options for {@linkcode busyDelay}. */
export interface BusyDelayOptions {
  /** What the server asked for with `Retry-After`, in milliseconds. */
  retryAfterMs?: number;
  /** Random source in [0, 1) (tests make it deterministic). */
  random?: () => number;
  /** What is left of the budget: the wait is cut to it. */
  remainingMs?: number;
}

/** One wait after a busy answer. */
export interface BusyDelay {
  /** Milliseconds to wait. */
  delayMs: number;
  /** The server's `Retry-After` was more than {@linkcode MAX_RETRY_AFTER_MS}. */
  retryAfterCapped: boolean;
}

/**
 * The wait before retry number `attempt` (1-based) of one request after busy
 * answers: `max(Retry-After capped at 5 min, 1 s) + random × min(30 s,
 * 1 s × 2^(attempt − 1))`, cut to what is left of the budget.
 */
export function busyDelay(
  attempt: number,
  options: BusyDelayOptions = {},
): BusyDelay {
  const asked = options.retryAfterMs ?? 0;
  const floor = Math.max(BUSY_BASE_MS, Math.min(asked, MAX_RETRY_AFTER_MS));
  const window = Math.min(
    BUSY_WINDOW_CAP_MS,
    BUSY_BASE_MS * 2 ** Math.min(Math.max(0, attempt - 1), 30),
  );
  const random = options.random ?? Math.random;
  const delay = Math.round(floor + random() * window);
  return {
    delayMs: Math.max(0, Math.min(delay, options.remainingMs ?? Infinity)),
    retryAfterCapped: asked > MAX_RETRY_AFTER_MS,
  };
}

/** A wait after a busy answer, as the retry loop tells it. */
export interface BusyWait {
  /** The error that was a busy answer. */
  err: unknown;
  /** What made it busy ({@linkcode busyReason}). */
  reason: string;
  /** Busy retry number of this request (1-based). */
  attempt: number;
  /** Milliseconds about to be waited. */
  delayMs: number;
  /** The server's `Retry-After` was capped. */
  retryAfterCapped: boolean;
  /** Milliseconds of the run's budget spent before this wait. */
  waitedMs: number;
  /** The run's budget in milliseconds. */
  budgetMs: number;
}

/**
 * A duration for a log line: `0 s`, `0.4 s`, `7 s`, `1 min`, `1 min 5 s`, `2 h`
 * (whole seconds from 1 s on).
 */
export function formatDuration(ms: number): string {
  if (ms <= 0) return "0 s";
  if (ms < 950) return `${(ms / 1000).toFixed(1)} s`;
  const total = Math.round(ms / 1000);
  if (total < 60) return `${total} s`;
  if (total >= 3600 && total % 3600 === 0) return `${total / 3600} h`;
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  return seconds === 0 ? `${minutes} min` : `${minutes} min ${seconds} s`;
}

/**
 * The line said for one busy wait: `LABEL: server busy (HTTP 503),
 * retrying in 7 s, waited 1 min of 15 min`.
 */
export function busyMessage(label: string, wait: BusyWait): string {
  const capped = wait.retryAfterCapped
    ? ` (Retry-After over ${formatDuration(MAX_RETRY_AFTER_MS)}, capped)`
    : "";
  return `${label}: server busy (${wait.reason}), retrying in ${
    formatDuration(wait.delayMs)
  }${capped}, waited ${formatDuration(wait.waitedMs)} of ${
    formatDuration(wait.budgetMs)
  }`;
}
