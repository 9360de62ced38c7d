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
import { sleep } from "../../lib/http/retry.ts";
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

/**
 * A stand-in for curl that records each call (arguments, the config read from
 * stdin, its pid) under `dir/calls/N` and answers by the URL's last segment.
 */
const FAKE_CURL = `#!/bin/bash
rec="$(dirname "$0")/calls/$(ls "$(dirname "$0")/calls" | wc -l)"
mkdir -p "$rec"
printf '%s\\n' "$@" > "$rec/args"
cat > "$rec/config"
echo $$ > "$rec/pid"
url=$(sed -n 's/^url = "\\(.*\\)"$/\\1/p' "$rec/config")
case "\${url##*/}" in
  ok) printf 'HTTP/1.1 100 Continue\\r\\n\\r\\nHTTP/1.1 200 OK\\r\\nContent-Type:  text/plain \\r\\nX-Two: a:b\\r\\nX-Sp : v\\r\\nno colon\\r\\n:nameless\\r\\n\\r\\nhello' ;;
  garbage) printf 'garbage\\r\\n\\r\\n' ;;
  big) printf 'HTTP/1.1 200 OK\\r\\nX-Big: '; head -c 300000 /dev/zero | tr '\\0' a; printf '\\r\\n\\r\\n' ;;
  fail) echo "curl: (6) first line" >&2; echo "curl: (60) SSL certificate problem" >&2; exit 60 ;;
  silent) exit 7 ;;
  cut) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\npartial'; echo "curl: (18) transfer closed" >&2; exit 18 ;;
  nocontent) printf 'HTTP/1.1 204 No Content\\r\\n\\r\\n' ;;
  notmodified) printf 'HTTP/1.1 304 Not Modified\\r\\n\\r\\n' ;;
  blank) printf '\\r\\n\\r\\nHTTP/1.1 200 OK\\r\\n\\r\\n' ;;
  glued) printf 'xHTTP/1.1 200 OK\\r\\n\\r\\n' ;;
  long) printf 'y%.0s' $(seq 200); printf '\\r\\n\\r\\n' ;;
  bodyfields) printf 'HTTP/1.1 200 OK\\r\\n\\r\\nX-Body: 1\\r\\n\\r\\n' ;;
  late) printf 'HTTP/1.1 200 OK\\r\\n\\r\\n'; sleep 0.3; printf 'late body' ;;
  hang) printf 'HTTP/1.1 200 OK\\r\\n\\r\\nfirst'; exec sleep 30 ;;
  stall) exec sleep 30 ;;
esac
`;

