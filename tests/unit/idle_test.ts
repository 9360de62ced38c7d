/**
 * The body watchdog (lib/http/idle.ts): the stall and trickle cuts on their
 * own, and the watch of a small body read whole (a script, an SSO answer),
 * which a server sending a byte at a time cannot hold open forever.
 * download_test, infraenv_test and infraenv_client_test cover both through
 * real servers.
 */

import assert from "node:assert/strict";
import { idleWatch, watchBody } from "../../lib/http/idle.ts";
import { NetworkError } from "../../lib/http/request.ts";

/** Runs a watchdog until it aborts or `ms` pass; returns the error and when it came. */
async function watch(
  options: { timeoutMs: number; minSpeed: number; windowMs: number },
  feed: (received: (bytes: number) => void) => (() => void) | void,
  ms: number,
): Promise<{ err?: NetworkError; after: number }> {
  const started = performance.now();
  const { promise, resolve } = Promise.withResolvers<
    NetworkError | undefined
  >();
  const watchdog = watchBody("http://h/k?image_token=secret", {
    ...options,
    position: () => 42,
    abort: resolve,
  });
  const timer = setTimeout(() => resolve(undefined), ms);
  const stopFeeding = feed(watchdog.received);
  try {
    const err = await promise;
    return { err, after: performance.now() - started };
  } finally {
    clearTimeout(timer);
    stopFeeding?.();
    watchdog.stop();
  }
}

Deno.test("watchBody: a stall is cut soon after its limit (checked every quarter of it), naming the limit and the position", async () => {
  const { err, after } = await watch(
    { timeoutMs: 300, minSpeed: 0, windowMs: 60_000 },
    () => {},
    5000,
  );
  assert.ok(err instanceof NetworkError, String(err));
  assert.equal(
    err.message,
    "http://h/k?image_token=REDACTED: no data for 0.3 s after 42 bytes",
  );
  assert.ok(after >= 300, `cut after ${after} ms`);
  // Checked every 75 ms: a check only every second would come far later.
  assert.ok(after < 900, `cut after ${after} ms`);
});

Deno.test("watchBody: a trickle is measured per window: fast bytes of an earlier window do not cover a slow later one", async () => {
  const { err } = await watch(
    { timeoutMs: 10_000, minSpeed: 1000, windowMs: 100 },
    (received) => {
      received(100_000);
      // Then a trickle that keeps the stall watchdog quiet.
      const drip = setInterval(() => received(1), 20);
      return () => clearInterval(drip);
    },
    2000,
  );
  assert.ok(err instanceof NetworkError, String(err));
  assert.match(
    err.message,
    /^http:\/\/h\/k\?image_token=REDACTED: slower than 1000 bytes\/s \(\d+ bytes in 0\.\d s\) after 42 bytes$/,
  );
});

/**
 * Serves one body on 127.0.0.1 sent as `pieces` (each after `gapMs`), then
 * `end`s it or keeps the connection open until the test is done.
 */
