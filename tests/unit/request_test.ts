/**
 * The HTTP policy (lib/http/request.ts) against a scripted transport: the
 * framing checks, the URL an answer carries, how a redirect changes the
 * method, what a redirect may not carry, the timeout's mark on the error,
 * the bounded body reads, and the error classes themselves. http_test and
 * redirect_test cover the same policy through real servers.
 */

import assert from "node:assert/strict";
import { redactUrl } from "../../lib/log.ts";
import {
  framingProblem,
  type HttpClient,
  HttpStatusError,
  isTransient,
  NetworkError,
  NoAnswerError,
  PolicyError,
  readAtMost,
  request,
  type SendInit,
} from "../../lib/http/request.ts";
import { withTemp } from "../test_util.ts";

interface Sent {
  url: string;
  method: string;
  body: boolean;
}

/** A transport that answers from `answer` and records what it was sent. */
function scripted(
  answer: (
    url: string,
    init: SendInit,
    n: number,
  ) => Response | Promise<Response>,
): { client: HttpClient; sent: Sent[] } {
  const sent: Sent[] = [];
  const client: HttpClient = {
    insecure: false,
    send: (url, init) => {
      sent.push({
        url,
        method: init.method,
        body: init.body !== undefined && init.body !== null,
      });
      return Promise.resolve(answer(url, init, sent.length - 1));
    },
    close: () => {},
    [Symbol.dispose]: () => {},
  };
  return { client, sent };
}

const redirect = (status: number, location: string) =>
  new Response(null, { status, headers: { location } });

Deno.test("framingProblem: one Content-Length of digits, the same number repeated, or none; never beside Transfer-Encoding", () => {
  const problem = (init: Record<string, string>) =>
    framingProblem(new Headers(init));
  assert.equal(problem({}), undefined);
  assert.equal(problem({ "content-length": "10" }), undefined);
  assert.equal(problem({ "content-length": "10, 10,10" }), undefined);
  assert.equal(problem({ "transfer-encoding": "chunked" }), undefined);
  for (const bad of ["12abc", "abc12", "-1", "1e3", "0x10", "10, x", ""]) {
    assert.equal(
      problem({ "content-length": bad }),
      `the answer has an invalid Content-Length (${JSON.stringify(bad)})`,
      bad,
    );
  }
  const long = "9".repeat(100) + "x";
  assert.equal(
    problem({ "content-length": long }),
    `the answer has an invalid Content-Length (${
      JSON.stringify(long.slice(0, 80))
    })`,
  );
  assert.equal(
    problem({ "content-length": "10, 12" }),
    "the answer has conflicting Content-Length headers (10, 12)",
  );
  assert.equal(
    problem({ "content-length": "1, 2, 3, 4, 5, 6" }),
    "the answer has conflicting Content-Length headers (1, 2, 3, 4)",
  );
  assert.equal(
    problem({ "content-length": "10", "transfer-encoding": "chunked" }),
    "the answer has both Transfer-Encoding and Content-Length",
  );
});

Deno.test("request: an answer whose framing cannot be trusted is refused and its body cancelled; a good one carries the URL asked for", async () => {
  let cancelled = false;
  const { client } = scripted((_url, _init, n) =>
    n === 0
      ? new Response(
        new ReadableStream({ cancel: () => void (cancelled = true) }),
        { headers: { "content-length": "10, 12" } },
      )
      : new Response(null, { headers: { "content-length": "x" } })
  );
  await assert.rejects(
    request("http://h/k", { client }),
    (err) =>
      err instanceof PolicyError &&
      err.message ===
        "http://h/k: the answer has conflicting Content-Length headers (10, 12), refused",
  );
  assert.ok(cancelled, "the body is cancelled");
  // No body at all: refused the same way.
  await assert.rejects(
    request("http://h/k", { client }),
    (err) =>
      err instanceof PolicyError &&
      /invalid Content-Length \("x"\), refused$/.test(err.message),
  );
  const good = scripted(() => new Response("ok"));
  const response = await request("http://h/k?x=1", { client: good.client });
  // A transport's Response may carry no URL (or another): the one asked for.
  assert.equal(response.url, "http://h/k?x=1");
  assert.equal(await response.text(), "ok");
});

