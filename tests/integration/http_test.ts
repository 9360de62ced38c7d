import assert from "node:assert/strict";
import {
  HttpStatusError,
  isTransient,
  NetworkError,
  PolicyError,
  readAtMost,
  readErrorBody,
  request,
} from "../../lib/http/request.ts";
import { backoffDelay, sleep, withRetries } from "../../lib/http/retry.ts";
import { parseRetryAfter } from "../../lib/http/retry_after.ts";
import { errorText } from "../../lib/errors.ts";
import { BusyBudget } from "../../lib/http/busy.ts";
import { addSecret, configureLog, log, redact } from "../../lib/log.ts";

Deno.test("request: Authorization stays on its origin across redirects, and redirects are capped", async () => {
  const seen: { port: number; path: string; auth: string | null }[] = [];
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      seen.push({
        port: 2,
        path: new URL(req.url).pathname,
        auth: req.headers.get("authorization"),
      });
      return new Response("elsewhere");
    },
  );
  const api = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const path = new URL(req.url).pathname;
      seen.push({ port: 1, path, auth: req.headers.get("authorization") });
      if (path === "/same") {
        return Response.redirect(
          new URL("/final", req.url),
          302,
        );
      }
      if (path === "/away") {
        return Response.redirect(
          `http://127.0.0.1:${other.addr.port}/x`,
          307,
        );
      }
      if (path === "/loop") {
        return Response.redirect(
          new URL("/loop", req.url),
          302,
        );
      }
      return new Response("ok");
    },
  );
  const base = `http://127.0.0.1:${api.addr.port}`;
  try {
    const same = await request(`${base}/same`, {
      authorization: "Bearer secret-token",
    });
    assert.equal(await same.text(), "ok");
    const away = await request(`${base}/away`, {
      authorization: "Bearer secret-token",
    });
    assert.equal(await away.text(), "elsewhere");
    assert.deepEqual(seen, [
      { port: 1, path: "/same", auth: "Bearer secret-token" },
      { port: 1, path: "/final", auth: "Bearer secret-token" },
      { port: 1, path: "/away", auth: "Bearer secret-token" },
      { port: 2, path: "/x", auth: null },
    ]);
    await assert.rejects(
      request(`${base}/loop`),
      (err: unknown) => {
        assert.ok(err instanceof NetworkError);
        assert.match(err.message, /more than 5 redirects/);
        return true;
      },
    );
  } finally {
    await api.shutdown();
    await other.shutdown();
  }
});

Deno.test("request: a connection refused is a NetworkError naming the URL", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(
    request(`http://127.0.0.1:${port}/x?api_key=abc`, { timeoutMs: 2000 }),
    (err: unknown) => {
      assert.ok(err instanceof NetworkError);
      assert.match(
        err.message,
        new RegExp(`^http://127\\.0\\.0\\.1:${port}/x\\?api_key=REDACTED: `),
      );
      return true;
    },
  );
});

Deno.test("retries: exponential backoff with jitter, capped; Retry-After wins; non-transient errors stop", async () => {
  const fixed = { random: () => 0.5, baseDelayMs: 100, maxDelayMs: 1000 };
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, fixed)), [
    75,
    150,
    300,
    600,
    750,
    750,
  ]);
  assert.equal(backoffDelay(1, { ...fixed, random: () => 0 }), 50);
  assert.equal(backoffDelay(1, { ...fixed, random: () => 0.999999 }), 100);
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(
    parseRetryAfter(new Date(Date.now() + 5000).toUTCString(), Date.now()) !==
      undefined,
    true,
  );
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.ok(isTransient(new HttpStatusError(503, "u")));
  assert.ok(isTransient(new HttpStatusError(429, "u")));
  assert.ok(!isTransient(new HttpStatusError(404, "u")));
  assert.ok(isTransient(new NetworkError("x", "u")));

  const delays: number[] = [];
  let calls = 0;
  const value = await withRetries(() => {
    calls++;
    if (calls === 1) {
      return Promise.reject(new HttpStatusError(429, "u", "", 20));
    }
    if (calls === 2) return Promise.reject(new NetworkError("reset", "u"));
    return Promise.resolve("done");
  }, {
    baseDelayMs: 10,
    random: () => 0,
    busy: new BusyBudget(0), // a 429 counts as a failure (busy_test.ts waits)
    onRetry: (_e, _n, ms) => delays.push(ms),
  });
  assert.equal(value, "done");
  assert.deepEqual(delays, [20, 10]);

  calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      return Promise.reject(new HttpStatusError(404, "u"));
    }, { baseDelayMs: 1 }),
    HttpStatusError,
  );
  assert.equal(calls, 1, "a 404 is not retried");
  calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      return Promise.reject(new HttpStatusError(500, "u"));
    }, { retries: 2, baseDelayMs: 1 }),
    HttpStatusError,
  );
  assert.equal(calls, 3, "1 try + 2 retries");
});

