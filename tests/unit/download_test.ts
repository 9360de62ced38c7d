/**
 * The download (lib/stage/download.ts) against a scripted transport: what a
 * clean but short body, a file changed on disk behind the download, a user's
 * abort and a watchdog cut become; what the log says on a retry or a busy
 * wait (where the next attempt starts, the delay); what the result and the
 * progress tracker are given; an earlier run's `.part` that is not ours to
 * resume. tests/integration/download_test.ts covers the same code through
 * real servers.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../../lib/errors.ts";
import type { HttpClient, SendInit } from "../../lib/http/request.ts";
import { DigestMismatchError, download } from "../../lib/stage/download.ts";
import { captureLog, withTemp } from "../test_util.ts";

const fast = { baseDelayMs: 10, maxDelayMs: 20, retries: 1 };
const BODY = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
const sha = (bytes: Uint8Array) =>
  createHash("sha256").update(bytes).digest("hex");

/** A transport answering each request with `answer(n)`; it records the Range headers. */
function scripted(
  answer: (n: number, init: SendInit) => Response,
): { client: HttpClient; ranges: (string | null)[] } {
  const ranges: (string | null)[] = [];
  return {
    ranges,
    client: {
      insecure: false,
      send: (_url, init) => {
        ranges.push(init.headers.get("range"));
        return Promise.resolve(answer(ranges.length - 1, init));
      },
      close: () => {},
      [Symbol.dispose]: () => {},
    },
  };
}

/**
 * A body of `bytes` in chunks of 64 KiB, then `end()` (close, error or hang);
 * aborting `signal` errors it, as fetch's body is when its request's signal
 * aborts.
 */
function body(
  bytes: Uint8Array,
  end: (c: ReadableStreamDefaultController<Uint8Array>) => void = (c) =>
    c.close(),
  onChunk?: (sent: number) => Promise<void> | void,
  signal?: AbortSignal,
): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    start(c) {
      signal?.addEventListener("abort", () => c.error(signal.reason));
    },
    async pull(c) {
      if (at >= bytes.length) return end(c);
      const part = bytes.slice(at, at + 65536);
      at += part.length;
      await onChunk?.(at);
      c.enqueue(part);
    },
  });
}

Deno.test("download: a clean body shorter than its Content-Length is a network error, retried, then Download naming both lengths", async () => {
  const { client } = scripted(() =>
    new Response(body(BODY.subarray(0, 100_000)), {
      headers: { "content-length": String(BODY.length) },
    })
  );
  await withTemp(async (dir) => {
    await assert.rejects(
      download("http://h/k", `${dir}/k`, { ...fast, client }),
      (err) =>
        err instanceof BootError && err.exitCode === ExitCode.Download &&
        err.message ===
          `Cannot download http://h/k: the body ended after 100000 of ${BODY.length} bytes (after 2 attempts)`,
    );
  });
});

Deno.test("download: a file that grows on disk behind the download is a Verify error naming both sizes", async () => {
  for (const withLength of [true, false]) {
    await withTemp(async (dir) => {
      const { client } = scripted(() =>
        new Response(
          body(BODY, undefined, async (sent) => {
            // Someone else writes to the .part half-way.
            if (sent === 131072) {
              await Deno.writeFile(`${dir}/k.part`, new Uint8Array(500_000), {
                append: true,
              });
            }
          }),
          withLength
            ? { headers: { "content-length": String(BODY.length) } }
            : {},
        )
      );
      await assert.rejects(
        download("http://h/k", `${dir}/k`, { ...fast, client }),
        (err) =>
          err instanceof BootError && err.exitCode === ExitCode.Verify &&
          /^http:\/\/h\/k: \d+ bytes on disk, expected 300000$/.test(
            err.message,
          ),
      );
    });
  }
});

Deno.test("download: the result says what it knows and no more; the tracker gets the size and digest", async () => {
  const { client } = scripted(() => new Response(body(BODY)));
  await withTemp(async (dir) => {
    const finished: unknown[] = [];
    const r = await download("http://h/k", `${dir}/k`, {
      ...fast,
      client,
      tracker: {
        update: () => {},
        finish: (summary) => finished.push(summary),
        fail: () => {},
      },
    });
    assert.equal(r.sha256, sha(BODY));
    assert.equal(r.resumed, false);
    assert.equal(r.attempts, 1);
    // No Content-Length, no check: no such keys at all.
    assert.ok(!("contentLength" in r), "contentLength");
    assert.ok(!("format" in r), "format");
    assert.ok(!("etag" in r) && !("lastModified" in r), "validators");
    assert.deepEqual(finished, [{ size: BODY.length, sha256: sha(BODY) }]);
  });
});

