/**
 * The request policy over its transports: `request` sends every hop through
 * the client it is given (a fake transport here, no network), the client's
 * `insecure` alone allows https → http, and each `--insecure` client runs
 * its own curl (fake programs that never connect), with nothing shared
 * between clients.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  type HttpClient,
  NetworkError,
  PolicyError,
  request,
  type SendInit,
} from "../../lib/http/request.ts";
import { createClient } from "../../lib/http/client.ts";
import { fetchTransport } from "../../lib/http/fetch_transport.ts";
import { captureLog, makeTestCerts, withTemp } from "../test_util.ts";

/** A transport that answers from a table and records what it was sent. */
function fakeClient(
  answers: Record<string, () => Response>,
  insecure = false,
): HttpClient & { sent: { url: string; init: SendInit }[] } {
  const sent: { url: string; init: SendInit }[] = [];
  return {
    insecure,
    sent,
    send(url, init) {
      sent.push({ url, init });
      const answer = answers[url];
      return answer
        ? Promise.resolve(answer())
        : Promise.reject(new TypeError(`connection refused: ${url}`));
    },
    close() {},
    [Symbol.dispose]() {},
  };
}

const redirect = (location: string) => () =>
  new Response(null, { status: 302, headers: { location } });

Deno.test("request: every hop goes through the client's transport, under the same policy", async () => {
  const answers = {
    "https://a.test/start": redirect("https://b.test/next"),
    "https://b.test/next": redirect("http://c.test/down"),
    "http://c.test/down": () => new Response("plain"),
  };
  const strict = fakeClient(answers);
  await assert.rejects(
    request("https://a.test/start", {
      client: strict,
      authorization: "Bearer t0ken",
    }),
    (err: unknown) =>
      err instanceof PolicyError &&
      /redirects from https to plain http/.test(err.message),
  );
  assert.deepEqual(strict.sent.map((s) => s.url), [
    "https://a.test/start",
    "https://b.test/next",
  ]);
  // The Authorization header stays on the first origin, whatever the transport.
  assert.equal(
    strict.sent[0].init.headers.get("authorization"),
    "Bearer t0ken",
  );
  assert.equal(strict.sent[1].init.headers.get("authorization"), null);

  const insecure = fakeClient(answers, true);
  const response = await request("https://a.test/start", { client: insecure });
  assert.equal(await response.text(), "plain");
  assert.deepEqual(insecure.sent.map((s) => s.url), [
    "https://a.test/start",
    "https://b.test/next",
    "http://c.test/down",
  ]);
  assert.ok(insecure.sent.every((s) => s.init.method === "GET"));
});

Deno.test("request: a transport failure is a NetworkError naming the URL", async () => {
  await assert.rejects(
    request("https://nowhere.test/x", { client: fakeClient({}) }),
    (err: unknown) =>
      err instanceof NetworkError && err.name === "NoAnswerError" &&
      /nowhere\.test\/x: connection refused/.test(err.message),
  );
});

/**
 * A fake curl: answers `--version`, and any request with `body` as curl
 * does (the head on stderr, the body on stdout, then its `--write-out` line).
 */
async function fakeCurl(dir: string, name: string, body: string) {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh
[ "$1" = --version ] && exit 0
cat >/dev/null
printf 'HTTP/1.1 200 OK\\r\\ncontent-length: ${body.length}\\r\\n\\r\\n' >&2
printf '${body}'
printf '\\n@@assisted-bootloader-curl 200 ${body.length}\\n' >&2
`,
    { mode: 0o755 },
  );
  return path;
}

Deno.test("createClient --insecure: each client runs its own curl for https, nothing shared between clients", async () => {
  await withTemp(async (dir) => {
    const [[one, two], lines] = await captureLog(async () => [
      createClient({ insecure: true, curl: await fakeCurl(dir, "one", "1") })!,
      createClient({ insecure: true, curl: await fakeCurl(dir, "two", "22") })!,
    ]);
    try {
      assert.equal(
        lines.filter((l) => /TLS certificates are NOT verified/.test(l)).length,
        2,
      );
      assert.equal(one.insecure, true);
      const url = "https://127.0.0.1:9/kernel";
      const [answers, perRequest] = await captureLog(async () => [
        await (await request(url, { client: one })).text(),
        await (await request(url, { client: two })).text(),
        await (await request(url, { client: one })).text(),
      ]);
      assert.deepEqual(answers, ["1", "22", "1"]);
      assert.equal(
        perRequest.filter((l) =>
          /--insecure: not verifying the TLS certificate of https:\/\/127\.0\.0\.1:9$/
            .test(l)
        ).length,
        3,
      );
      // Plain http never goes to curl: the fetch transport answers (here:
      // nothing listens on port 9).
      await assert.rejects(
        request("http://127.0.0.1:9/kernel", { client: one, timeoutMs: 2000 }),
        (err: unknown) => err instanceof NetworkError,
      );
    } finally {
      one.close();
      two.close();
    }
    const verifying = createClient({ systemCerts: [], caCerts: [] });
    assert.equal(verifying, undefined);
    assert.throws(
      () => createClient({ insecure: true, curl: `${dir}/missing` }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Usage &&
        /--insecure needs curl/.test(err.message) &&
        err.cause instanceof Error,
    );
  });
});

Deno.test("createClient: a CA file alone needs no curl", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    createClient({ caCertFiles: [`${dir}/ca.pem`], curl: `${dir}/no-curl` })!
      .close();
  });
});

Deno.test("fetchTransport: trusts the CA certificates it is given and no other, never allows https → http, closes its own client", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const server = Deno.serve(
      {
        hostname: "127.0.0.1",
        port: 0,
        onListen() {},
        cert: await Deno.readTextFile(`${dir}/leaf.pem`),
        key: await Deno.readTextFile(`${dir}/leaf.key`),
      },
      (req) =>
        new URL(req.url).pathname === "/down"
          ? Response.redirect("http://127.0.0.1:9/x", 302)
          : new Response("ok"),
    );
    const base = `https://127.0.0.1:${server.addr.port}`;
    const trusting = fetchTransport({
      caCerts: [await Deno.readTextFile(`${dir}/ca.pem`)],
    });
    const builtIn = fetchTransport();
    try {
      assert.equal(trusting.insecure, false);
      const res = await request(`${base}/ok`, { client: trusting });
      assert.equal(await res.text(), "ok");
      await assert.rejects(
        request(`${base}/down`, { client: trusting }),
        (err: unknown) =>
          err instanceof PolicyError &&
          /from https to plain http/.test(err.message),
      );
      await assert.rejects(
        request(`${base}/ok`, { client: builtIn, timeoutMs: 5000 }),
        (err: unknown) => err instanceof NetworkError,
      );
      // Closed, the CA's own client is gone: nothing more goes through it.
      trusting.close();
      await assert.rejects(request(`${base}/ok`, { client: trusting }));
    } finally {
      builtIn.close();
      await server.shutdown();
    }
  });
});

Deno.test("createClient --insecure with a CA file: closing the client closes its plain-http transport too", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response("plain"),
    );
    const url = `http://127.0.0.1:${server.addr.port}/x`;
    try {
      const curl = await fakeCurl(dir, "curl", "tls");
      const [client] = await captureLog(() =>
        Promise.resolve(
          createClient({
            insecure: true,
            curl,
            caCertFiles: [`${dir}/ca.pem`],
          })!,
        )
      );
      assert.equal(await (await request(url, { client })).text(), "plain");
      client.close();
      await assert.rejects(request(url, { client }));
    } finally {
      await server.shutdown();
    }
  });
});
