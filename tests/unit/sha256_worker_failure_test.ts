/**
 * When the sha256 worker fails, every update still waiting on it is
 * rejected with the reason, and the streams opened afterwards hash on the
 * calling thread: a failed worker never leaves a download hanging. In a file
 * of its own: the failure is remembered for the rest of the module's life.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { openSha256Stream } from "../../lib/stage/sha256_stream.ts";

Deno.test("sha256 stream: a worker that fails rejects every waiting update with its reason; later streams hash inline", async () => {
  const a = openSha256Stream();
  const b = openSha256Stream();
  const waiting = [
    b.update(new ArrayBuffer(1 << 20), 1 << 20),
    // A length past the end of its block: the worker cannot read it.
    a.update(new ArrayBuffer(4), 8),
    b.update(new ArrayBuffer(1 << 20), 1 << 20),
  ];
  const results = await Promise.allSettled(waiting);
  // b's first update may have been answered before the failure.
  assert.equal(results[1].status, "rejected");
  assert.match(
    String((results[1] as PromiseRejectedResult).reason),
    /The sha256 worker failed: /,
  );
  assert.equal(results[2].status, "rejected");
  assert.match(
    String((results[2] as PromiseRejectedResult).reason),
    /The sha256 worker failed: /,
  );
  // The streams of the failed worker refuse what comes later, at once
  // (nothing would answer it).
  await assert.rejects(
    b.update(new ArrayBuffer(4), 4),
    /The sha256 worker failed: /,
  );
  await assert.rejects(a.digest(), /The sha256 worker failed: /);
  // Opened while the failed streams are still open (a retry of one download
  // while another's failure is still being handled).
  const next = openSha256Stream();
  a.close();
  b.close();
  const block = new TextEncoder().encode("abc").buffer as ArrayBuffer;
  const back = await next.update(block, 3);
  // Hashed on this thread: the block was never transferred away.
  assert.equal(back, block);
  assert.equal(block.byteLength, 3);
  assert.equal(
    await next.digest(),
    createHash("sha256").update("abc").digest("hex"),
  );
});