Deno.test("download: a new file is never truncated; a restart from byte 0 after a partial attempt truncates what came", async () => {
  // On ext4 a file truncated to zero and then written is flushed on close.
  const truncated: (number | undefined)[] = [];
  const original = Deno.FsFile.prototype.truncate;
  Deno.FsFile.prototype.truncate = function (len?: number) {
    truncated.push(len);
    return original.call(this, len);
  };
  try {
    await withTemp(async (dir) => {
      const clean = scripted(() => new Response(body(BODY)));
      const r = await download("http://h/k", `${dir}/k`, {
        ...fast,
        client: clean.client,
      });
      assert.equal(r.sha256, sha(BODY));
      assert.deepEqual(truncated, []);
      // Cut after 128 KiB, no ranges: the retry starts over on the same file,
      // whose next body is shorter than what the first attempt wrote.
      const short = BODY.subarray(0, 100_000);
      const cut = scripted((n) =>
        new Response(
          n === 0
            ? body(BODY.subarray(0, 131072), (c) => c.error(new Error("reset")))
            : body(short),
        )
      );
      const [again] = await captureLog(() =>
        download("http://h/j", `${dir}/j`, { ...fast, client: cut.client })
      );
      assert.deepEqual(cut.ranges, [null, null]);
      assert.deepEqual(truncated, [0]);
      assert.equal(again.sha256, sha(short));
      assert.deepEqual(await Deno.readFile(`${dir}/j`), short);
    });
  } finally {
    Deno.FsFile.prototype.truncate = original;
  }
});

Deno.test("download: a 200 without a body is an empty file (Verify), not a lost connection retried", async () => {
  const { client, ranges } = scripted(() => new Response(null));
  await withTemp(async (dir) => {
    await assert.rejects(
      download("http://h/k", `${dir}/k`, { ...fast, client }),
      (err) =>
        err instanceof BootError && err.exitCode === ExitCode.Verify &&
        err.message === "http://h/k is empty",
    );
    assert.deepEqual(ranges, [null]);
  });
});

Deno.test("download: a status without a body says the status alone; a pin mismatch is a DigestMismatchError", async () => {
  const { client } = scripted(() => new Response(null, { status: 404 }));
  await withTemp(async (dir) => {
    await assert.rejects(
      download("http://h/k", `${dir}/k`, { ...fast, client }),
      (err) =>
        err instanceof BootError &&
        err.message === "Cannot download http://h/k: HTTP 404",
    );
    const ok = scripted(() => new Response(body(BODY)));
    await assert.rejects(
      download("http://h/k", `${dir}/k`, {
        ...fast,
        client: ok.client,
        sha256: "0".repeat(64),
      }),
      (err) =>
        err instanceof DigestMismatchError &&
        err.name === "DigestMismatchError" &&
        err.exitCode === ExitCode.Verify,
    );
  });
});

Deno.test("download: a retry says where the next attempt starts and after how long", async () => {
  // The first answer has no validator: nothing can be resumed.
  const { client, ranges } = scripted((n) =>
    n === 0
      ? new Response(body(BODY, (c) => c.error(new Error("reset"))), {
        headers: { "content-length": String(BODY.length) },
      })
      : new Response(body(BODY))
  );
  await withTemp(async (dir) => {
    const [r, lines] = await captureLog(() =>
      download("http://h/k", `${dir}/k`, {
        ...fast,
        baseDelayMs: 100,
        maxDelayMs: 100,
        client,
      })
    );
    assert.equal(r.sha256, sha(BODY));
    assert.deepEqual(ranges, [null, null]);
    const retry = lines.find((l) => / retry 1\/1 in /.test(l));
    assert.ok(retry, lines.join("\n"));
    assert.match(retry, /; retry 1\/1 in 0\.\d s, from the start$/);
  });
});

Deno.test("download: a busy server's wait says where the next attempt starts", async () => {
  const { client } = scripted((n) =>
    n === 0
      ? new Response("busy", { status: 503, headers: { "retry-after": "0" } })
      : new Response(body(BODY))
  );
  await withTemp(async (dir) => {
    const [, lines] = await captureLog(() =>
      download("http://h/k", `${dir}/k`, { ...fast, client })
    );
    assert.ok(
      lines.some((l) =>
        /http:\/\/h\/k: server busy \(HTTP 503\).*, from the start$/.test(l)
      ),
      lines.join("\n"),
    );
  });
});

Deno.test("download: a stall is the watchdog's own error; the caller's abort is passed on as it is, never retried", async () => {
  const stalls = scripted((_n, init) =>
    new Response(
      body(
        BODY.subarray(0, 10),
        () => new Promise(() => {}),
        undefined,
        init.signal,
      ),
    )
  );
  await withTemp(async (dir) => {
    await assert.rejects(
      download("http://h/k", `${dir}/k`, {
        ...fast,
        retries: 0,
        timeoutMs: 200,
        client: stalls.client,
      }),
      (err) =>
        err instanceof BootError &&
        err.message ===
          "Cannot download http://h/k: no data for 0.2 s after 10 bytes",
    );
    const abort = new AbortController();
    const reason = new Error("stopped by the caller");
    const user = scripted((_n, init) =>
      new Response(
        body(BODY, () => new Promise(() => {}), (sent) => {
          if (sent >= 131072) abort.abort(reason);
        }, init.signal),
      )
    );
    await assert.rejects(
      download("http://h/k", `${dir}/k`, {
        ...fast,
        retries: 3,
        client: user.client,
        signal: abort.signal,
      }),
      (err) => err === reason || (err as Error)?.name === "AbortError",
    );
    assert.equal(user.ranges.length, 1, "not retried");
  });
});

