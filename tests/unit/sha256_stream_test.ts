/**
 * The sha256 stream and the write pipeline: the digest is the one of every
 * byte in order whatever the interleaving (streams side by side, writes that
 * finish late), the blocks come back, a failure reaches the caller, and
 * nothing keeps the process alive once the last stream ends.
 */

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { openSha256Stream } from "../../lib/stage/sha256_stream.ts";
import { sha256File } from "../../lib/stage/sha256.ts";
import { WritePipeline } from "../../lib/stage/write_pipeline.ts";
import { withTemp } from "../test_util.ts";

function blocks(count: number, seed: number): Uint8Array[] {
  return Array.from(
    { length: count },
    (_, i) =>
      new Uint8Array(randomBytes(1 + ((seed * 7919 + i * 104729) % 70000))),
  );
}

function expected(parts: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
}

for (const inline of [false, true]) {
  const how = inline ? "inline" : "worker";
  Deno.test(`sha256 stream (${how}): streams side by side each hash their own bytes, in order, and hand the blocks back`, async () => {
    const inputs = [blocks(40, 1), blocks(25, 2), blocks(1, 3)];
    const streams = inputs.map(() => openSha256Stream({ inline }));
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      inputs.forEach((parts, s) => {
        if (i >= parts.length) return;
        // Room after the bytes: only `length` of them count.
        const block = new ArrayBuffer(parts[i].length + 13);
        new Uint8Array(block).set(parts[i]);
        new Uint8Array(block).fill(0xff, parts[i].length);
        pending.push(
          streams[s].update(block, parts[i].length).then((back) => {
            assert.equal(back.byteLength, parts[i].length + 13);
            assert.deepEqual(
              new Uint8Array(back, 0, parts[i].length),
              parts[i],
            );
          }),
        );
        if (!inline) assert.equal(block.byteLength, 0, "transferred away");
      });
    }
    await Promise.all(pending);
    const digests = await Promise.all(streams.map((s) => s.digest()));
    assert.deepEqual(digests, inputs.map(expected));
  });

  Deno.test(`sha256 stream (${how}): an ended stream refuses updates, close after digest is harmless`, async () => {
    const stream = openSha256Stream({ inline });
    assert.equal(
      await stream.digest(),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    stream.close();
    await assert.rejects(
      stream.update(new ArrayBuffer(4), 4),
      /The sha256 stream has ended/,
    );
    await assert.rejects(stream.digest(), /The sha256 stream has ended/);
  });

  Deno.test(`sha256 stream (${how}): after a digest, another digest or an update is refused`, async () => {
    const stream = openSha256Stream({ inline });
    await stream.update(new ArrayBuffer(8), 8);
    await stream.digest();
    await assert.rejects(stream.digest(), /The sha256 stream has ended/);
    await assert.rejects(
      stream.update(new ArrayBuffer(4), 4),
      /The sha256 stream has ended/,
    );
  });

  Deno.test(`sha256 stream (${how}): a closed stream refuses updates and a digest; closing twice is harmless`, async () => {
    const stream = openSha256Stream({ inline });
    await stream.update(new ArrayBuffer(8), 8);
    stream.close();
    stream.close();
    await assert.rejects(
      stream.update(new ArrayBuffer(4), 4),
      /The sha256 stream has ended/,
    );
    await assert.rejects(stream.digest(), /The sha256 stream has ended/);
  });
}

Deno.test("sha256 stream: a stream closed while another runs: its late answer is dropped, the other's digest is whole", async () => {
  const parts = blocks(12, 5);
  const other = openSha256Stream();
  const closed = openSha256Stream();
  const pending = [
    closed.update(new ArrayBuffer(4 << 20), 4 << 20),
    closed.update(new ArrayBuffer(4 << 20), 4 << 20),
  ];
  closed.close();
  for (const rejected of pending) {
    await assert.rejects(rejected, /The sha256 stream has ended/);
  }
  // The worker answers the closed stream's updates after this one's: the
  // answers for a stream nobody waits for are dropped without an error.
  for (const part of parts) {
    await other.update(part.slice().buffer, part.length);
  }
  assert.equal(await other.digest(), expected(parts));
});

