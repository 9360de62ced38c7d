/**
 * Downloads against loopback servers: a raw HTTP/1.1 server (exact control
 * over cuts, stalls and headers) and Deno.serve (TLS, a 200 MiB body).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { isPxeInitrd } from "../../lib/stage/artifact_url.ts";
import { download } from "../../lib/stage/download.ts";
import { probe } from "../../lib/http/probe.ts";
import { BusyBudget } from "../../lib/http/busy.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { HttpStatusError, request } from "../../lib/http/request.ts";
import { createClient } from "../../lib/http/client.ts";
import { configureLog, log } from "../../lib/log.ts";
import { createProgress, formatBytes } from "../../lib/stage/progress.ts";
import { sha256File } from "../../lib/stage/sha256.ts";
import { captureLog, withTemp } from "../test_util.ts";

const enc = new TextEncoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface RawRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

interface RawServer {
  url: string;
  requests: RawRequest[];
  /** Resolves when close() starts: handlers that stall await it. */
  closing: Promise<void>;
  close(): Promise<void>;
}

type RawHandler = (
  req: RawRequest,
  conn: Deno.Conn,
  index: number,
) => Promise<void>;

/** An HTTP/1.1 server on 127.0.0.1 where each handler writes raw bytes (one request per connection). */
function startRaw(handler: RawHandler): RawServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: RawRequest[] = [];
  const inflight = new Set<Promise<void>>();
  const conns = new Set<Deno.Conn>();
  const { promise: closing, resolve: startClosing } = Promise
    .withResolvers<void>();
  const serve = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(65536);
    let have = 0;
    let text = "";
    for (;;) {
      const n = await conn.read(buf.subarray(have));
      if (n === null) return;
      have += n;
      text = new TextDecoder().decode(buf.subarray(0, have));
      if (text.includes("\r\n\r\n")) break;
    }
    const [head] = text.split("\r\n\r\n");
    const [line, ...rest] = head.split("\r\n");
    const [method, path] = line.split(" ");
    const headers: Record<string, string> = {};
    for (const h of rest) {
      const i = h.indexOf(":");
      headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
    }
    const req = { method, path, headers };
    requests.push(req);
    await handler(req, conn, requests.length - 1);
  };
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const p = serve(conn).catch(() => {}).finally(() => {
          conns.delete(conn);
          try {
            conn.close();
          } catch {
            // already closed
          }
        });
        inflight.add(p);
        p.finally(() => inflight.delete(p));
      }
    } catch {
      // listener closed
    }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    closing,
    async close() {
      startClosing();
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await Promise.allSettled([...inflight]);
      await loop;
    },
  };
}