/** Fails instead of hanging when `promise` does not settle in `ms` (curl would run its full 30 s). */
async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`still pending after ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("--insecure through curl: flags, the config on stdin with every value quoted, the answer parsed, failures named, curl stopped", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/calls`);
    await Deno.writeTextFile(`${dir}/curl`, FAKE_CURL, { mode: 0o755 });
    const [client] = await captureLog(() =>
      Promise.resolve(createClient({ insecure: true, curl: `${dir}/curl` })!)
    );
    const call = async (n: number) => ({
      args: (await Deno.readTextFile(`${dir}/calls/${n}/args`)).trimEnd()
        .split("\n"),
      config: await Deno.readTextFile(`${dir}/calls/${n}/config`),
      pid: Number(await Deno.readTextFile(`${dir}/calls/${n}/pid`)),
    });
    const alive = (pid: number) => {
      try {
        return !Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
      } catch {
        return false;
      }
    };
    const gone = async (pid: number) => {
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
      return !alive(pid);
    };
    const U = "https://fake.example";
    try {
      await captureLog(async () => {
        // 0 was `curl --version`, when the client was made.
        assert.deepEqual((await call(0)).args, ["--version"]);
        // 1: GET, with 1xx skipped, header names and values trimmed.
        const res = await request(`${U}/ok`, {
          client,
          authorization: 'Bearer t"o\\k',
        });
        assert.equal(res.status, 200);
        assert.deepEqual([...res.headers], [
          ["content-type", "text/plain"],
          ["x-sp", "v"],
          ["x-two", "a:b"],
        ]);
        assert.equal(await res.text(), "hello");
        const get = await call(1);
        assert.deepEqual(get.args, [
          "--disable",
          "--silent",
          "--show-error",
          "--insecure",
          "--include",
          "--suppress-connect-headers",
          "--globoff",
          "--http1.1",
          "--max-redirs",
          "0",
          "--proto",
          "=https",
          "--config",
          "-",
        ]);
        assert.equal(
          get.config,
          `url = "${U}/ok"\nrequest = "GET"\n` +
            'header = "authorization: Bearer t\\"o\\\\k"\n' +
            'header = "user-agent: Deno"\n',
        );
        // 2-4: bodies, quoted so that no value can start a config line of its own.
        await (await request(`${U}/ok`, {
          client,
          method: "POST",
          body: 'a\nb\rc\td\\e"f',
        })).text();
        assert.equal(
          (await call(2)).config,
          `url = "${U}/ok"\nrequest = "POST"\n` +
            'data-binary = "a\\nb\\rc\\td\\\\e\\"f"\n' +
            'header = "content-type: text/plain;charset=UTF-8"\n' +
            'header = "user-agent: Deno"\n',
        );
        await (await request(`${U}/ok`, {
          client,
          method: "POST",
          body: new URLSearchParams({ a: "1" }),
          headers: { "user-agent": "mine" },
        })).text();
        assert.match(
          (await call(3)).config,
          /^data-binary = "a=1"\nheader = "content-type: application\/x-www-form-urlencoded;charset=UTF-8"\nheader = "user-agent: mine"\n$/m,
        );
        await (await request(`${U}/ok`, {
          client,
          method: "POST",
          body: new TextEncoder().encode("bytes"),
          headers: { "content-type": "application/json" },
        })).text();
        assert.match((await call(4)).config, /^data-binary = "bytes"$/m);
        assert.match(
          (await call(4)).config,
          /^header = "content-type: application\/json"$/m,
        );
        // 5: HEAD and 6: 204 have no body.
        const head = await request(`${U}/ok`, { client, method: "HEAD" });
        assert.equal(head.body, null);
        assert.equal(
          (await call(5)).config,
          `url = "${U}/ok"\nhead\nheader = "user-agent: Deno"\n`,
        );
        const none = await request(`${U}/nocontent`, { client });
        assert.equal(none.status, 204);
        assert.equal(none.body, null);
        // 7-10: what curl says when it fails, or what it answers that is not HTTP.
        for (
          const [path, message] of [
            ["garbage", /\/garbage: unexpected answer from curl: garbage$/],
            ["big", /\/big: response headers too large$/],
            ["fail", /\/fail: curl: \(60\) SSL certificate problem$/],
            ["silent", /\/silent: curl exited with code 7$/],
          ] as const
        ) {
          await assert.rejects(
            request(`${U}/${path}`, { client }),
            (err: unknown) => {
              assert.ok(err instanceof NetworkError, `${path}: ${err}`);
              assert.match(err.message, message);
              return true;
            },
          );
        }
        // 11: a body cut short is an error, never a short success.
        const cut = await request(`${U}/cut`, { client });
        await assert.rejects(cut.text(), /curl: \(18\) transfer closed/);
        // 12: an answer whose body is not wanted stops curl.
        const hang = await within(
          10_000,
          request(`${U}/hang`, { client, method: "HEAD" }),
        );
        assert.equal(hang.status, 200);
        assert.ok(await gone((await call(12)).pid), "curl stopped after HEAD");
        // 13: the caller's abort stops curl.
        const abort = new AbortController();
        setTimeout(() => abort.abort(new Error("aborted by the test")), 300);
        await assert.rejects(
          within(
            10_000,
            request(`${U}/stall`, { client, signal: abort.signal }),
          ),
          /aborted by the test/,
        );
        assert.ok(await gone((await call(13)).pid), "curl stopped on abort");
        // An aborted request never starts curl; a body curl cannot take is refused.
        await assert.rejects(
          request(`${U}/ok`, { client, signal: AbortSignal.abort() }),
        );
        await assert.rejects(
          request(`${U}/ok`, {
            client,
            method: "POST",
            body: new ReadableStream(),
          }),
          /not supported with --insecure/,
        );
        // 14-19: a 304 has no body; heads that are not curl's are named,
        // cut to 80 characters; the body's lines are never header fields; a
        // body written later is read to its end.
        assert.equal(
          (await request(`${U}/notmodified`, { client })).body,
          null,
        );
        for (
          const [path, message] of [
            ["blank", /\/blank: unexpected answer from curl: $/],
            [
              "glued",
              /\/glued: unexpected answer from curl: xHTTP\/1\.1 200 OK$/,
            ],
            [
              "long",
              new RegExp(
                `/long: unexpected answer from curl: ${"y".repeat(80)}$`,
              ),
            ],
          ] as const
        ) {
          await assert.rejects(
            request(`${U}/${path}`, { client }),
            (err: unknown) => {
              assert.ok(err instanceof NetworkError, `${path}: ${err}`);
              assert.match(err.message, message);
              return true;
            },
          );
        }
        const fields = await request(`${U}/bodyfields`, { client });
        assert.equal(fields.headers.get("x-body"), null);
        assert.equal(await fields.text(), "X-Body: 1\r\n\r\n");
        const late = await request(`${U}/late`, { client });
        assert.equal(await late.text(), "late body");
        assert.equal([...Deno.readDirSync(`${dir}/calls`)].length, 20);
      });
    } finally {
      client.close();
      // The next --insecure client of this process runs the real curl again.
      await captureLog(() =>
        Promise.resolve(createClient({ insecure: true })?.close())
      );
    }
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
