/**
 * The busy-server policy (pure, with an injected clock and random source):
 * `Retry-After` parsing, the wait arithmetic (floor, full jitter, caps, the
 * budget cut), the run's budget (concurrent waits count once), what counts
 * as busy, and `withRetries` waiting for busy answers without spending
 * `--retries`, one line per wait.
 */
import assert from "node:assert/strict";
import {
  BUSY_BASE_MS,
  BUSY_WINDOW_CAP_MS,
  BusyBudget,
  busyDelay,
  busyMessage,
  busyReason,
  type BusyWait,
  DEFAULT_BUSY_TIMEOUT_MS,
  formatDuration,
  MAX_RETRY_AFTER_MS,
} from "../../lib/http/busy.ts";
import {
  HttpStatusError,
  NetworkError,
  NoAnswerError,
  PolicyError,
} from "../../lib/http/request.ts";
import { parseHttpDate, parseRetryAfter } from "../../lib/http/retry_after.ts";
import { withRetries } from "../../lib/http/retry.ts";
import { configureLog } from "../../lib/log.ts";

/** A clock whose sleeps advance it at once. */
function fakeClock(start = 1_000_000) {
  let now = start;
  const slept: number[] = [];
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    slept,
    sleep: (ms: number) => {
      slept.push(ms);
      now += ms;
      return Promise.resolve();
    },
  };
}

/** Captures log lines for the duration of `fn`. */
async function captureLog(fn: () => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  configureLog({ sink: (line) => lines.push(line) });
  try {
    await fn();
  } finally {
    configureLog({
      sink: (line) =>
        Deno.stderr.writeSync(new TextEncoder().encode(line + "\n")),
    });
  }
  return lines;
}

const refused = () =>
  new NoAnswerError("http://h/k: fetch failed", "http://h/k", {
    cause: new TypeError("fetch failed", {
      cause: new Error(
        "error sending request for url (http://h/k): client error (Connect): tcp connect error: Connection refused (os error 111)",
      ),
    }),
  });