Deno.test("log: tokens, api_key, image_token and registered secrets never reach a log line", () => {
  const lines: string[] = [];
  configureLog({ sink: (l) => lines.push(l), level: "debug" });
  try {
    addSecret("s3cr3t-offline-token");
    log.info(
      "GET https://h/pxe-initrd?api_key=eyJ.a.b&arch=x86_64&image_token=JWT123&version=4.18",
    );
    log.warn(
      'Authorization: Bearer abc.def.ghi and {"access_token":"xyz","expires_in":900}',
    );
    log.error("the file said s3cr3t-offline-token\nsecond line");
    log.debug("debug shown at debug level");
    assert.deepEqual(lines, [
      "assisted-bootloader: GET https://h/pxe-initrd?api_key=REDACTED&arch=x86_64&image_token=REDACTED&version=4.18",
      'assisted-bootloader: warn: Authorization: Bearer REDACTED and {"access_token":"REDACTED","expires_in":900}',
      "assisted-bootloader: error: the file said REDACTED\\x0asecond line",
      "assisted-bootloader: debug: debug shown at debug level",
    ]);
    configureLog({ level: "info" });
    log.debug("hidden");
    assert.equal(lines.length, 4);
    assert.equal(
      redact("chain http://h/s?token=abc&x=1"),
      "chain http://h/s?token=REDACTED&x=1",
    );
  } finally {
    configureLog({ level: "info", sink: (l) => console.error(l) });
  }
});

Deno.test("withRetries: an HTTP status without Retry-After waits the computed backoff, retries counted from 1; sleep waits its time", async () => {
  const seen: [number, number][] = [];
  let calls = 0;
  await assert.rejects(
    withRetries(() => {
      calls++;
      return Promise.reject(new HttpStatusError(500, "u"));
    }, {
      retries: 2,
      baseDelayMs: 10,
      random: () => 0,
      onRetry: (_e, attempt, ms) => seen.push([attempt, ms]),
    }),
    HttpStatusError,
  );
  assert.equal(calls, 3);
  assert.deepEqual(seen, [[1, 5], [2, 10]]);
  for (const signal of [undefined, new AbortController().signal]) {
    const started = performance.now();
    await sleep(120, signal);
    const waited = performance.now() - started;
    assert.ok(waited >= 115, `sleep(120) returned after ${waited} ms`);
  }
});

