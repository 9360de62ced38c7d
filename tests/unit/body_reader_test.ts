/**
 * The body reader and its watchdog (lib/stage/body_reader.ts) on their own:
 * one reused buffer for byte streams, the default reader otherwise, and the
 * stall and trickle cuts. download_test covers both through real downloads.
 */

import assert from "node:assert/strict";
import { NetworkError } from "../../lib/http/request.ts";
import { bodyReader, watchBody } from "../../lib/stage/body_reader.ts";

function byteStream(chunks: number[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    type: "bytes",
    start(c) {
      for (const size of chunks) c.enqueue(new Uint8Array(size).fill(7));
      c.close();
    },
  });
}

Deno.test("bodyReader: a byte stream is read into one 256 KiB buffer; another stream through its default reader; no body, no reader", async () => {
  assert.equal(bodyReader(null), undefined);
  const read = bodyReader(byteStream([1000, 3000]))!;
  const sizes: number[] = [];
  for (;;) {
    const { done, value } = await read();
    if (done) break;
    // A view into the reader's own buffer, not a buffer per chunk.
    assert.equal(value.buffer.byteLength, 256 * 1024);
    assert.ok(value.every((b) => b === 7));
    sizes.push(value.length);
  }
  assert.equal(sizes.reduce((a, b) => a + b, 0), 4000);
  const plain = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array([1, 2, 3]));
      c.close();
    },
  });
  const readPlain = bodyReader(plain)!;
  assert.deepEqual((await readPlain()).value, new Uint8Array([1, 2, 3]));
  assert.equal((await readPlain()).done, true);
});

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