function trickle(
  pieces: number,
  gapMs: number,
  end: boolean,
): { url: string; close: () => Promise<void> } {
  const done = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    signal: done.signal,
  }, () => {
    let sent = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === pieces) {
          if (end) controller.close();
          return new Promise(() => {});
        }
        return new Promise((resolve) => {
          timer = setTimeout(() => {
            sent++;
            controller.enqueue(new TextEncoder().encode("#"));
            resolve();
          }, sent === 0 ? 0 : gapMs);
        });
      },
      cancel: () => clearTimeout(timer),
    });
    done.signal.addEventListener("abort", () => clearTimeout(timer));
    return new Response(body);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/script.ipxe`,
    close: async () => {
      done.abort();
      await server.finished;
    },
  };
}

async function readWatched(
  url: string,
  ms: number,
  options: { minSpeed?: number; minSpeedTimeMs?: number },
): Promise<{ text?: string; err?: unknown; after: number }> {
  const started = performance.now();
  const idle = idleWatch(url, ms, options);
  try {
    const res = idle.watch(await fetch(url, { signal: idle.signal }));
    const text = await res.text();
    return { text, after: performance.now() - started };
  } catch (err) {
    return {
      err: idle.signal.aborted ? idle.signal.reason : err,
      after: performance.now() - started,
    };
  } finally {
    idle.stop();
  }
}

Deno.test("idleWatch: a small body sent a byte at a time is cut below the minimum rate, naming the rate", async () => {
  // A byte every 50 ms (20 bytes/s) for 3 s: never silent for 2 s.
  const server = trickle(60, 50, true);
  try {
    const { err, after } = await readWatched(server.url, 2000, {
      minSpeed: 100,
      minSpeedTimeMs: 400,
    });
    assert.ok(err instanceof NetworkError, String(err));
    assert.match(
      err.message,
      /^http:\/\/127\.0\.0\.1:\d+\/script\.ipxe: slower than 100 bytes\/s \(\d+ bytes in 0\.\d s\) after \d+ bytes$/,
    );
    assert.ok(after < 1500, `cut after ${after} ms`);
  } finally {
    await server.close();
  }
});

Deno.test("idleWatch: the same trickle with the rate check off is cut only by silence, and a body that ends in time is read whole", async () => {
  const stops = trickle(3, 50, false);
  try {
    const { err } = await readWatched(stops.url, 300, { minSpeed: 0 });
    assert.ok(err instanceof NetworkError, String(err));
    assert.match(err.message, /: no data for 0\.3 s after 3 bytes$/);
  } finally {
    await stops.close();
  }
  // Three bytes over 100 ms: slower than 100 bytes/s, but over before the
  // first window ends, so nothing is cut (a small script is not a stream).
  const ends = trickle(3, 50, true);
  try {
    const { text, err } = await readWatched(ends.url, 300, {
      minSpeed: 100,
      minSpeedTimeMs: 400,
    });
    assert.equal(err, undefined);
    assert.equal(text, "###");
  } finally {
    await ends.close();
  }
});

Deno.test("idleWatch: an answer without a body is passed on as it is", () => {
  const idle = idleWatch("http://h/x", 300);
  const answer = new Response(null, { status: 204 });
  assert.equal(idle.watch(answer), answer);
  idle.stop();
  assert.equal(idle.signal.aborted, false);
});

Deno.test("idleWatch: a cut ends the watched body itself, even from a transport that ignores the signal", async () => {
  // A body no signal reaches (as from a transport that let its request go
  // once the headers came): a byte every 50 ms for 3 s.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull: (controller) =>
      new Promise((resolve) => {
        timer = setTimeout(() => {
          if (++sent === 60) controller.close();
          else controller.enqueue(new Uint8Array([0x23]));
          resolve();
        }, 50);
      }),
    cancel: () => clearTimeout(timer),
  });
  const idle = idleWatch("http://127.0.0.1:9/script.ipxe", 2000, {
    minSpeed: 100,
    minSpeedTimeMs: 400,
  });
  const started = performance.now();
  try {
    const err = await idle.watch(new Response(body)).text().then(
      () => undefined,
      (err) => err,
    );
    assert.ok(err instanceof NetworkError, String(err));
    assert.match(err.message, /: slower than 100 bytes\/s /);
    assert.ok(performance.now() - started < 1500);
    assert.equal(idle.signal.reason, err);
  } finally {
    idle.stop();
    clearTimeout(timer);
  }
});

Deno.test("idleWatch: a body read to its end stops the watch: nothing is cut afterwards, and no timer is left behind", async () => {
  const idle = idleWatch("http://127.0.0.1:9/script.ipxe", 100, {
    minSpeed: 1_000_000,
    minSpeedTimeMs: 50,
  });
  const text = await idle.watch(new Response("#!ipxe\n")).text();
  assert.equal(text, "#!ipxe\n");
  // Silent and far below the rate for several windows: a watch still
  // running would cut, and its timer would keep the process alive.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(idle.signal.aborted, false);
});