Deno.test("request: a redirect changes POST to GET for 301, 302 and 303, keeps it for 307 and 308 without a body, refuses to resend a body", async () => {
  for (
    const [status, method] of [[301, "GET"], [302, "GET"], [303, "GET"], [
      307,
      "POST",
    ], [308, "POST"]] as const
  ) {
    const { client, sent } = scripted((_url, _init, n) =>
      n === 0 ? redirect(status, "/next") : new Response("ok")
    );
    await request("http://h/first", { client, method: "POST" });
    assert.deepEqual(
      sent.map((s) => `${s.method} ${s.url} ${s.body}`),
      ["POST http://h/first false", `${method} http://h/next false`],
      String(status),
    );
  }
  // GET stays GET after a 303.
  const get = scripted((_url, _init, n) =>
    n === 0 ? redirect(303, "/next") : new Response("ok")
  );
  await request("http://h/first", { client: get.client });
  assert.deepEqual(get.sent.map((s) => s.method), ["GET", "GET"]);
  // A body: dropped with the switch to GET, never sent again by 307/308.
  for (const status of [302, 303]) {
    const { client, sent } = scripted((_url, _init, n) =>
      n === 0 ? redirect(status, "/next") : new Response("ok")
    );
    await request("http://h/first", { client, method: "POST", body: "x=1" });
    assert.deepEqual(
      sent.map((s) => `${s.method} ${s.body}`),
      ["POST true", "GET false"],
    );
  }
  for (const status of [307, 308]) {
    const { client, sent } = scripted(() => redirect(status, "/next"));
    await assert.rejects(
      request("http://h/first", { client, method: "POST", body: "x=1" }),
      (err) =>
        err instanceof PolicyError &&
        err.message ===
          `http://h/first: HTTP ${status} would send the request body again to http://h/next, not followed`,
    );
    assert.equal(sent.length, 1);
  }
});

Deno.test("request: a redirect to an URL with a user name or a password alone is refused", async () => {
  for (const location of ["http://user@h/next", "http://:secret@h/next"]) {
    const { client, sent } = scripted(() => redirect(302, location));
    await assert.rejects(
      request("http://h/first", { client }),
      (err) =>
        err instanceof PolicyError &&
        /redirects to an URL with a user:password@ .*refused \(a redirect never adds credentials\)$/
          .test(err.message),
      location,
    );
    assert.equal(sent.length, 1);
  }
});

Deno.test("request: no headers within the timeout is a NoAnswerError marked timed out; a refused connection is not marked", async () => {
  const { client } = scripted((_url, init) =>
    new Promise<Response>((_resolve, reject) => {
      init.signal.addEventListener("abort", () => reject(init.signal.reason));
    })
  );
  await assert.rejects(
    request("http://h/slow", { client, timeoutMs: 100 }),
    (err) =>
      err instanceof NoAnswerError && err.timedOut === true &&
      err.message === "http://h/slow: no answer within 0.1 s",
  );
  const refused = scripted(() =>
    Promise.reject(new TypeError("error sending request: Connection refused"))
  );
  await assert.rejects(
    request("http://h/down", { client: refused.client }),
    (err) => err instanceof NoAnswerError && err.timedOut === false,
  );
});

Deno.test("request: a file: URL naming a device is refused before anything opens it; an http URL is never looked up on disk", async () => {
  await assert.rejects(
    request("file:///dev/null"),
    (err) =>
      err instanceof PolicyError &&
      err.message.startsWith("file:///dev/null: "),
  );
  const { client } = scripted(() => new Response("ok"));
  const response = await request("http://h/dev/null", { client });
  assert.equal(await response.text(), "ok");
});

