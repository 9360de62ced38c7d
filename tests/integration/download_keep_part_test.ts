/**
 * `keepPart`, the image pipeline's use of the bootloader's downloader: a
 * `.part` an earlier run left is resumed (Range without If-Range) only when
 * the digest is pinned, a wrong leftover never passes the pin, and a network
 * failure keeps what came for the next run.
 */

import assert from "node:assert/strict";
import { DigestMismatchError, download } from "../../lib/stage/download.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { sha256Hex } from "../../lib/stage/sha256.ts";
import { captureLog, withTemp } from "../test_util.ts";
import { BusyBudget } from "../../lib/http/busy.ts";

// --busy-timeout 0: a busy answer is an ordinary failure here (busy_test.ts waits).
const fast = {
  baseDelayMs: 1,
  maxDelayMs: 5,
  timeoutMs: 2000,
  busy: new BusyBudget(0),
};

function bytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + 3) & 0xff;
  return out;
}

/** Serves `body` at any path, honouring `Range: bytes=N-`; records the range headers. */
function serveRanges(body: Uint8Array<ArrayBuffer>, fail?: () => boolean) {
  const seen: { range: string | null; ifRange: string | null }[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      seen.push({
        range: req.headers.get("range"),
        ifRange: req.headers.get("if-range"),
      });
      if (fail?.()) return new Response("busy", { status: 503 });
      const m = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
      if (m) {
        const from = Number(m[1]);
        if (from >= body.length) return new Response(null, { status: 416 });
        return new Response(body.slice(from), {
          status: 206,
          headers: {
            "content-range": `bytes ${from}-${body.length - 1}/${body.length}`,
          },
        });
      }
      return new Response(body, { headers: { "accept-ranges": "bytes" } });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/image.xz`,
    seen,
    close: () => server.shutdown(),
  };
}

Deno.test("download keepPart: an earlier run's .part is resumed with Range, no If-Range, and the whole file passes the pin", async () => {
  const body = bytes(300_000);
  const server = serveRanges(body);
  try {
    await withTemp(async (dir) => {
      await Deno.writeFile(`${dir}/f.part`, body.subarray(0, 120_000));
      const [result, lines] = await captureLog(() =>
        download(server.url, `${dir}/f`, {
          ...fast,
          sha256: sha256Hex(body),
          keepPart: true,
        })
      );
      assert.deepEqual(server.seen, [{
        range: "bytes=120000-",
        ifRange: null,
      }]);
      assert.equal(result.resumed, true);
      assert.equal(result.sha256, sha256Hex(body));
      assert.deepEqual(await Deno.readFile(`${dir}/f`), body);
      assert.ok(
        lines.some((l) =>
          /resuming at byte 120000 \(left by an earlier run\)/.test(l)
        ),
        lines.join("\n"),
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("download keepPart: without a pin, or without keepPart, a leftover is never resumed", async () => {
  const body = bytes(50_000);
  const server = serveRanges(body);
  try {
    await withTemp(async (dir) => {
      for (const options of [{ keepPart: true }, { sha256: sha256Hex(body) }]) {
        await Deno.writeFile(`${dir}/f.part`, bytes(10_000).fill(0xee));
        const result = await download(server.url, `${dir}/f`, {
          ...fast,
          ...options,
        });
        assert.equal(server.seen.at(-1)!.range, null);
        assert.equal(result.resumed, false);
        assert.deepEqual(await Deno.readFile(`${dir}/f`), body);
        await Deno.remove(`${dir}/f`);
      }
    });
  } finally {
    await server.close();
  }
});

Deno.test("download keepPart: a leftover with other bytes fails the pin and is deleted; a network failure keeps the .part", async () => {
  const body = bytes(80_000);
  let busy = false;
  const server = serveRanges(body, () => busy);
  try {
    await withTemp(async (dir) => {
      const wrong = body.slice(0, 40_000);
      wrong[100] ^= 0xff;
      await Deno.writeFile(`${dir}/f.part`, wrong);
      await assert.rejects(
        captureLog(() =>
          download(server.url, `${dir}/f`, {
            ...fast,
            sha256: sha256Hex(body),
            keepPart: true,
          })
        ),
        (err: unknown) =>
          err instanceof DigestMismatchError &&
          err.exitCode === ExitCode.Verify &&
          err.expected === sha256Hex(body),
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);

      busy = true;
      await Deno.writeFile(`${dir}/f.part`, body.subarray(0, 40_000));
      await assert.rejects(
        captureLog(() =>
          download(server.url, `${dir}/f`, {
            ...fast,
            retries: 1,
            sha256: sha256Hex(body),
            keepPart: true,
          })
        ),
        (err: unknown) =>
          err instanceof BootError && err.exitCode === ExitCode.Download,
      );
      assert.deepEqual(
        await Deno.readFile(`${dir}/f.part`),
        body.subarray(0, 40_000),
        "the bytes that came are kept for the next run",
      );
      busy = false;
      const result = await captureLog(() =>
        download(server.url, `${dir}/f`, {
          ...fast,
          sha256: sha256Hex(body),
          keepPart: true,
        })
      );
      assert.equal(result[0].sha256, sha256Hex(body));
      assert.deepEqual(server.seen.at(-1), {
        range: "bytes=40000-",
        ifRange: null,
      });
    });
  } finally {
    await server.close();
  }
});