Deno.test("parseRetryAfter: delay-seconds, the three HTTP-date forms, huge, negative, garbage", () => {
  const now = Date.UTC(1994, 10, 6, 8, 49, 30);
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 7 ", now), 7000, "surrounding spaces");
  assert.equal(parseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", now), 7000);
  assert.equal(parseRetryAfter("Sunday, 06-Nov-94 08:49:37 GMT", now), 7000);
  assert.equal(parseRetryAfter("Sun Nov  6 08:49:37 1994", now), 7000);
  assert.equal(parseRetryAfter("sun, 06 nov 1994 08:49:37 gmt", now), 7000);
  assert.equal(
    parseRetryAfter("Sun, 06 Nov 1994 08:00:00 GMT", now),
    0,
    "a date in the past: now",
  );
  // Huge: a number, never Infinity or NaN (the policy caps it).
  assert.equal(parseRetryAfter("99999999999", now), 99_999_999_999_000);
  assert.equal(parseRetryAfter("9".repeat(400), now), Number.MAX_SAFE_INTEGER);
  assert.equal(
    parseRetryAfter("Fri, 31 Dec 9999 23:59:59 GMT", now)! > 1e14,
    true,
  );
  // Negative, fractional, lists, garbage, dates the runtime would guess at.
  for (
    const bad of [
      "-1",
      "-0",
      "1.5",
      "1e3",
      "0x10",
      "1, 2",
      "soon",
      "",
      "  ",
      "Infinity",
      "NaN",
      "2025-01-01",
      "1/2/2025",
      "Sun, 06 Nov 1994 08:49:37",
      "Sun, 06 Nov 1994 08:49:37 PST",
      "Sun, 31 Feb 1994 08:49:37 GMT",
      "Sun, 06 Nov 1994 25:00:00 GMT",
      "Sun, 06 Nov 1994 08:49:37 GMT garbage",
    ]
  ) {
    assert.equal(parseRetryAfter(bad, now), undefined, JSON.stringify(bad));
  }
  assert.equal(parseRetryAfter(null, now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
  // RFC 850's two-digit years: never more than 50 years ahead.
  const in2030 = Date.UTC(2030, 0, 1);
  assert.equal(
    new Date(parseHttpDate("Monday, 01-Jan-79 00:00:00 GMT", in2030)!)
      .getUTCFullYear(),
    2079,
  );
  assert.equal(
    new Date(parseHttpDate("Monday, 01-Jan-81 00:00:00 GMT", in2030)!)
      .getUTCFullYear(),
    1981,
  );
});

Deno.test("busyDelay: max(Retry-After capped, 1 s) + full jitter over a doubling window capped at 30 s", () => {
  const at = (attempt: number, random: number, retryAfterMs?: number) =>
    busyDelay(attempt, { random: () => random, retryAfterMs }).delayMs;
  // No Retry-After: the floor is 1 s, the window 1, 2, 4, 8, 16, 30, 30 s.
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 40].map((n) => at(n, 0.999999)),
    [2000, 3000, 5000, 9000, 17000, 31000, 31000, 31000],
  );
  assert.deepEqual([1, 2, 6, 100].map((n) => at(n, 0)), [
    1000,
    1000,
    1000,
    1000,
  ]);
  assert.equal(at(3, 0.5), 1000 + 2000, "full jitter: any share of the window");
  // Retry-After is the floor, the jitter comes on top (a herd told the same spreads out).
  assert.equal(at(1, 0, 2000), 2000);
  assert.equal(at(1, 0.5, 2000), 2500);
  assert.equal(at(4, 0.25, 10_000), 12_000);
  // Shorter than 1 s, 0, or in the past: still 1 s at least.
  assert.equal(at(1, 0, 0), BUSY_BASE_MS);
  assert.equal(at(1, 0, 200), BUSY_BASE_MS);
  // Huge: capped at 5 min (and said).
  const huge = busyDelay(1, { random: () => 0, retryAfterMs: 86_400_000 });
  assert.deepEqual(huge, {
    delayMs: MAX_RETRY_AFTER_MS,
    retryAfterCapped: true,
  });
  assert.equal(
    busyDelay(1, { random: () => 0, retryAfterMs: Number.MAX_SAFE_INTEGER })
      .delayMs,
    MAX_RETRY_AFTER_MS,
  );
  assert.equal(
    busyDelay(1, { random: () => 0, retryAfterMs: MAX_RETRY_AFTER_MS })
      .retryAfterCapped,
    false,
  );
  // The longest single wait there can be.
  assert.equal(
    at(50, 0.999999, 1e12),
    MAX_RETRY_AFTER_MS + BUSY_WINDOW_CAP_MS,
  );
  // Cut to what is left of the budget.
  assert.equal(
    busyDelay(5, { random: () => 0.9, remainingMs: 4000 }).delayMs,
    4000,
  );
  assert.equal(busyDelay(1, { random: () => 0, remainingMs: 0 }).delayMs, 0);
});

Deno.test("BusyBudget: concurrent waits count once; spent, remaining, said once", () => {
  const clock = fakeClock();
  const budget = new BusyBudget(10_000, { now: clock.now });
  assert.equal(budget.spentMs, 0);
  const a = budget.begin();
  clock.advance(2000);
  const b = budget.begin(); // a second request waits too
  clock.advance(1000);
  assert.equal(budget.spentMs, 3000, "a wait under way counts");
  a();
  a(); // ending twice changes nothing
  clock.advance(1000);
  b();
  assert.equal(budget.spentMs, 4000, "the overlap counted once");
  clock.advance(60_000); // not waiting: not spent
  assert.equal(budget.spentMs, 4000);
  assert.equal(budget.remainingMs, 6000);
  assert.equal(budget.sayingSpent(), false, "not spent yet");
  const c = budget.begin();
  clock.advance(7000);
  c();
  assert.equal(budget.remainingMs, 0);
  assert.equal(budget.sayingSpent(), true);
  assert.equal(budget.sayingSpent(), false, "said once per run");
  assert.equal(new BusyBudget(0).sayingSpent(), false, "0: nothing to say");
  assert.equal(new BusyBudget(-5).limitMs, 0);
});

Deno.test("busyReason: 503, 429, refused, reset, closed before an answer; nothing else", () => {
  assert.equal(busyReason(new HttpStatusError(503, "u")), "HTTP 503");
  assert.equal(busyReason(new HttpStatusError(429, "u")), "HTTP 429");
  for (const status of [500, 502, 504, 404, 401]) {
    assert.equal(busyReason(new HttpStatusError(status, "u")), undefined);
  }
  assert.equal(busyReason(refused()), "connection refused");
  const cause = (text: string) =>
    new NoAnswerError("u: x", "u", { cause: new Error(text) });
  assert.equal(
    busyReason(
      cause(
        "curl: (7) Failed to connect to h port 443 after 0 ms: Couldn't connect to server",
      ),
    ),
    "connection refused",
  );
  assert.equal(
    busyReason(cause("Connection reset by peer (os error 104)")),
    "connection reset",
  );
  assert.equal(
    busyReason(
      cause(
        "client error (SendRequest): connection closed before message completed",
      ),
    ),
    "connection closed",
  );
  assert.equal(
    busyReason(cause("curl: (52) Empty reply from server")),
    "connection closed",
  );
  // Not busy: a timeout, DNS, an unreachable network, a body cut after the
  // headers (a plain NetworkError), a refused redirect, anything else.
  assert.equal(
    busyReason(
      new NoAnswerError("u: no answer", "u", {
        cause: new Error("Connection refused"),
        timedOut: true,
      }),
    ),
    undefined,
  );
  assert.equal(
    busyReason(cause("dns error: failed to lookup address")),
    undefined,
  );
  assert.equal(
    busyReason(cause("Network is unreachable (os error 101)")),
    undefined,
  );
  assert.equal(
    busyReason(
      new NetworkError("u: connection lost after 10 bytes", "u", {
        cause: new Error("Connection reset by peer"),
      }),
    ),
    undefined,
  );
  assert.equal(busyReason(new PolicyError("u: refused", "u")), undefined);
  assert.equal(busyReason(new Error("Connection refused")), undefined);
});

Deno.test("formatDuration and busyMessage: one short line", () => {
  assert.deepEqual(
    [
      0,
      400,
      949,
      950,
      1000,
      7400,
      59_000,
      60_000,
      65_000,
      900_000,
      3_600_000,
      3_660_000,
      7_200_000,
    ].map(formatDuration),
    [
      "0 s",
      "0.4 s",
      "0.9 s",
      "1 s",
      "1 s",
      "7 s",
      "59 s",
      "1 min",
      "1 min 5 s",
      "15 min",
      "1 h",
      "61 min",
      "2 h",
    ],
  );
  // The documented default budget.
  assert.equal(formatDuration(DEFAULT_BUSY_TIMEOUT_MS), "15 min");
  const wait: BusyWait = {
    err: new HttpStatusError(503, "u"),
    reason: "HTTP 503",
    attempt: 2,
    delayMs: 7000,
    retryAfterCapped: false,
    waitedMs: 60_000,
    budgetMs: 900_000,
  };
  assert.equal(
    busyMessage("kernel", wait),
    "kernel: server busy (HTTP 503), retrying in 7 s, waited 1 min of 15 min",
  );
  assert.equal(
    busyMessage("k", { ...wait, retryAfterCapped: true }),
    "k: server busy (HTTP 503), retrying in 7 s (Retry-After over 5 min, capped), waited 1 min of 15 min",
  );
});

Deno.test("withRetries: busy answers wait within the budget without spending --retries, one line per wait", async () => {
  const clock = fakeClock();
  const budget = new BusyBudget(60_000, { now: clock.now });
  let calls = 0;
  const lines = await captureLog(async () => {
    const value = await withRetries(() => {
      calls++;
      if (calls <= 3) {
        return Promise.reject(new HttpStatusError(503, "u", "", 2000));
      }
      if (calls === 4) return Promise.reject(refused());
      if (calls === 5) return Promise.reject(new HttpStatusError(500, "u"));
      return Promise.resolve("done");
    }, {
      retries: 1,
      baseDelayMs: 10,
      busy: budget,
      label: "kernel",
      random: () => 0.5,
      sleep: clock.sleep,
    });
    assert.equal(value, "done");
  });
  assert.equal(calls, 6, "4 busy answers and a 500 with --retries 1");
  // Busy: 2 s + 0.5 × 1, 2, 4 s; refused: 1 s + 0.5 × 8 s; then the 500's backoff.
  assert.deepEqual(clock.slept, [2500, 3000, 4000, 5000, 8]);
  assert.equal(budget.spentMs, 14_500, "only the busy waits are spent");
  const busyLines = lines.filter((l) => /server busy/.test(l));
  assert.deepEqual(busyLines, [
    "assisted-bootloader: warn: kernel: server busy (HTTP 503), retrying in 3 s, waited 0 s of 1 min",
    "assisted-bootloader: warn: kernel: server busy (HTTP 503), retrying in 3 s, waited 3 s of 1 min",
    "assisted-bootloader: warn: kernel: server busy (HTTP 503), retrying in 4 s, waited 6 s of 1 min",
    "assisted-bootloader: warn: kernel: server busy (connection refused), retrying in 5 s, waited 10 s of 1 min",
  ]);
});

Deno.test("withRetries: a spent budget makes busy answers count against --retries, said once; 0 never waits", async () => {
  const clock = fakeClock();
  const budget = new BusyBudget(10_000, { now: clock.now });
  let calls = 0;
  const lines = await captureLog(async () => {
    await assert.rejects(
      withRetries(() => {
        calls++;
        return Promise.reject(new HttpStatusError(503, "u", "", 3000));
      }, {
        retries: 2,
        baseDelayMs: 10,
        busy: budget,
        random: () => 0,
        sleep: clock.sleep,
      }),
      HttpStatusError,
    );
  });
  // 3 s, 3 s, 3 s, then the last 1 s of the budget; then 2 retries (Retry-After wins, within 30 s).
  assert.deepEqual(clock.slept, [3000, 3000, 3000, 1000, 3000, 3000]);
  assert.equal(calls, 7);
  assert.equal(
    lines.filter((l) => /now counts as a failed attempt/.test(l)).length,
    1,
  );
  // Another request of the same run: the budget is spent, no busy wait at all.
  calls = 0;
  clock.slept.length = 0;
  await captureLog(async () => {
    await assert.rejects(
      withRetries(() => {
        calls++;
        return Promise.reject(refused());
      }, { retries: 0, busy: budget, sleep: clock.sleep }),
      NoAnswerError,
    );
  });
  assert.equal(calls, 1);
  assert.deepEqual(clock.slept, []);
  // --busy-timeout 0: busy answers are ordinary failures from the start.
  calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      return Promise.reject(new HttpStatusError(429, "u"));
    }, {
      retries: 1,
      baseDelayMs: 1,
      busy: new BusyBudget(0),
      sleep: clock.sleep,
    }),
    HttpStatusError,
  );
  assert.equal(calls, 2);
});