Deno.test("sha256 stream: a stream closed with updates in flight rejects them, and the next stream starts afresh", async () => {
  const stream = openSha256Stream();
  const inFlight = stream.update(new ArrayBuffer(1 << 20), 1 << 20);
  stream.close();
  await assert.rejects(inFlight, /The sha256 stream has ended/);
  const next = openSha256Stream();
  await next.update(new TextEncoder().encode("abc").buffer as ArrayBuffer, 3);
  assert.equal(
    await next.digest(),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("sha256 stream: the worker does not keep a process alive after the last stream ends", async () => {
  const module = new URL("../../lib/stage/sha256_stream.ts", import.meta.url);
  const code = `
    import { openSha256Stream } from ${JSON.stringify(module.href)};
    const a = openSha256Stream();
    const b = openSha256Stream();
    await a.update(new Uint8Array([1, 2, 3]).buffer, 3);
    b.close();
    console.log(await a.digest());
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  });
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(
    new TextDecoder().decode(out.stdout).trim(),
    expected([new Uint8Array([1, 2, 3])]),
  );
});

Deno.test("sha256File: files of every size around the block size", async () => {
  await withTemp(async (dir) => {
    for (const size of [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 << 20]) {
      const bytes = new Uint8Array(randomBytes(size));
      await Deno.writeFile(`${dir}/f`, bytes);
      assert.equal(await sha256File(`${dir}/f`), expected([bytes]), `${size}`);
    }
  });
});

Deno.test("write pipeline: writes in order one at a time, hashes what was written, bounds the blocks in circulation", async () => {
  const written: number[] = [];
  let writing = 0;
  let most = 0;
  const real = openSha256Stream();
  let pushed = 0;
  let hashed = 0;
  let mostOut = 0;
  const hash = {
    ...real,
    update: async (block: ArrayBuffer, length: number) => {
      const back = await real.update(block, length);
      hashed++;
      return back;
    },
  };
  const pipeline = new WritePipeline({
    blockSize: 1000,
    depth: 3,
    hash,
    write: async (bytes) => {
      writing++;
      most = Math.max(most, writing);
      // Late and uneven, so a write that did not wait for the last would show.
      await new Promise((r) => setTimeout(r, (bytes[0] * 7) % 5));
      written.push(...bytes);
      writing--;
    },
  });
  const all: number[] = [];
  for (let i = 0; i < 20; i++) {
    const block = await pipeline.take();
    mostOut = Math.max(mostOut, pushed - hashed + 1);
    const length = i === 19 ? 321 : 1000;
    const view = new Uint8Array(block, 0, length);
    for (let j = 0; j < length; j++) view[j] = (i * 31 + j) & 0xff;
    all.push(...view);
    pipeline.push(block, length);
    pushed++;
  }
  await pipeline.drain();
  assert.deepEqual(written, all);
  assert.equal(most, 1);
  assert.equal(mostOut, 3, "at most depth blocks taken and not yet hashed");
  assert.equal(await real.digest(), expected([new Uint8Array(all)]));
});

Deno.test("write pipeline: a failed write reaches take or drain, after the blocks in flight settle", async () => {
  let writes = 0;
  const pipeline = new WritePipeline({
    blockSize: 10,
    depth: 2,
    write: () => {
      writes++;
      return writes === 2
        ? Promise.reject(new Error("No space left on device"))
        : Promise.resolve();
    },
  });
  const failed = (async () => {
    for (let i = 0; i < 10; i++) {
      pipeline.push(await pipeline.take(), 10);
    }
  })();
  await assert.rejects(failed, /No space left/);
  await assert.rejects(pipeline.drain(), /No space left/);
  assert.equal(writes, 2, "nothing is written after a failed write");
});

Deno.test("write pipeline: drain throws the first failure in block order, a hash's before a later write's", async () => {
  let updates = 0;
  const hash = {
    update: (block: ArrayBuffer) =>
      ++updates === 1
        ? Promise.reject(new Error("The sha256 worker failed: first"))
        : Promise.resolve(block),
    digest: () => Promise.resolve(""),
    close: () => {},
  };
  let writes = 0;
  const pipeline = new WritePipeline({
    blockSize: 10,
    depth: 3,
    hash,
    write: () =>
      ++writes === 2
        ? Promise.reject(new Error("No space left on device"))
        : Promise.resolve(),
  });
  pipeline.push(await pipeline.take(), 10);
  pipeline.push(await pipeline.take(), 10);
  pipeline.push(await pipeline.take(), 10);
  await assert.rejects(pipeline.drain(), /sha256 worker failed: first/);
  assert.equal(writes, 2, "nothing is written after a failed write");
});

Deno.test("write pipeline fill: chunks across block edges land whole and in order; onChunk sees each chunk", async () => {
  const written: number[][] = [];
  const pipeline = new WritePipeline({
    blockSize: 8,
    depth: 2,
    write: (bytes) => {
      written.push([...bytes]);
      return Promise.resolve();
    },
  });
  // 3 + 13 + 0 + 8 bytes: a chunk that spans two blocks and ends mid-block,
  // an empty one, one that fills the block's rest and spills.
  const chunks = [3, 13, 0, 8].map((n, c) =>
    Uint8Array.from({ length: n }, (_, i) => c * 50 + i)
  );
  let next = 0;
  const seen: number[] = [];
  await pipeline.fill(
    () =>
      Promise.resolve(
        next < chunks.length
          ? { done: false, value: chunks[next++] }
          : { done: true, value: undefined },
      ),
    (bytes) => seen.push(bytes),
  );
  await pipeline.drain();
  assert.deepEqual(seen, [3, 13, 0, 8]);
  assert.deepEqual(written.map((w) => w.length), [8, 8, 8]);
  assert.deepEqual(written.flat(), chunks.flatMap((c) => [...c]));
});

Deno.test("write pipeline fill: a failed read is thrown as it is, after the bytes before it, a partial block too, are pushed", async () => {
  const written: number[] = [];
  const pipeline = new WritePipeline({
    blockSize: 8,
    write: (bytes) => {
      written.push(...bytes);
      return Promise.resolve();
    },
  });
  const reset = new Error("connection reset");
  let reads = 0;
  await assert.rejects(
    pipeline.fill(() =>
      ++reads === 1
        ? Promise.resolve({ done: false, value: new Uint8Array(11).fill(7) })
        : Promise.reject(reset)
    ),
    (err) => err === reset,
  );
  await pipeline.drain();
  assert.deepEqual(written, new Array(11).fill(7));
});
