/**
 * Fuzzing the iPXE interpreter in plan mode: `FUZZ_CASES` (default 100,000)
 * generated and mutated scripts (see `ipxe_fuzz.ts`), split over one worker
 * per core. Every case must end in a well-formed plan or a one-line
 * `IpxeError`/`BootError` — never another exception — within the step caps
 * and a per-case time limit; a worker that stops making progress is a hang.
 *
 * The seed is random unless `FUZZ_SEED` is set, and is always printed; replay
 * one case with `FUZZ_SEED=<seed> FUZZ_CASE=<index> deno test -A tests/ipxe_fuzz_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { makeCase, runCase } from "./ipxe_fuzz.ts";
import type { FuzzJob, FuzzReport } from "./ipxe_fuzz_worker.ts";

const SEED = Deno.env.get("FUZZ_SEED") !== undefined
  ? Number(Deno.env.get("FUZZ_SEED")) >>> 0
  : crypto.getRandomValues(new Uint32Array(1))[0];
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 100_000);
const ONE_CASE = Deno.env.get("FUZZ_CASE");
/** A case slower than this fails (generous: CI machines are slow and shared). */
const MAX_CASE_MS = Number(Deno.env.get("FUZZ_MAX_CASE_MS") ?? 5000);
/** A worker whose current case does not change for this long is hung. */
const HANG_MS = 15_000;

function replay(index: number): string {
  return `FUZZ_SEED=${SEED} FUZZ_CASE=${index} deno test -A tests/ipxe_fuzz_test.ts`;
}

Deno.test({
  name: "ipxe fuzz: a replayed case runs alone and prints its script",
  ignore: ONE_CASE === undefined,
  fn: async () => {
    const index = Number(ONE_CASE);
    const c = makeCase(SEED, index);
    console.log(
      `seed ${SEED} case ${index}\n--- script\n${JSON.stringify(c.script)}`,
    );
    const outcome = await runCase(c);
    console.log(`--- fetched\n${c.fetched.join("\n")}\n--- outcome`);
    console.log(outcome);
    assert.notEqual(outcome.kind, "crash", "the case crashed the interpreter");
  },
});

Deno.test({
  name:
    `ipxe fuzz: ${CASES} cases, only IpxeError/BootError, bounded in steps and time`,
  ignore: ONE_CASE !== undefined,
  // Workers and their timers are managed below.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const workers = Math.max(1, Math.min(4, availableParallelism()));
    console.log(
      `ipxe fuzz: seed ${SEED}, ${CASES} cases on ${workers} worker(s); replay with FUZZ_SEED=${SEED}`,
    );
    const progress = new SharedArrayBuffer(4 * workers);
    const current = new Int32Array(progress);
    const started = performance.now();
    const pool: Worker[] = [];
    const reports: Promise<FuzzReport>[] = [];
    let hung: string | undefined;
    const per = Math.ceil(CASES / workers);
    for (let slot = 0; slot < workers; slot++) {
      const worker = new Worker(
        new URL("./ipxe_fuzz_worker.ts", import.meta.url),
        { type: "module" },
      );
      pool.push(worker);
      const job: FuzzJob = {
        seed: SEED,
        start: slot * per,
        end: Math.min(CASES, (slot + 1) * per),
        progress,
        slot,
        maxCaseMs: MAX_CASE_MS,
      };
      Atomics.store(current, slot, job.start);
      reports.push(
        new Promise<FuzzReport>((resolve, reject) => {
          worker.onmessage = (e: MessageEvent<FuzzReport>) => resolve(e.data);
          worker.onerror = (e) => {
            e.preventDefault();
            reject(
              new Error(
                `worker crashed during case ${
                  Atomics.load(current, slot)
                }: ${e.message}; ${replay(Atomics.load(current, slot))}`,
              ),
            );
          };
        }),
      );
      worker.postMessage(job);
    }
    // Watchdog: a case that never ends (an endless synchronous loop, a
    // promise that never settles) freezes the worker's slot.
    const last = Array.from(current);
    const since = last.map(() => performance.now());
    const { promise: hang, reject: reportHang } = Promise.withResolvers<
      never
    >();
    const watchdog = setInterval(() => {
      for (let slot = 0; slot < workers; slot++) {
        const now = Atomics.load(current, slot);
        if (now !== last[slot] || now === -1) {
          last[slot] = now;
          since[slot] = performance.now();
        } else if (performance.now() - since[slot] > HANG_MS) {
          hung = `case ${now} has not finished after ${HANG_MS} ms; ${
            replay(now)
          }`;
          reportHang(new Error(hung));
        }
      }
    }, 500);
    let results: FuzzReport[];
    try {
      results = await Promise.race([Promise.all(reports), hang]);
    } finally {
      clearInterval(watchdog);
      for (const w of pool) w.terminate();
    }
    const seconds = (performance.now() - started) / 1000;
    const total = results.reduce((n, r) => n + r.cases, 0);
    const plans = results.reduce((n, r) => n + r.plans, 0);
    const errors = results.reduce((n, r) => n + r.errors, 0);
    const fetches = results.reduce((n, r) => n + r.fetches, 0);
    const slowest = results.reduce((a, b) => a.maxMs >= b.maxMs ? a : b);
    const messages: Record<string, number> = {};
    for (const r of results) {
      for (const [k, v] of Object.entries(r.messages)) {
        messages[k] = (messages[k] ?? 0) + v;
      }
    }
    const top = Object.entries(messages).sort((a, b) => b[1] - a[1]).slice(
      0,
      12,
    );
    console.log(
      `ipxe fuzz: ${total} cases in ${
        seconds.toFixed(1)
      } s: ${plans} plans, ${errors} script errors, ${fetches} fetches; ` +
        `slowest case ${slowest.slowest} (${slowest.maxMs.toFixed(1)} ms)\n` +
        `  commonest errors: ${top.map(([k, v]) => `${v}× ${k}`).join(" | ")}`,
    );
    const failures = results.flatMap((r) => r.failures);
    if (failures.length > 0) {
      const shown = failures.slice(0, 5).map((f) =>
        `case ${f.index}: ${f.error.split("\n").slice(0, 6).join("\n    ")}\n` +
        `  script: ${JSON.stringify(f.script.slice(0, 400))}\n  replay: ${
          replay(f.index)
        }`
      ).join("\n");
      assert.fail(
        `${failures.length} failing case(s) with seed ${SEED}:\n${shown}`,
      );
    }
    assert.equal(total, CASES, "every case ran");
    // The generator must reach deep: plans, chains and errors all happen.
    assert.ok(plans > CASES * 0.05, `only ${plans} cases booted a kernel`);
    assert.ok(fetches > CASES * 0.05, `only ${fetches} fetches`);
    assert.ok(
      Object.keys(messages).length > 50,
      "errors come from many commands",
    );
  },
});