Deno.test("request: five redirects are followed, a sixth is refused without being requested", async () => {
  // /r/N redirects to /r/N-1; /r/0 answers.
  const paths: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const path = new URL(req.url).pathname;
      paths.push(path);
      const n = Number(path.split("/")[2]);
      if (n === 0) return new Response("end");
      return Response.redirect(new URL(`/r/${n - 1}`, req.url), 302);
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const res = await request(`${base}/r/5`);
    assert.equal(await res.text(), "end");
    assert.equal(paths.length, 6, "the first request and five hops");
    paths.length = 0;
    await assert.rejects(request(`${base}/r/6`), (err: unknown) => {
      assert.ok(err instanceof PolicyError, String(err));
      assert.match(err.message, /\/r\/6: more than 5 redirects, refused$/);
      return true;
    });
    assert.deepEqual(paths, ["/r/6", "/r/5", "/r/4", "/r/3", "/r/2", "/r/1"]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("request: a URL that does not parse or is not fetched, a redirect without Location, an abort and a timeout are named", async () => {
  await assert.rejects(request("not a url"), (err: unknown) => {
    assert.ok(err instanceof PolicyError, String(err));
    assert.equal(err.message, "not a url: not a valid URL");
    return true;
  });
  await assert.rejects(request("ftp://h/x"), (err: unknown) => {
    assert.ok(err instanceof PolicyError, String(err));
    assert.equal(
      err.message,
      'ftp://h/x: the scheme "ftp" is not fetched (http, https or file only)',
    );
    return true;
  });
  const { promise: stop, resolve: release } = Promise.withResolvers<void>();
  const paths: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      paths.push(path);
      if (path === "/stall") await stop;
      return new Response(null, { status: 302 });
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    // A 302 without Location is an answer, not a hop to "null".
    await assert.rejects(request(`${base}/nolocation`), (err: unknown) => {
      assert.ok(err instanceof HttpStatusError, String(err));
      assert.equal(err.status, 302);
      assert.equal(err.body, "redirect without Location");
      return true;
    });
    assert.deepEqual(paths, ["/nolocation"]);
    // The caller's abort is its reason, not a network error to retry.
    const abort = new AbortController();
    setTimeout(() => abort.abort(new Error("stopped by the caller")), 50);
    await assert.rejects(
      request(`${base}/stall`, { signal: abort.signal }),
      (err: unknown) => {
        assert.ok(!(err instanceof NetworkError), String(err));
        assert.match(String(err), /stopped by the caller/);
        return true;
      },
    );
    await assert.rejects(
      request(`${base}/stall`, { timeoutMs: 200 }),
      (err: unknown) => {
        assert.ok(err instanceof NetworkError, String(err));
        assert.match(err.message, /\/stall: no answer within 0\.2 s$/);
        return true;
      },
    );
  } finally {
    release();
    await server.shutdown();
  }
});

Deno.test("readAtMost, readErrorBody, parseRetryAfter, isTransient, sleep and errorText at their edges", async () => {
  assert.deepEqual(await readAtMost(null, 10), new Uint8Array(0));
  const chunks = (parts: string[]) =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of parts) c.enqueue(new TextEncoder().encode(p));
        c.close();
      },
    });
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.equal(
    text(await readAtMost(chunks(["ab", "cd", "ef"]), 100)),
    "abcdef",
  );
  assert.equal(text(await readAtMost(chunks(["ab", "cd", "ef"]), 3)), "abc");
  const broken = new Response(
    new ReadableStream({ pull: (c) => c.error(new Error("reset")) }),
  );
  assert.equal(await readErrorBody(broken), "");
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(parseRetryAfter(" 3 "), 3000);
  assert.equal(parseRetryAfter("12"), 12_000);
  assert.equal(parseRetryAfter("3x"), undefined);
  assert.equal(parseRetryAfter("x3"), undefined);
  assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:05 GMT", now), 5000);
  assert.equal(parseRetryAfter("Tue, 31 Dec 2024 23:59:00 GMT", now), 0);
  assert.ok(!isTransient(new TypeError("a bug")));
  assert.ok(!isTransient("a string"));
  // sleep: an aborted signal ends it at once, before or during the wait.
  const started = performance.now();
  await sleep(10_000, AbortSignal.abort());
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 20);
  await sleep(10_000, abort.signal);
  await sleep(0);
  assert.ok(performance.now() - started < 5000, "sleep ended early");
  assert.equal(errorText(new Error("plain")), "plain");
  assert.equal(
    errorText(new Error("outer", { cause: new Error("inner") })),
    "outer: inner",
  );
  assert.equal(
    errorText("thrown text\nsecond line"),
    "thrown text\nsecond line",
  );
  assert.equal(errorText(new Error("first\nsecond")), "first");
});