/** Answers a Range request with the rest of `bytes` (206), anything else with all of it. */
function ranged(bytes: Uint8Array) {
  return scripted((_n, init) => {
    const m = /^bytes=(\d+)-$/.exec(init.headers.get("range") ?? "");
    if (!m) {
      return new Response(body(bytes), {
        headers: {
          "content-length": String(bytes.length),
          "accept-ranges": "bytes",
        },
      });
    }
    const from = Number(m[1]);
    return new Response(body(bytes.subarray(from)), {
      status: 206,
      headers: {
        "content-range": `bytes ${from}-${bytes.length - 1}/${bytes.length}`,
        "content-length": String(bytes.length - from),
      },
    });
  });
}

Deno.test("download keepPart: a leftover that is a link, empty, or another user's is replaced, never resumed or written through", async () => {
  await withTemp(async (dir) => {
    const pinned = { ...fast, keepPart: true, sha256: sha(BODY) };
    // A link to a file of someone else's.
    const target = `${dir}/target`;
    await Deno.writeFile(target, BODY.subarray(0, 1000));
    await Deno.symlink(target, `${dir}/a.part`);
    let server = ranged(BODY);
    let [r, lines] = await captureLog(() =>
      download("http://h/a", `${dir}/a`, { ...pinned, client: server.client })
    );
    assert.equal(r.sha256, sha(BODY));
    assert.deepEqual(server.ranges, [null]);
    assert.equal(
      (await Deno.readFile(target)).length,
      1000,
      "target untouched",
    );
    assert.ok(!lines.some((l) => /earlier run/.test(l)), lines.join("\n"));
    // An empty leftover: nothing to resume.
    await Deno.writeFile(`${dir}/b.part`, new Uint8Array(0));
    server = ranged(BODY);
    [r, lines] = await captureLog(() =>
      download("http://h/b", `${dir}/b`, { ...pinned, client: server.client })
    );
    assert.deepEqual(server.ranges, [null]);
    assert.ok(!lines.some((l) => /earlier run/.test(l)), lines.join("\n"));
    // Our own leftover is resumed, and the log says so.
    await Deno.writeFile(`${dir}/c.part`, BODY.subarray(0, 1000));
    server = ranged(BODY);
    [r, lines] = await captureLog(() =>
      download("http://h/c", `${dir}/c`, { ...pinned, client: server.client })
    );
    assert.equal(r.sha256, sha(BODY));
    assert.deepEqual(server.ranges, ["bytes=1000-"]);
    assert.ok(
      lines.some((l) =>
        l.endsWith("http://h/c: resuming at byte 1000 (left by an earlier run)")
      ),
      lines.join("\n"),
    );
    if (Deno.uid() === 0) {
      // Another user's leftover (as root, the test can make one).
      await Deno.writeFile(`${dir}/d.part`, BODY.subarray(0, 1000));
      await Deno.chown(`${dir}/d.part`, 65534, 65534);
      server = ranged(BODY);
      r = (await captureLog(() =>
        download("http://h/d", `${dir}/d`, { ...pinned, client: server.client })
      ))[0];
      assert.equal(r.sha256, sha(BODY));
      assert.deepEqual(server.ranges, [null]);
      assert.equal((await Deno.stat(`${dir}/d`)).uid, 0);
    }
  });
});

Deno.test("download keepPart: an assisted pxe-initrd leftover is never resumed; a fresh download cut by a server without ranges starts over", async () => {
  await withTemp(async (dir) => {
    const url =
      "http://h/api/assisted-install/v2/infra-envs/x/downloads/files/pxe-initrd?arch=x86_64";
    await Deno.writeFile(`${dir}/i.part`, BODY.subarray(0, 1000));
    let server = ranged(BODY);
    const [r, lines] = await captureLog(() =>
      download(url, `${dir}/i`, {
        ...fast,
        keepPart: true,
        sha256: sha(BODY),
        client: server.client,
      })
    );
    assert.equal(r.sha256, sha(BODY));
    assert.deepEqual(server.ranges, [null]);
    assert.ok(!lines.some((l) => /resuming/.test(l)), lines.join("\n"));
    // No leftover, no Accept-Ranges, cut mid-way: the retry starts at 0.
    server = scripted((n) =>
      new Response(
        n === 0 ? body(BODY, (c) => c.error(new Error("reset"))) : body(BODY),
        { headers: { "content-length": String(BODY.length) } },
      )
    );
    await captureLog(() =>
      download("http://h/j", `${dir}/j`, {
        ...fast,
        keepPart: true,
        sha256: sha(BODY),
        client: server.client,
      })
    );
    assert.deepEqual(server.ranges, [null, null]);
  });
});
