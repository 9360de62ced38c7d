/**
 * The body reader (lib/stage/body_reader.ts) on its own: one reused buffer
 * for byte streams, the default reader otherwise. download_test covers it
 * through real downloads.
 */

import assert from "node:assert/strict";
import { bodyReader } from "../../lib/stage/body_reader.ts";

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