Deno.test("withRetries: busy answers are waited for even when nothing else is retryable; the rest stops", async () => {
  const clock = fakeClock();
  let calls = 0;
  const value = await withRetries(() => {
    calls++;
    return calls < 3
      ? Promise.reject(new HttpStatusError(429, "u"))
      : Promise.resolve(calls);
  }, {
    retries: 0,
    retryable: () => false,
    busy: new BusyBudget(60_000, { now: clock.now }),
    onBusy: () => {},
    random: () => 0,
    sleep: clock.sleep,
  });
  assert.equal(value, 3);
  calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      return Promise.reject(new HttpStatusError(404, "u"));
    }, { busy: new BusyBudget(60_000), sleep: clock.sleep }),
    HttpStatusError,
  );
  assert.equal(calls, 1, "a 404 is never retried");
});

Deno.test("withRetries: an abort stops the waiting", async () => {
  const controller = new AbortController();
  let calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      controller.abort();
      return Promise.reject(new HttpStatusError(503, "u"));
    }, { signal: controller.signal, onBusy: () => {} }),
    HttpStatusError,
  );
  assert.equal(calls, 1);
});

Deno.test("withRetries: a policy refusal and a 4xx other than 429 are never waited for nor retried", async () => {
  const clock = fakeClock();
  for (
    const err of [
      new PolicyError("u: redirects to file:///etc/passwd, refused", "u"),
      new HttpStatusError(403, "u"),
      new HttpStatusError(404, "u"),
      new HttpStatusError(400, "u", "", 1000),
    ]
  ) {
    let calls = 0;
    await assert.rejects(
      withRetries(() => {
        calls++;
        return Promise.reject(err);
      }, {
        retries: 3,
        busy: new BusyBudget(60_000, { now: clock.now }),
        onBusy: () => assert.fail("not a busy answer"),
        sleep: clock.sleep,
      }),
      (e: unknown) => e === err,
    );
    assert.equal(calls, 1, err.message);
  }
  assert.deepEqual(clock.slept, []);
});