Deno.test("request: a file: URL whose file another user can change is refused (never retried), the path decoded from the URL; the same file 0644 is read", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const path = `${dir}/a kernel`;
    const url = `file://${dir}/a%20kernel`;
    await Deno.writeTextFile(path, "kernel bytes");
    await Deno.chmod(path, 0o646);
    await assert.rejects(request(url), (err) => {
      assert.ok(err instanceof PolicyError, String(err));
      assert.ok(!isTransient(err));
      assert.equal(
        err.message,
        `${url}: it is writable by other users (mode 0646): whoever can change it decides what this machine boots (chmod go-w ${path})`,
      );
      return true;
    });
    await Deno.chmod(path, 0o644);
    assert.equal(await (await request(url)).text(), "kernel bytes");
    await Deno.chmod(dir, 0o777);
    await assert.rejects(
      request(url),
      (err) =>
        err instanceof PolicyError &&
        err.message.startsWith(
          `${url}: it is reached through ${dir}, writable by other users without the sticky bit (mode 0777)`,
        ),
    );
    await Deno.chmod(dir, 0o700);
  });
});

Deno.test("readAtMost: stops at the limit without waiting for more, cuts a longer chunk, gives back short bodies whole", async () => {
  // Exactly `limit` bytes, then a body that never ends: read no further.
  const endless = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array([1, 2, 3]));
    },
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    readAtMost(endless, 3),
    new Promise<"waited">((resolve) => {
      timer = setTimeout(() => resolve("waited"), 1000);
    }),
  ]);
  clearTimeout(timer);
  assert.deepEqual(got, new Uint8Array([1, 2, 3]));
  const chunks = (parts: number[][]) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(new Uint8Array(p));
        controller.close();
      },
    });
  assert.deepEqual(
    await readAtMost(chunks([[1, 2], [3, 4, 5], [6]]), 4),
    new Uint8Array([1, 2, 3, 4]),
  );
  assert.deepEqual(
    await readAtMost(chunks([[1], [2]]), 10),
    new Uint8Array([1, 2]),
  );
  assert.deepEqual(await readAtMost(null, 10), new Uint8Array(0));
});

Deno.test("errors: names, the reason without the URL, defaults; only the policy's own errors count as transient", () => {
  const status = new HttpStatusError(503, "http://h/k");
  assert.equal(status.name, "HttpStatusError");
  assert.equal(status.body, "");
  // Messages start with the redacted URL: the reason is what follows it.
  const signed = "http://h/k?api_key=secret";
  const network = new NetworkError(`${redactUrl(signed)}: cut`, signed);
  assert.equal(network.name, "NetworkError");
  assert.equal(network.reason, "cut");
  assert.equal(
    new NetworkError("http://h/k: connection lost", "http://h/k").reason,
    "connection lost",
  );
  // A message that does not start with the URL is its own reason.
  assert.equal(
    new NetworkError("connection lost at http://h/k: ", "http://h/k").reason,
    "connection lost at http://h/k: ",
  );
  assert.equal(
    new PolicyError("http://h/k: refused", "http://h/k").name,
    "PolicyError",
  );
  const noAnswer = new NoAnswerError("http://h/k: down", "http://h/k");
  assert.equal(noAnswer.name, "NoAnswerError");
  assert.equal(noAnswer.timedOut, false);
  assert.equal(
    new NoAnswerError("x", "http://h/k", { timedOut: true }).timedOut,
    true,
  );
  assert.equal(isTransient(status), true);
  assert.equal(isTransient(network), true);
  assert.equal(isTransient(new HttpStatusError(429, "u")), true);
  assert.equal(isTransient(new HttpStatusError(404, "u")), false);
  // Something else with a status field is not an answer of the policy's.
  assert.equal(
    isTransient(Object.assign(new Error("x"), { status: 503 })),
    false,
  );
});