/** Writes a response head and (part of) a body. */
async function respond(
  conn: Deno.Conn,
  status: number,
  headers: Record<string, string | number>,
  body: Uint8Array = new Uint8Array(),
): Promise<void> {
  let head = `HTTP/1.1 ${status} X\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  head += "\r\n";
  await writeAll(conn, enc.encode(head));
  await writeAll(conn, body);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await conn.write(bytes.subarray(done));
}

/** Options for {@linkcode serveRange}. */
interface RangeOptions {
  /** Cut the answer (a reset) after this byte of the file. */
  cutAt?: number;
  /** Send `Accept-Ranges: bytes` (default true). */
  acceptRanges?: boolean;
  /** `ETag` (default: a strong tag from the body's sha256; null: none). */
  etag?: string | null;
  /** `Last-Modified` (default a fixed date; null: none). */
  lastModified?: string | null;
  /** Honour `If-Range` like a correct server: a mismatch gets a 200 (default true). */
  ifRange?: boolean;
  /** Send `Content-Length` (default true; false: a close-delimited body). */
  contentLength?: boolean;
  /** Replaces the `Content-Range` of a 206 (null: none). */
  contentRange?: (start: number, total: number) => string | null;
}

const DATE = "Wed, 01 Jan 2025 00:00:00 GMT";

/** The strong ETag {@linkcode serveRange} gives a body by default. */
function etagOf(body: Uint8Array): string {
  return `"${sha(body).slice(0, 16)}"`;
}

/** Serves `body` honouring a single `Range: bytes=N-` (and `If-Range`, unless told not to). */
async function serveRange(
  req: RawRequest,
  conn: Deno.Conn,
  body: Uint8Array,
  options: RangeOptions = {},
): Promise<void> {
  const etag = options.etag === undefined ? etagOf(body) : options.etag;
  const lastModified = options.lastModified === undefined
    ? DATE
    : options.lastModified;
  let m = /^bytes=(\d+)-$/.exec(req.headers["range"] ?? "");
  const ifRange = req.headers["if-range"];
  if (
    m && ifRange !== undefined && options.ifRange !== false &&
    ifRange !== etag && ifRange !== lastModified
  ) m = null;
  const start = m ? Number(m[1]) : 0;
  const part = body.subarray(start);
  const headers: Record<string, string | number> = {
    "content-type": "application/octet-stream",
  };
  if (options.contentLength !== false) headers["content-length"] = part.length;
  if (options.acceptRanges !== false) headers["accept-ranges"] = "bytes";
  if (etag !== null) headers["etag"] = etag;
  if (lastModified !== null) headers["last-modified"] = lastModified;
  if (m) {
    const range = options.contentRange
      ? options.contentRange(start, body.length)
      : `bytes ${start}-${body.length - 1}/${body.length}`;
    if (range !== null) headers["content-range"] = range;
  }
  const cut = options.cutAt === undefined ? part.length : options.cutAt - start;
  await respond(conn, m ? 206 : 200, headers, part.subarray(0, cut));
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  }
  return out;
}

const fast = { baseDelayMs: 10, maxDelayMs: 50 };

function bootError(code: number, message?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, code, err.message);
    if (message) assert.match(err.message, message);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  };
}

Deno.test("download: streams to a file, hashes it, no Authorization, identity encoding", async () => {
  const body = randomBytes(3 * 1024 * 1024 + 5);
  const server = startRaw((req, conn) => serveRange(req, conn, body));
  try {
    await withTemp(async (dir) => {
      const r = await download(`${server.url}/kernel`, `${dir}/k`, fast);
      assert.equal(r.size, body.length);
      assert.equal(r.sha256, sha(body));
      assert.equal(r.resumed, false);
      assert.equal(r.attempts, 1);
      assert.deepEqual(await Deno.readFile(`${dir}/k`), body);
      assert.equal((await Deno.stat(`${dir}/k`)).mode! & 0o777, 0o600);
      assert.equal(server.requests.length, 1);
      assert.equal(server.requests[0].headers["authorization"], undefined);
      assert.equal(server.requests[0].headers["accept-encoding"], "identity");
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a mid-body reset resumes with Range and re-hashes the whole file", async () => {
  const body = randomBytes(2 * 1024 * 1024);
  const cutAt = 700_001;
  const server = startRaw((req, conn, i) =>
    serveRange(req, conn, body, i === 0 ? { cutAt } : {})
  );
  try {
    await withTemp(async (dir) => {
      const [r, lines] = await captureLog(() =>
        download(
          `${server.url}/boot-artifacts/kernel?arch=x86_64`,
          `${dir}/k`,
          fast,
        )
      );
      assert.equal(r.sha256, sha(body));
      assert.equal(r.size, body.length);
      assert.equal(r.resumed, true);
      assert.equal(r.attempts, 2);
      assert.equal(server.requests[1].headers["range"], `bytes=${cutAt}-`);
      assert.equal(await sha256File(`${dir}/k`), sha(body));
      assert.ok(
        lines.some((l) => /resuming at byte 700001/.test(l)),
        lines.join("\n"),
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: the result carries ETag, Last-Modified and the announced length", async () => {
  const body = randomBytes(400_000);
  const server = startRaw((req, conn) => serveRange(req, conn, body));
  try {
    await withTemp(async (dir) => {
      const r = await download(`${server.url}/k`, `${dir}/k`, fast);
      assert.equal(r.lastModified, DATE);
      assert.equal(r.etag, etagOf(body));
      assert.equal(r.contentLength, body.length);
      const info = await Deno.stat(`${dir}/k`);
      assert.deepEqual(r.identity, {
        dev: info.dev,
        ino: info.ino,
        size: body.length,
        mtimeMs: info.mtime!.getTime(),
      });
    });
  } finally {
    await server.close();
  }
});

Deno.test("probe: one HEAD without Authorization; status, Content-Length, Last-Modified and ETag as given", async () => {
  const server = startRaw(async (req, conn) => {
    if (req.path === "/gone") {
      await respond(conn, 405, { "content-length": 0 });
      return;
    }
    await respond(conn, 200, {
      "content-length": 12345,
      "last-modified": "Wed, 01 Jan 2025 00:00:00 GMT",
      etag: '"v1"',
    });
  });
  try {
    const r = await probe(`${server.url}/k`, { timeoutMs: 5000 });
    assert.deepEqual(r, {
      status: 200,
      contentLength: 12345,
      lastModified: "Wed, 01 Jan 2025 00:00:00 GMT",
      etag: '"v1"',
    });
    assert.equal(server.requests[0].method, "HEAD");
    assert.equal(server.requests[0].headers["authorization"], undefined);
    const gone = await probe(`${server.url}/gone`, { timeoutMs: 5000 });
    assert.equal(gone.status, 405);
    assert.equal(gone.lastModified, undefined);
    assert.equal(server.requests.length, 2);
  } finally {
    await server.close();
  }
});

Deno.test("download: pxe-initrd is never resumed: it restarts from byte 0", async () => {
  // The image service mints a new token per request: the bytes differ.
  const first = randomBytes(500_000);
  const second = randomBytes(500_000);
  const server = startRaw((req, conn, i) =>
    serveRange(
      req,
      conn,
      i === 0 ? first : second,
      i === 0 ? { cutAt: 200_000 } : {},
    )
  );
  const url =
    `${server.url}/api/assisted-images/images/abc/pxe-initrd?arch=x86_64&image_token=SECRETTOKEN`;
  assert.ok(isPxeInitrd(url));
  assert.ok(!isPxeInitrd(`${server.url}/boot-artifacts/kernel`));
  try {
    await withTemp(async (dir) => {
      const [r] = await captureLog(() => download(url, `${dir}/i`, fast));
      assert.equal(server.requests.length, 2);
      assert.equal(server.requests[1].headers["range"], undefined);
      assert.equal(r.sha256, sha(second));
      assert.equal(r.resumed, false);
      assert.deepEqual(await Deno.readFile(`${dir}/i`), second);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a server ignoring Range (200) restarts cleanly", async () => {
  const body = randomBytes(300_000);
  const server = startRaw((_req, conn, i) =>
    // Advertises ranges but always answers 200 with the whole body.
    serveRange(
      { method: "GET", path: "/", headers: {} },
      conn,
      body,
      i === 0 ? { cutAt: 100_000 } : {},
    )
  );
  try {
    await withTemp(async (dir) => {
      const [r] = await captureLog(() =>
        download(`${server.url}/k`, `${dir}/k`, fast)
      );
      assert.equal(server.requests[1].headers["range"], "bytes=100000-");
      assert.equal(r.sha256, sha(body));
      assert.deepEqual(await Deno.readFile(`${dir}/k`), body);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a resume sends If-Range with the strong ETag, else the Last-Modified (never a weak ETag)", async () => {
  const body = randomBytes(300_000);
  const cases: [RangeOptions, string][] = [
    [{}, etagOf(body)],
    [{ etag: 'W/"weak"' }, DATE],
    [{ etag: null }, DATE],
  ];
  for (const [options, expected] of cases) {
    const server = startRaw((req, conn, i) =>
      serveRange(req, conn, body, { ...options, cutAt: i ? undefined : 1000 })
    );
    try {
      await withTemp(async (dir) => {
        const [r] = await captureLog(() =>
          download(`${server.url}/k`, `${dir}/k`, fast)
        );
        assert.equal(r.sha256, sha(body));
        assert.equal(r.resumed, true);
        assert.equal(server.requests[1].headers["range"], "bytes=1000-");
        assert.equal(server.requests[1].headers["if-range"], expected);
      });
    } finally {
      await server.close();
    }
  }
});

Deno.test("download: no Range without Accept-Ranges, a validator and a length: the retry starts over", async () => {
  const body = randomBytes(300_000);
  const cases: [string, RangeOptions][] = [
    ["no Accept-Ranges", { acceptRanges: false }],
    ["neither ETag nor Last-Modified", { etag: null, lastModified: null }],
    ["only a weak ETag", { etag: 'W/"x"', lastModified: null }],
    ["an invalid ETag and date", { etag: "no-quotes", lastModified: "soon" }],
  ];
  for (const [what, options] of cases) {
    const server = startRaw((req, conn, i) =>
      serveRange(req, conn, body, { ...options, cutAt: i ? undefined : 1000 })
    );
    try {
      await withTemp(async (dir) => {
        const [r] = await captureLog(() =>
          download(`${server.url}/k`, `${dir}/k`, fast)
        );
        assert.equal(r.sha256, sha(body), what);
        assert.equal(r.resumed, false, what);
        assert.equal(server.requests.length, 2, what);
        assert.equal(server.requests[1].headers["range"], undefined, what);
        assert.equal(server.requests[1].headers["if-range"], undefined, what);
      });
    } finally {
      await server.close();
    }
  }
});

Deno.test("download: a file that changed between a cut and the resume is downloaded whole again (If-Range → 200)", async () => {
  const v1 = randomBytes(400_000);
  const v2 = randomBytes(400_000);
  const server = startRaw((req, conn, i) =>
    // A correct server: the new version's ETag does not match If-Range.
    i === 0
      ? serveRange(req, conn, v1, { cutAt: 150_000 })
      : serveRange(req, conn, v2)
  );
  try {
    await withTemp(async (dir) => {
      const [r] = await captureLog(() =>
        download(`${server.url}/k`, `${dir}/k`, fast)
      );
      assert.equal(server.requests[1].headers["if-range"], etagOf(v1));
      assert.equal(r.sha256, sha(v2));
      assert.equal(r.etag, etagOf(v2));
      assert.equal(r.resumed, false);
      assert.deepEqual(await Deno.readFile(`${dir}/k`), v2);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a 206 that is not the rest of the same version is never spliced: the next attempt starts over", async () => {
  const v1 = randomBytes(400_000);
  const v2 = randomBytes(400_000);
  const longer = randomBytes(500_000);
  const cut = 150_000;
  const other = "Sun, 01 Jun 2025 00:00:00 GMT";
  // Answer 1 is a 206 that a server ignoring If-Range (or lying) could send;
  // answer 2, from byte 0, is the file the result must be.
  const cases: [
    string,
    (req: RawRequest, conn: Deno.Conn) => Promise<void>,
    Uint8Array,
  ][] = [
    [
      "another ETag",
      (req, conn) => serveRange(req, conn, v2, { ifRange: false }),
      v2,
    ],
    [
      "another Last-Modified",
      (req, conn) =>
        serveRange(req, conn, v2, {
          ifRange: false,
          etag: null,
          lastModified: other,
        }),
      v2,
    ],
    [
      "the same ETag but another total length",
      (req, conn) =>
        serveRange(req, conn, longer, { ifRange: false, etag: etagOf(v1) }),
      longer,
    ],
    [
      "another start",
      (req, conn) =>
        serveRange(req, conn, v1, {
          contentRange: (_start, total) => `bytes 0-${total - 1}/${total}`,
        }),
      v1,
    ],
    [
      "an unknown total",
      (req, conn) =>
        serveRange(req, conn, v1, {
          contentRange: (start, total) => `bytes ${start}-${total - 1}/*`,
        }),
      v1,
    ],
    [
      "no Content-Range",
      (req, conn) => serveRange(req, conn, v1, { contentRange: () => null }),
      v1,
    ],
  ];
  for (const [what, resume, expected] of cases) {
    const v1Options = what === "another Last-Modified" ? { etag: null } : {};
    const server = startRaw((req, conn, i) => {
      if (i === 0) {
        return serveRange(req, conn, v1, { ...v1Options, cutAt: cut });
      }
      if (i === 1) return resume(req, conn);
      return serveRange(req, conn, expected, {
        ...(expected === longer ? { etag: etagOf(v1) } : {}),
      });
    });
    try {
      await withTemp(async (dir) => {
        const [r, lines] = await captureLog(() =>
          download(`${server.url}/k`, `${dir}/k`, fast)
        );
        assert.equal(server.requests.length, 3, what);
        assert.equal(server.requests[1].headers["range"], `bytes=${cut}-`);
        assert.equal(server.requests[2].headers["range"], undefined, what);
        assert.equal(r.sha256, sha(expected), what);
        assert.equal(r.size, expected.length, what);
        assert.equal(r.resumed, false, what);
        assert.deepEqual(await Deno.readFile(`${dir}/k`), expected, what);
        assert.ok(
          lines.some((l) =>
            /not the rest of the same file.*starting over/.test(l)
          ),
          `${what}\n${lines.join("\n")}`,
        );
      });
    } finally {
      await server.close();
    }
  }
});

Deno.test("download: a spliced resume with no retry left fails (Download), leaving no file", async () => {
  const v1 = randomBytes(200_000);
  const v2 = randomBytes(200_000);
  const server = startRaw((req, conn, i) =>
    i === 0
      ? serveRange(req, conn, v1, { cutAt: 50_000 })
      : serveRange(req, conn, v2, { ifRange: false })
  );
  try {
    await withTemp(async (dir) => {
      await captureLog(() =>
        assert.rejects(
          download(`${server.url}/k`, `${dir}/k`, { ...fast, retries: 1 }),
          bootError(ExitCode.Download, /not the rest of the same file.*ETag/),
        )
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a short body (Content-Length not reached) fails, naming the redacted URL", async () => {
  const body = randomBytes(100_000);
  const server = startRaw((req, conn) =>
    serveRange(req, conn, body, { cutAt: 40_000, acceptRanges: false })
  );
  try {
    await withTemp(async (dir) => {
      await captureLog(() =>
        assert.rejects(
          download(`${server.url}/x?image_token=SECRETTOKEN`, `${dir}/x`, {
            ...fast,
            retries: 1,
          }),
          bootError(
            ExitCode.Download,
            /Cannot download http:\/\/127\.0\.0\.1:\d+\/x\?image_token=REDACTED: .*40000.*\(after 2 attempts\)/,
          ),
        )
      );
      assert.equal(server.requests.length, 2);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: with --busy-timeout 0, 503 and 429 count against --retries (Retry-After honoured), then success", async () => {
  const body = enc.encode("kernel bytes");
  const server = startRaw(async (req, conn, i) => {
    if (i === 0) {
      return await respond(
        conn,
        503,
        { "content-length": 4 },
        enc.encode("busy"),
      );
    }
    if (i === 1) {
      return await respond(conn, 429, {
        "retry-after": "0",
        "content-length": 0,
      });
    }
    await serveRange(req, conn, body);
  });
  try {
    await withTemp(async (dir) => {
      const [r, lines] = await captureLog(() =>
        download(`${server.url}/k`, `${dir}/k`, {
          ...fast,
          retries: 3,
          busy: new BusyBudget(0),
        })
      );
      assert.equal(r.attempts, 3);
      assert.equal(r.sha256, sha(body));
      assert.ok(lines.some((l) => /HTTP 503/.test(l)), lines.join("\n"));
      assert.ok(
        lines.some((l) => /HTTP 429.*retry 2\/3 in 0\.0 s/.test(l)),
        lines.join("\n"),
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: 404 is not retried", async () => {
  const server = startRaw((_req, conn) =>
    respond(conn, 404, { "content-length": 9 }, enc.encode("not found"))
  );
  try {
    await withTemp(async (dir) => {
      await assert.rejects(
        download(`${server.url}/nope`, `${dir}/x`, { ...fast, retries: 5 }),
        bootError(ExitCode.Download, /\/nope: HTTP 404 \(not found\)$/),
      );
      assert.equal(server.requests.length, 1);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: no byte for timeoutMs is a network error (retried, then fatal)", async () => {
  const server = startRaw(async (_req, conn) => {
    await respond(conn, 200, { "content-length": 1000 }, new Uint8Array(10));
    await server.closing; // stall
  });
  try {
    await withTemp(async (dir) => {
      const started = Date.now();
      await captureLog(() =>
        assert.rejects(
          download(`${server.url}/slow`, `${dir}/x`, {
            ...fast,
            retries: 1,
            timeoutMs: 300,
          }),
          bootError(ExitCode.Download, /no data for 0\.3 s after 10 bytes/),
        )
      );
      assert.equal(server.requests.length, 2);
      assert.ok(Date.now() - started < 5000);
    });
  } finally {
    await server.close();
  }
});

/** Headers, then `body` `step` bytes at a time every `everyMs` (no silence long enough for the idle timeout). */
function trickle(body: Uint8Array, step: number, everyMs: number) {
  return startRaw(async (_req, conn) => {
    await respond(conn, 200, {
      "content-length": body.length,
      "accept-ranges": "bytes",
      etag: etagOf(body),
    });
    for (let at = 0; at < body.length; at += step) {
      await new Promise((r) => setTimeout(r, everyMs));
      await writeAll(conn, body.subarray(at, at + step));
    }
  });
}

Deno.test("download: a body slower than minSpeed over minSpeedTimeMs is cut and retried, then fatal (resumed in between)", async () => {
  const body = randomBytes(10_000);
  const server = trickle(body, 1, 50); // 20 bytes/s
  try {
    await withTemp(async (dir) => {
      const started = Date.now();
      const [, lines] = await captureLog(() =>
        assert.rejects(
          download(`${server.url}/k`, `${dir}/k`, {
            ...fast,
            retries: 1,
            timeoutMs: 5000,
            minSpeed: 1000,
            minSpeedTimeMs: 400,
          }),
          bootError(
            ExitCode.Download,
            /slower than 1000 bytes\/s \(\d+ bytes in 0\.\d s\) after \d+ bytes \(after 2 attempts\)$/,
          ),
        )
      );
      assert.ok(Date.now() - started < 3000, `${Date.now() - started} ms`);
      assert.equal(server.requests.length, 2);
      assert.match(server.requests[1].headers["range"] ?? "", /^bytes=\d+-$/);
      assert.ok(lines.some((l) => /retry 1\/1 .*resuming at byte/.test(l)));
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a slow body above minSpeed completes; minSpeed 0 never cuts", async () => {
  const body = randomBytes(40_000);
  const fastEnough = trickle(body, 4000, 50); // 80 kB/s
  const slow = trickle(body.subarray(0, 30), 1, 20); // 50 bytes/s
  try {
    await withTemp(async (dir) => {
      const a = await download(`${fastEnough.url}/k`, `${dir}/a`, {
        ...fast,
        retries: 0,
        minSpeed: 10_000,
        minSpeedTimeMs: 200,
      });
      assert.equal(a.sha256, sha(body));
      const b = await download(`${slow.url}/k`, `${dir}/b`, {
        ...fast,
        retries: 0,
        minSpeed: 0,
        minSpeedTimeMs: 100,
      });
      assert.equal(b.size, 30);
    });
  } finally {
    await fastEnough.close();
    await slow.close();
  }
});

Deno.test("download: headers that never come time out", async () => {
  const server = startRaw(async () => {
    await server.closing;
  });
  try {
    await withTemp(async (dir) => {
      await assert.rejects(
        download(`${server.url}/hang`, `${dir}/x`, {
          ...fast,
          retries: 0,
          timeoutMs: 200,
        }),
        bootError(ExitCode.Download, /no answer within/),
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: pin mismatch and empty file are Verify errors; a matching pin passes", async () => {
  const body = enc.encode("some bytes");
  const server = startRaw((req, conn) =>
    req.path === "/empty"
      ? respond(conn, 200, { "content-length": 0 })
      : serveRange(req, conn, body)
  );
  try {
    await withTemp(async (dir) => {
      await assert.rejects(
        download(`${server.url}/k`, `${dir}/k`, { sha256: "00".repeat(32) }),
        bootError(
          ExitCode.Verify,
          /sha256 mismatch for http:\/\/127\.0\.0\.1:\d+\/k: expected 0{64}, got [0-9a-f]{64}/,
        ),
      );
      // A failed download leaves nothing: no dest, no dest.part.
      assert.deepEqual([...Deno.readDirSync(dir)], []);
      await assert.rejects(
        download(`${server.url}/k`, `${dir}/k`, {
          check: () => {
            throw new BootError("rejected by the check", ExitCode.Verify);
          },
        }),
        bootError(ExitCode.Verify, /rejected by the check/),
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);
      const ok = await download(`${server.url}/k`, `${dir}/k`, {
        sha256: sha(body).toUpperCase(),
      });
      assert.equal(ok.sha256, sha(body));
      assert.equal(ok.format, undefined);
      // What the check found is the result's format (no outer variable).
      const checked = await download(`${server.url}/k`, `${dir}/k2`, {
        check: (head, size) => {
          assert.deepEqual(head, body);
          assert.equal(size, body.length);
          return "gzip";
        },
      });
      assert.equal(checked.format, "gzip");
      await assert.rejects(
        download(`${server.url}/empty`, `${dir}/e`),
        bootError(ExitCode.Verify, /\/empty is empty/),
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("download: a redirect to another origin is followed without credentials", async () => {
  const body = enc.encode("redirected");
  const target = startRaw((req, conn) => serveRange(req, conn, body));
  const origin = startRaw((_req, conn) =>
    respond(conn, 302, { location: `${target.url}/file`, "content-length": 0 })
  );
  try {
    await withTemp(async (dir) => {
      const r = await download(`${origin.url}/start`, `${dir}/k`);
      assert.equal(r.sha256, sha(body));
      assert.equal(target.requests[0].path, "/file");
      for (const req of [...origin.requests, ...target.requests]) {
        assert.equal(req.headers["authorization"], undefined);
      }
    });
  } finally {
    await origin.close();
    await target.close();
  }
});

Deno.test("download: an unwritable destination is a Disk error", async () => {
  const server = startRaw((req, conn) =>
    serveRange(req, conn, enc.encode("x"))
  );
  try {
    await withTemp(async (dir) => {
      await Deno.writeTextFile(`${dir}/file`, "");
      await assert.rejects(
        download(`${server.url}/k`, `${dir}/file/k`),
        bootError(ExitCode.Disk, /Cannot write/),
      );
      assert.equal(server.requests.length, 0, "nothing downloaded");
    });
  } finally {
    await server.close();
  }
});

Deno.test("request: a headers-scoped timeout does not cut a slow body; the default one does", async () => {
  // Headers at once, then the body over ~600 ms with a 300 ms header timeout.
  const server = startRaw(async (_req, conn) => {
    await respond(conn, 200, { "content-length": 6 }, enc.encode("abc"));
    await new Promise((r) => setTimeout(r, 600));
    await writeAll(conn, enc.encode("def"));
  });
  try {
    const res = await request(`${server.url}/slow`, {
      timeoutMs: 300,
      timeoutScope: "headers",
    });
    assert.equal(await res.text(), "abcdef");
    // The default scope bounds the whole exchange (API calls, scripts).
    const total = await request(`${server.url}/slow`, { timeoutMs: 300 });
    await assert.rejects(total.text());
  } finally {
    await server.close();
  }
});

// ---- TLS: default refuses a private CA, --ca-cert accepts, --insecure accepts loudly.

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

/** A private CA and a leaf for 127.0.0.1 signed by it, made with openssl now. */
async function makeCerts(dir: string): Promise<void> {
  const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes".split(
    " ",
  );
  await openssl(
    [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=test CA",
    ],
    dir,
  );
  await openssl(
    [
      "req",
      ...ec,
      "-keyout",
      "leaf.key",
      "-out",
      "leaf.csr",
      "-subj",
      "/CN=127.0.0.1",
    ],
    dir,
  );
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      "leaf.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "leaf.pem",
      "-days",
      "1",
      "-extfile",
      "ext.cnf",
    ],
    dir,
  );
}

interface Seen {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** An HTTPS server on 127.0.0.1 with the leaf from {@linkcode makeCerts}. */
async function startTls(
  dir: string,
  handler: (req: Request, index: number) => Response | Promise<Response>,
) {
  const seen: Seen[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(`${dir}/leaf.pem`),
    key: await Deno.readTextFile(`${dir}/leaf.key`),
    onListen() {},
  }, async (req) => {
    const url = new URL(req.url);
    const body = req.method === "POST" ? await req.text() : "";
    seen.push({
      method: req.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
      body,
    });
    return await handler(req, seen.length - 1);
  });
  return {
    base: `https://127.0.0.1:${server.addr.port}`,
    seen,
    close: () => server.shutdown(),
  };
}

/**
 * Serves `body` with Range support, an ETag and a Last-Modified; `cutAt` ends
 * the answer early (a reset); `ifRange: false` ignores `If-Range` (answers
 * the range of this body whatever the client had).
 */
function rangeResponse(
  req: Request,
  body: Uint8Array,
  cutAt?: number,
  options: { ifRange?: boolean } = {},
): Response {
  const etag = etagOf(body);
  let m = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
  const ifRange = req.headers.get("if-range");
  if (m && ifRange !== null && options.ifRange !== false && ifRange !== etag) {
    m = null;
  }
  const start = m ? Number(m[1]) : 0;
  const part = body.subarray(start, cutAt ?? body.length);
  let sent = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(part.slice());
        return;
      }
      if (cutAt !== undefined) c.error(new Error("cut"));
      else c.close();
    },
  });
  const headers: Record<string, string> = {
    "accept-ranges": "bytes",
    "content-length": String(body.length - start),
    etag,
    "last-modified": DATE,
  };
  if (m) {
    headers["content-range"] = `bytes ${start}-${
      body.length - 1
    }/${body.length}`;
  }
  return new Response(stream, { status: m ? 206 : 200, headers });
}

Deno.test("TLS: default verifies, --ca-cert adds trust, --insecure skips verification and warns", async () => {
  await withTemp(async (dir) => {
    await makeCerts(dir);
    const body = randomBytes(1024 * 1024 + 3);
    const server = await startTls(dir, (req) => rangeResponse(req, body));
    const url = `${server.base}/kernel`;
    try {
      await assert.rejects(
        download(url, `${dir}/a`, { ...fast, retries: 0 }),
        bootError(
          ExitCode.Download,
          /Cannot download https:\/\/127\.0\.0\.1:\d+\/kernel: .*(certificate|UnknownIssuer)/i,
        ),
      );
      assert.equal(server.seen.length, 0);

      const trusted = createClient({ caCertFiles: [`${dir}/ca.pem`] })!;
      try {
        const r = await download(url, `${dir}/b`, { client: trusted });
        assert.equal(r.sha256, sha(body));
      } finally {
        trusted.close();
      }

      const [insecure, lines] = await captureLog(() =>
        Promise.resolve(createClient({ insecure: true })!)
      );
      try {
        assert.ok(
          lines.some((l) =>
            /warn: --insecure: TLS certificates are NOT verified/.test(l)
          ),
        );
        const [r, perRequest] = await captureLog(() =>
          download(url, `${dir}/c`, { client: insecure })
        );
        assert.equal(r.sha256, sha(body));
        assert.deepEqual(await Deno.readFile(`${dir}/c`), body);
        assert.ok(
          perRequest.some((l) =>
            /warn: --insecure: not verifying the TLS certificate of https:\/\/127\.0\.0\.1:\d+$/
              .test(l)
          ),
          perRequest.join("\n"),
        );
        assert.equal(server.seen.at(-1)!.headers["authorization"], undefined);
        assert.equal(
          server.seen.at(-1)!.headers["accept-encoding"],
          "identity",
        );
      } finally {
        insecure.close();
      }
      assert.throws(
        () => createClient({ caCertFiles: [`${dir}/ext.cnf`] }),
        bootError(ExitCode.Usage, /holds no PEM certificate/),
      );
      assert.throws(
        () => createClient({ caCertFiles: [`${dir}/missing.pem`] }),
        bootError(ExitCode.Usage, /Cannot read CA certificate/),
      );
      assert.equal(createClient({ systemCerts: [] }), undefined);
    } finally {
      await server.close();
    }
  });
});

Deno.test("TLS --insecure (curl): resume after a cut, status codes, POST form, HEAD, same-origin Authorization", async () => {
  await withTemp(async (dir) => {
    await makeCerts(dir);
    const body = randomBytes(3 * 1024 * 1024);
    const v2 = randomBytes(2 * 1024 * 1024);
    let changed = 0;
    const server = await startTls(dir, (req, i) => {
      const path = new URL(req.url).pathname;
      if (path === "/kernel") {
        return rangeResponse(req, body, i === 0 ? 1_000_000 : undefined);
      }
      if (path === "/changed") {
        // Cut, then a resume answered (If-Range ignored) from another version.
        return changed++ === 0
          ? rangeResponse(req, body, 500_000)
          : rangeResponse(req, v2, undefined, { ifRange: false });
      }
      if (path === "/token") return Response.json({ ok: true });
      if (path === "/redirect") {
        return new Response(null, {
          status: 302,
          headers: { location: "/kernel" },
        });
      }
      return new Response("no such thing\n", { status: 404 });
    });
    const [client] = await captureLog(() =>
      Promise.resolve(createClient({ insecure: true })!)
    );
    try {
      await captureLog(async () => {
        const r = await download(
          `${server.base}/kernel?image_token=SECRET`,
          `${dir}/k`,
          { ...fast, client },
        );
        assert.equal(r.sha256, sha(body));
        assert.equal(r.resumed, true);
        assert.match(server.seen[1].headers["range"] ?? "", /^bytes=\d+-$/);
        assert.equal(server.seen[1].headers["if-range"], etagOf(body));

        // The same splice rules through curl: never v1 + the tail of v2.
        const before = server.seen.length;
        const spliced = await download(
          `${server.base}/changed`,
          `${dir}/changed`,
          { ...fast, client },
        );
        const asked = server.seen.slice(before);
        assert.equal(asked.length, 3);
        assert.equal(asked[1].headers["if-range"], etagOf(body));
        assert.equal(asked[2].headers["range"], undefined);
        assert.equal(spliced.sha256, sha(v2));
        assert.equal(spliced.resumed, false);

        await assert.rejects(
          download(`${server.base}/nope`, `${dir}/n`, { ...fast, client }),
          bootError(ExitCode.Download, /HTTP 404 \(no such thing\)/),
        );

        const post = await request(`${server.base}/token`, {
          method: "POST",
          client,
          body: new URLSearchParams({
            grant_type: "refresh_token",
            refresh_token: 'a"b\\c',
          }),
          authorization: "Bearer abc",
        });
        assert.deepEqual(await post.json(), { ok: true });
        const seenPost = server.seen.at(-1)!;
        assert.equal(
          seenPost.body,
          "grant_type=refresh_token&refresh_token=a%22b%5Cc",
        );
        assert.match(seenPost.headers["content-type"], /x-www-form-urlencoded/);
        assert.equal(seenPost.headers["authorization"], "Bearer abc");

        const head = await request(`${server.base}/token`, {
          method: "HEAD",
          client,
        });
        assert.equal(head.status, 200);
        assert.equal(head.body, null);

        const redirected = await request(`${server.base}/redirect`, {
          client,
          authorization: "Bearer abc",
        });
        assert.equal(redirected.status, 200);
        assert.equal((await redirected.arrayBuffer()).byteLength, body.length);
      });
      assert.throws(
        () => createClient({ insecure: true, curl: "/nonexistent/curl" }),
        bootError(ExitCode.Usage, /--insecure needs curl/),
      );
    } finally {
      client.close();
      await server.close();
    }
  });
});

// ---- 200 MiB with flat memory, in a child process whose peak RSS we read.

const BIG = 200 * 1024 * 1024;
const CHUNK = 1024 * 1024;

function bigChunk(i: number): Uint8Array {
  const out = new Uint8Array(CHUNK);
  const view = new DataView(out.buffer);
  for (let j = 0; j < CHUNK; j += 4) {
    view.setUint32(j, (i * 2654435761 + j) >>> 0);
  }
  return out;
}

async function bigDownloadInChild(
  dir: string,
  tls: boolean,
): Promise<{ hwmKiB: number }> {
  let expected = "";
  {
    const h = createHash("sha256");
    for (let i = 0; i < BIG / CHUNK; i++) h.update(bigChunk(i));
    expected = h.digest("hex");
  }
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    ...(tls
      ? {
        cert: await Deno.readTextFile(`${dir}/leaf.pem`),
        key: await Deno.readTextFile(`${dir}/leaf.key`),
      }
      : {}),
  }, () => {
    let i = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (i === BIG / CHUNK) return c.close();
        c.enqueue(bigChunk(i++));
      },
    }, { highWaterMark: 0 });
    return new Response(stream, {
      headers: { "content-length": String(BIG) },
    });
  });
  const script = `${dir}/child.ts`;
  await Deno.writeTextFile(
    script,
    `import { download } from ${
      JSON.stringify(import.meta.resolve("../../lib/stage/download.ts"))
    };
import { createClient } from ${
      JSON.stringify(import.meta.resolve("../../lib/http/client.ts"))
    };
const client = Deno.args[2] === "insecure" ? createClient({ insecure: true }) : undefined;
const r = await download(Deno.args[0], Deno.args[1], { retries: 0, client });
client?.close();
const hwm = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\\s+(\\d+) kB/)![1];
console.log(JSON.stringify({ ...r, hwmKiB: Number(hwm) }));
`,
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-config",
        script,
        `${tls ? "https" : "http"}://127.0.0.1:${server.addr.port}/big`,
        `${dir}/big`,
        tls ? "insecure" : "",
      ],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const result = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(result.size, BIG);
    assert.equal(result.sha256, expected);
    assert.equal((await Deno.stat(`${dir}/big`)).size, BIG);
    // Deno itself takes ~40-100 MiB; holding the body would take 200+.
    assert.ok(result.hwmKiB < 200 * 1024, `peak RSS ${result.hwmKiB} KiB`);
    return result;
  } finally {
    await server.shutdown();
    await Deno.remove(`${dir}/big`).catch(() => {});
  }
}

Deno.test("download: 200 MiB streams with flat memory (child peak RSS bounded)", async () => {
  await withTemp(async (dir) => {
    const plain = await bigDownloadInChild(dir, false);
    await makeCerts(dir);
    const insecure = await bigDownloadInChild(dir, true);
    console.log(
      `child peak RSS for a 200 MiB download: ${
        (plain.hwmKiB / 1024).toFixed(0)
      } MiB (http), ${
        (insecure.hwmKiB / 1024).toFixed(0)
      } MiB (https --insecure)`,
    );
  });
});

// ---- Progress display.

Deno.test("progress lines: one line per 10 % or per 10 s, then a summary", () => {
  let now = 0;
  const lines: string[] = [];
  const progress = createProgress("lines", {
    now: () => now,
    line: (l) => lines.push(l),
    isTerminal: false,
  });
  const t = progress.track("kernel");
  const total = 1000 * 1024;
  for (let b = 0; b <= total; b += 25 * 1024) {
    now += 100;
    t.update(b, total);
  }
  t.finish({ size: total, sha256: "ab".repeat(32) });
  assert.equal(lines[0], "kernel: downloading");
  const pcts = lines.slice(1, -1).map((l) => Number(/\((\d+)%\)/.exec(l)![1]));
  assert.deepEqual(pcts, [10, 20, 30, 40, 50, 60, 70, 80, 90]);
  assert.match(
    lines.at(-1)!,
    /^kernel: 1000\.0 KiB in 4\.1 s \(243\.9 KiB\/s\), sha256 (ab){32}$/,
  );

  // Unknown total: one line per 10 s.
  lines.length = 0;
  const u = progress.track("initrd");
  for (let s = 1; s <= 35; s++) {
    now += 1000;
    u.update(s * 1024);
  }
  assert.equal(lines.filter((l) => /^initrd: \d/.test(l)).length, 3);
  assert.doesNotMatch(lines.join("\n"), /%/);
});

Deno.test("progress tty: a redrawn bar per artifact with rate and ETA; none: silent", () => {
  let now = 0;
  let out = "";
  const lines: string[] = [];
  const progress = createProgress("auto", {
    now: () => now,
    write: (s) => (out += s),
    line: (l) => lines.push(l),
    isTerminal: true,
  });
  const k = progress.track("kernel");
  const i = progress.track("initrd 1/1 (initrd)");
  now = 2000;
  k.update(5 * 1048576, 10 * 1048576);
  i.update(1048576); // within 100 ms of the last redraw: not drawn yet
  assert.doesNotMatch(out, /1\.0 MiB/);
  now = 2200;
  i.update(1048576);
  assert.ok(out.includes("\x1b[2A"), "moves up over the two bars to redraw");
  assert.match(
    out,
    /kernel {14}\[#+-+\] {2}50% 5\.0 MiB\/10\.0 MiB 2\.5 MiB\/s ETA 00:02/,
  );
  const frame = out.slice(out.lastIndexOf("\x1b[2A"));
  const barWidths = [...frame.matchAll(/\[[#\- ]+\]/g)].map((m) => m[0].length);
  assert.equal(barWidths.length, 2);
  assert.equal(new Set(barWidths).size, 1, "all gauges have one width");
  assert.match(
    out,
    /initrd 1\/1 \(initrd\) \[ +\] +1\.0 MiB 465\.5 KiB\/s ETA --:--/,
  );
  out = "";
  k.finish({ size: 10 * 1048576, sha256: "cd".repeat(32) });
  // The block is erased, the summary logged, the running bar redrawn alone.
  assert.ok(out.startsWith("\x1b[2A\r\x1b[J"), JSON.stringify(out));
  assert.doesNotMatch(out, /kernel/);
  assert.match(out, /initrd 1\/1 \(initrd\)/);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^kernel: 10\.0 MiB in 2\.2 s \(4\.5 MiB\/s\), sha256 (cd){32}$/,
  );
  out = "";
  i.fail();
  assert.equal(out, "\x1b[1A\r\x1b[J"); // erased, nothing left to draw
  // Every bar line fits the terminal and bars have the same width.
  for (const l of out.split("\n")) assert.ok(l.length < 80);

  const silent: string[] = [];
  const none = createProgress("none", {
    write: (s) => silent.push(s),
    line: (l) => silent.push(l),
  });
  const n = none.track("kernel");
  n.update(1, 2);
  n.finish({ size: 2, sha256: "00" });
  assert.deepEqual(silent, []);
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
});

Deno.test("progress tty: a log line written while bars are shown goes above them", () => {
  let out = "";
  const logged: string[] = [];
  configureLog({ sink: (l) => logged.push(l) });
  try {
    const progress = createProgress("tty", {
      now: () => 0,
      write: (s) => (out += s),
      line: (l) => log.info(l),
      isTerminal: true,
    });
    const k = progress.track("kernel");
    out = "";
    log.warn("retry 1 in 500 ms");
    // Erase the bar, the line is written, the bar comes back below it.
    assert.ok(out.startsWith("\x1b[1A\r\x1b[J"), JSON.stringify(out));
    assert.match(out, /kernel/);
    assert.deepEqual(logged, ["assisted-bootloader: warn: retry 1 in 500 ms"]);
    k.finish({ size: 1, sha256: "ab".repeat(32) });
    out = "";
    log.info("after the bars");
    assert.equal(out, "", "no wrapper once every bar is gone");
  } finally {
    configureLog({
      sink: (l) => Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")),
    });
  }
});

Deno.test("download: 401 and 403 are not retried (a signed URL that expired is the caller's to renew)", async () => {
  for (const status of [401, 403]) {
    const server = startRaw((_req, conn) =>
      respond(conn, status, { "content-length": 7 }, enc.encode("expired"))
    );
    try {
      await withTemp(async (dir) => {
        await assert.rejects(
          download(`${server.url}/i?image_token=t`, `${dir}/x`, {
            ...fast,
            retries: 5,
          }),
          (err: unknown) => {
            bootError(ExitCode.Download, new RegExp(`HTTP ${status}`))(err);
            const cause = (err as BootError).cause;
            assert.ok(cause instanceof HttpStatusError, String(cause));
            assert.equal(cause.status, status);
            return true;
          },
        );
        assert.equal(server.requests.length, 1, `${status}: one request`);
      });
    } finally {
      await server.close();
    }
  }
});
