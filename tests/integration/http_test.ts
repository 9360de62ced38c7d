import assert from "node:assert/strict";
import {
  HttpStatusError,
  isTransient,
  NetworkError,
  parseRetryAfter,
  request,
} from "../../lib/http/request.ts";
import { backoffDelay, withRetries } from "../../lib/http/retry.ts";
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
