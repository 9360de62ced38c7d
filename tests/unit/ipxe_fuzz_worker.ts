/**
 * Worker of the iPXE fuzz test: runs a range of cases and reports outcomes.
 * The index of the case in progress is published in a shared array so the
 * test can name the case that hangs.
 *
 * @module
 */

import { makeCase, runCase } from "./ipxe_fuzz.ts";

/** What the test sends. */
export interface FuzzJob {
  /** Run seed. */
  seed: number;
  /** First case index. */
  start: number;
  /** One past the last case index. */
  end: number;
  /** Shared progress array (one Int32 per worker). */
  progress: SharedArrayBuffer;
  /** This worker's slot in `progress`. */
  slot: number;
  /** A case slower than this is a failure. */
  maxCaseMs: number;
}

/** One failed case. */
export interface FuzzFailure {
  /** Case index. */
  index: number;
  /** What went wrong. */
  error: string;
  /** Start of the first script. */
  script: string;
}

/** What the worker answers when its range is done. */
export interface FuzzReport {
  /** Cases run. */
  cases: number;
  /** Cases that booted a kernel. */
  plans: number;
  /** Cases that ended in an IpxeError/BootError. */
  errors: number;
  /** Executed URLs fetched over all cases. */
  fetches: number;
  /** Slowest case, in ms. */
  maxMs: number;
  /** Index of the slowest case. */
  slowest: number;
  /** Counts of error messages by their start (coverage at a glance). */
  messages: Record<string, number>;
  /** At most 10 failures. */
  failures: FuzzFailure[];
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<FuzzJob>) => void) | null;
  postMessage(message: FuzzReport): void;
};

scope.onmessage = async (e) => {
  const job = e.data;
  const progress = new Int32Array(job.progress);
  const report: FuzzReport = {
    cases: 0,
    plans: 0,
    errors: 0,
    fetches: 0,
    maxMs: 0,
    slowest: -1,
    messages: {},
    failures: [],
  };
  const fail = (index: number, error: string, script: string) => {
    if (report.failures.length < 10) {
      report.failures.push({ index, error, script: script.slice(0, 2000) });
    }
  };
  for (let i = job.start; i < job.end; i++) {
    Atomics.store(progress, job.slot, i);
    const c = makeCase(job.seed, i);
    const t0 = performance.now();
    const outcome = await runCase(c);
    const ms = performance.now() - t0;
    report.cases++;
    report.fetches += c.fetched.length;
    if (ms > report.maxMs) {
      report.maxMs = ms;
      report.slowest = i;
    }
    if (ms > job.maxCaseMs) {
      fail(i, `took ${Math.round(ms)} ms (limit ${job.maxCaseMs})`, c.script);
    }
    if (outcome.kind === "plan") report.plans++;
    else if (outcome.kind === "error") {
      report.errors++;
      const key = outcome.message.replace(/^script \S+ (line \d+: )?/, "")
        .replace(/"[^"]*"/g, '"…"').slice(0, 48);
      report.messages[key] = (report.messages[key] ?? 0) + 1;
    } else fail(i, outcome.error, c.script);
  }
  Atomics.store(progress, job.slot, -1);
  scope.postMessage(report);
};