Deno.test("withRetries: attempts are numbered from 0; onBusy replaces the default line, which names the request", async () => {
  const attempts: number[] = [];
  const told: string[] = [];
  const clock = { sleep: () => Promise.resolve() };
  const lines = await captureLog(async () => {
    await withRetries((attempt) => {
      attempts.push(attempt);
      return attempts.length < 3
        ? Promise.reject(new HttpStatusError(503, "u"))
        : Promise.resolve("done");
    }, { onBusy: (wait) => told.push(wait.reason), sleep: clock.sleep });
  });
  assert.deepEqual(attempts, [0, 1, 2]);
  assert.deepEqual(told, ["HTTP 503", "HTTP 503"]);
  assert.ok(!lines.some((l) => /server busy/.test(l)), lines.join("\n"));
  const unlabelled = await captureLog(async () => {
    let calls = 0;
    await withRetries(
      () =>
        calls++ === 0
          ? Promise.reject(new HttpStatusError(503, "u"))
          : Promise.resolve(),
      { sleep: clock.sleep },
    );
  });
  assert.ok(
    unlabelled.some((l) => /request: server busy \(HTTP 503\)/.test(l)),
    unlabelled.join("\n"),
  );
});

Deno.test("withRetries: a spent busy budget is said only when an answer was busy, not for another failure", async () => {
  const budget = new BusyBudget(50);
  let calls = 0;
  const lines = await captureLog(async () => {
    await assert.rejects(
      withRetries(() => {
        calls++;
        return Promise.reject(
          calls === 1
            ? new HttpStatusError(503, "u")
            : new HttpStatusError(404, "u"),
        );
      }, { retries: 3, baseDelayMs: 1, busy: budget }),
      (err) => err instanceof HttpStatusError && err.status === 404,
    );
  });
  assert.equal(calls, 2);
  assert.equal(budget.remainingMs, 0);
  assert.ok(!lines.some((l) => /stayed busy/.test(l)), lines.join("\n"));
});
