/**
 * The InfraEnv client against small 127.0.0.1 servers that answer exactly
 * what a case needs: what the SSO token exchange sends and which answers it
 * retries, refuses or accepts; where the bearer token goes and which plain
 * http warnings are said; how the script fetcher retries, reports and reads.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { BusyBudget } from "../../lib/http/busy.ts";
import {
  createScriptClient,
  LocalBootAnswer,
  scriptUrl,
} from "../../lib/resolve/infraenv.ts";
import {
  createTokenProvider,
  exchangeRefreshToken,
  MAX_SSO_BYTES,
} from "../../lib/resolve/sso.ts";
import { errorBodyText } from "../../lib/resolve/service_requests.ts";
import { captureLog, withTemp } from "../test_util.ts";

/** No busy waiting: a 429 or 503 counts as a failed attempt, retried after `baseDelayMs`. */
const fast = {
  retries: 2,
  baseDelayMs: 10,
  timeoutMs: 5000,
  busy: new BusyBudget(0),
};
const once = { ...fast, retries: 0 };
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A request as a test server saw it. */
interface Seen {
  method: string;
  path: string;
  headers: Headers;
  body: string;
}

/** A 127.0.0.1 server answering `answer` (given the request and its 1-based number); every request kept. */
function serve(
  answer: (seen: Seen, n: number) => Response | Promise<Response>,
) {
  const seen: Seen[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const url = new URL(req.url);
      const s = {
        method: req.method,
        path: url.pathname + url.search,
        headers: req.headers,
        body: await req.text(),
      };
      seen.push(s);
      return await answer(s, seen.length);
    },
  );
  return {
    origin: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    seen,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** An SSO token answer. */
function tokenAnswer(fields: Record<string, unknown> = {}): Response {
  return Response.json({
    access_token: "access-0123456789",
    expires_in: 900,
    token_type: "Bearer",
    ...fields,
  });
}

/** A body that sends `first` and then nothing, never ending. */
function stalled(first: string): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(first));
    },
  });
}

/** An answer announcing 100 bytes and sending `first` only: the connection ends mid-body. */
function cut(first: string): Response {
  return new Response(
    new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(first));
        controller.close();
      },
    }),
    { headers: { "content-length": "100" } },
  );
}

/** The rejection of `promise` (fails when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<BootError> {
  const err = await promise.then(
    () => assert.fail("expected a rejection"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof BootError, String(err));
  return err;
}

Deno.test("infraenv client: every trailing slash of the API URL is dropped, for the script URL and the bearer's scope", async () => {
  assert.equal(
    scriptUrl("http://h/api///", "x"),
    "http://h/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script",
  );
  await using api = serve(() => new Response("#!ipxe\n"));
  const client = createScriptClient({
    kind: "infraenv",
    apiUrl: `${api.origin}/api//`,
    infraEnvId: "x",
    auth: { kind: "token", token: "tok-slashes-0123" },
  }, fast);
  await client.fetch(client.firstUrl, { maxBytes: 100 });
  assert.equal(
    api.seen[0].path,
    "/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script",
  );
  assert.equal(
    api.seen[0].headers.get("authorization"),
    "Bearer tok-slashes-0123",
  );
});

Deno.test("infraenv client: error bodies: trimmed, first non-empty field, tags and runs of spaces one space, at most 300 characters", () => {
  assert.equal(errorBodyText("\n\n  Bad gateway  \nmore"), "Bad gateway");
  assert.equal(
    errorBodyText('{"reason":"","message":"the message"}'),
    "the message",
  );
  assert.equal(errorBodyText("<p>one</p><p>two</p>"), "one two");
  assert.equal(errorBodyText("a  \t  b"), "a b");
  assert.equal(
    errorBodyText(JSON.stringify({ reason: "r".repeat(400) })),
    "r".repeat(300),
  );
  assert.equal(errorBodyText("x".repeat(400)), "x".repeat(300));
});

Deno.test("infraenv client: the SSO exchange posts a form asking for JSON; a 4xx is not retried", async () => {
  await using sso = serve((_, n) =>
    n === 1 ? tokenAnswer() : Response.json(
      { error: "invalid_grant", error_description: "Token is not active" },
      { status: 400 },
    )
  );
  const token = await exchangeRefreshToken(
    `${sso.origin}/sso`,
    "offline-abc",
    fast,
  );
  assert.equal(token.token, "access-0123456789");
  const [post] = sso.seen;
  assert.equal(post.method, "POST");
  assert.equal(
    post.headers.get("content-type"),
    "application/x-www-form-urlencoded",
  );
  assert.equal(post.headers.get("accept"), "application/json");
  assert.deepEqual(Object.fromEntries(new URLSearchParams(post.body)), {
    grant_type: "refresh_token",
    client_id: "cloud-services",
    refresh_token: "offline-abc",
  });
  const err = await rejection(
    exchangeRefreshToken(`${sso.origin}/sso`, "offline-abc", fast),
  );
  assert.equal(
    err.message,
    "SSO refused the refresh token (HTTP 400): Token is not active",
  );
  assert.equal(err.exitCode, ExitCode.Api);
  assert.equal(sso.seen.length, 2, "the 400 was asked once");
});

Deno.test("infraenv client: the SSO's 500 and 429 are retried, Retry-After honoured, each retry said", async () => {
  await using sso = serve((_, n) =>
    n === 1
      ? new Response("down", { status: 500, headers: { "retry-after": "0" } })
      : n === 2
      ? new Response("slow", { status: 429, headers: { "retry-after": "0" } })
      : tokenAnswer()
  );
  const url = `${sso.origin}/sso`;
  const [token, logged] = await captureLog(() =>
    exchangeRefreshToken(url, "offline-abc", fast)
  );
  assert.equal(token.token, "access-0123456789");
  assert.equal(sso.seen.length, 3);
  const retries = logged.filter((l) => l.includes("SSO token exchange: "));
  assert.equal(retries.length, 2, logged.join("\n"));
  assert.ok(
    retries[0].endsWith(
      `SSO token exchange: HTTP 500 from ${url}; retry 1 in 0 ms`,
    ),
    retries[0],
  );
  assert.ok(
    retries[1].endsWith(
      `SSO token exchange: HTTP 429 from ${url}; retry 2 in 0 ms`,
    ),
    retries[1],
  );
});

Deno.test("infraenv client: a busy wait names what it waits for (SSO exchange, script)", async () => {
  await using server = serve((s, n) =>
    n % 2 === 1
      ? new Response("busy", { status: 503 })
      : s.path === "/sso"
      ? tokenAnswer()
      : new Response("#!ipxe\n")
  );
  const sso = `${server.origin}/sso`;
  const script = `${server.origin}/boot.ipxe`;
  const [, logged] = await captureLog(async () => {
    await exchangeRefreshToken(sso, "offline-abc", {
      ...fast,
      busy: new BusyBudget(50),
    });
    const client = createScriptClient({ kind: "ipxe-url", url: script }, {
      ...fast,
      busy: new BusyBudget(50),
    });
    await client.fetch(script, { maxBytes: 100 });
  });
  const busy = logged.filter((l) => l.includes("server busy (HTTP 503)"));
  assert.equal(busy.length, 2, logged.join("\n"));
  assert.ok(
    busy[0].includes(`SSO token exchange at ${sso}: server busy`),
    busy[0],
  );
  assert.ok(busy[1].includes(`script ${script}: server busy`), busy[1]);
});

Deno.test("infraenv client: a redirect from the SSO is refused at once, its body unread, its Location named (at most 200 characters)", async () => {
  const far = `http://127.0.0.1:9/${"x".repeat(400)}`;
  await using sso = serve((s) =>
    s.path === "/moved"
      ? new Response(stalled("{"), { status: 307, headers: { location: far } })
      : new Response(null, { status: 302 })
  );
  const options = { ...fast, timeoutMs: 1000 };
  const moved = await rejection(
    exchangeRefreshToken(`${sso.origin}/moved`, "offline-abc", options),
  );
  assert.equal(
    moved.message,
    `SSO at ${sso.origin}/moved answered HTTP 307 (a redirect to ${
      far.slice(0, 200)
    }): not followed, the offline token goes to --sso-url only (give the final URL there)`,
  );
  assert.equal(moved.exitCode, ExitCode.Api);
  const bare = await rejection(
    exchangeRefreshToken(`${sso.origin}/bare`, "offline-abc", options),
  );
  assert.equal(
    bare.message,
    `SSO at ${sso.origin}/bare answered HTTP 302 (a redirect): not followed, the offline token goes to --sso-url only (give the final URL there)`,
  );
  assert.equal(sso.seen.length, 2, "each asked once, nothing followed");
});

Deno.test("infraenv client: SSO answers: up to MAX_SSO_BYTES read, not JSON, an empty access_token", async () => {
  const exact = JSON.stringify({
    access_token: "access-boundary-01",
    expires_in: 900,
  });
  const answers: Record<string, () => Response> = {
    "/exact": () => new Response(exact.padEnd(MAX_SSO_BYTES, " ")),
    "/over": () => new Response(exact.padEnd(MAX_SSO_BYTES + 1, " ")),
    "/text": () => new Response("hello"),
    "/empty": () => tokenAnswer({ access_token: "" }),
  };
  await using sso = serve((s) => answers[s.path]());
  const url = (path: string) => `${sso.origin}${path}`;
  const token = await exchangeRefreshToken(url("/exact"), "r", fast);
  assert.equal(token.token, "access-boundary-01");
  const failures = [
    [
      "/over",
      `answered more than ${MAX_SSO_BYTES} bytes, which is not a token answer`,
    ],
    ["/text", "answered with something that is not JSON"],
    ["/empty", "answered without an access_token"],
  ];
  for (const [path, what] of failures) {
    const err = await rejection(exchangeRefreshToken(url(path), "r", fast));
    assert.equal(err.message, `SSO at ${url(path)} ${what}`);
    assert.equal(err.exitCode, ExitCode.Api);
  }
});

Deno.test("infraenv client: an expires_in that is missing, not a number or not positive means 300 s", async () => {
  const cases: [unknown, number][] = [
    [undefined, 300],
    [0, 300],
    [-5, 300],
    ["600", 300],
    [600, 600],
  ];
  for (const [expiresIn, ttl] of cases) {
    await using sso = serve(() => tokenAnswer({ expires_in: expiresIn }));
    const before = Date.now();
    const [token, logged] = await captureLog(() =>
      exchangeRefreshToken(`${sso.origin}/sso`, "r", fast)
    );
    const after = Date.now();
    const what = `expires_in ${JSON.stringify(expiresIn)}`;
    assert.ok(token.expiresAt >= before + ttl * 1000, what);
    assert.ok(token.expiresAt <= after + ttl * 1000, what);
    assert.ok(
      logged.some((l) =>
        l.endsWith(`SSO: access token obtained, valid for ${ttl} s`)
      ),
      `${what}: ${logged.join("\n")}`,
    );
  }
});

Deno.test("infraenv client: an SSO answer cut mid-way is retried, then named; one that stops is cut after --timeout", async () => {
  let mode: "cut-once" | "cut" | "stall" = "cut-once";
  await using sso = serve((_, n) =>
    mode === "stall"
      ? new Response(stalled('{"access'))
      : mode === "cut" || n === 1
      ? cut('{"access')
      : tokenAnswer()
  );
  const url = `${sso.origin}/sso`;
  const token = await exchangeRefreshToken(url, "r", fast);
  assert.equal(token.token, "access-0123456789");
  assert.equal(sso.seen.length, 2, "the cut answer was asked again");

  const single = { ...once, timeoutMs: 1000 };
  mode = "cut";
  const lost = await rejection(exchangeRefreshToken(url, "r", single));
  assert.ok(
    lost.message.startsWith(
      `SSO token exchange at ${url} failed: connection lost while reading the answer: `,
    ),
    lost.message,
  );
  mode = "stall";
  const silent = await rejection(exchangeRefreshToken(url, "r", single));
  assert.equal(
    silent.message,
    `SSO token exchange at ${url} failed: no data for 1 s after 8 bytes`,
  );
});

Deno.test("infraenv client: a static token the API refuses is not sent again; an exchanged one is exchanged again once", async () => {
  let okAfter = Infinity;
  await using server = serve((s, n) =>
    s.path === "/sso"
      ? tokenAnswer({ access_token: `access-again-000${n}` })
      : n > okAfter
      ? new Response("#!ipxe\n")
      : Response.json({ code: 401, message: "unauthenticated" }, {
        status: 401,
      })
  );
  const source = {
    kind: "infraenv" as const,
    apiUrl: `${server.origin}/api`,
    infraEnvId: "x",
  };
  const fixed = createScriptClient({
    ...source,
    auth: { kind: "token", token: "tok-refused-0123" },
  }, fast);
  const [refused, said] = await captureLog(() =>
    rejection(fixed.fetch(fixed.firstUrl, { maxBytes: 100 }))
  );
  assert.match(
    refused.message,
    /answered HTTP 401: unauthenticated \(check the token\)$/,
  );
  assert.equal(server.seen.length, 1, "asked once");
  assert.ok(!said.some((l) => /exchanging/.test(l)), said.join("\n"));

  // The API refuses the first few whatever the token (a client that kept
  // exchanging would get through).
  okAfter = 6;
  const exchanged = createScriptClient({
    ...source,
    auth: {
      kind: "refresh",
      refreshToken: "offline-abc",
      ssoUrl: `${server.origin}/sso`,
    },
  }, fast);
  const [again, logged] = await captureLog(() =>
    rejection(exchanged.fetch(exchanged.firstUrl, { maxBytes: 100 }))
  );
  assert.match(
    again.message,
    /answered HTTP 401: unauthenticated \(check the token\)$/,
  );
  assert.deepEqual(server.seen.slice(1).map((s) => s.path.split("/")[1]), [
    "sso",
    "api",
    "sso",
    "api",
  ]);
  assert.equal(
    logged.filter((l) => /exchanging the refresh token again/.test(l)).length,
    1,
  );
});

Deno.test("infraenv client: the bearer goes to the API's origin and path only; plain http warnings name the right token", async () => {
  await using other = serve(() => new Response("#!ipxe\n"));
  await using api = serve(() => new Response("#!ipxe\n"));
  const client = createScriptClient({
    kind: "infraenv",
    apiUrl: `${api.origin}/api`,
    infraEnvId: "x",
    auth: { kind: "token", token: "tok-scope-0123" },
  }, fast);
  const urls = [
    client.firstUrl,
    `${api.origin}/apix/boot.ipxe`,
    `${other.origin}/api/boot.ipxe`,
    `${api.origin}/api/boot.ipxe?api_key=k1`,
    `${api.origin}/api/next.ipxe`,
  ];
  const [, logged] = await captureLog(async () => {
    for (const url of urls) await client.fetch(url, { maxBytes: 100 });
  });
  const sent = [...api.seen, ...other.seen].map((s) =>
    `${s.path} ${s.headers.get("authorization")}`
  );
  assert.deepEqual(sent, [
    "/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script Bearer tok-scope-0123",
    "/apix/boot.ipxe null",
    "/api/boot.ipxe?api_key=k1 null",
    "/api/next.ipxe Bearer tok-scope-0123",
    "/api/boot.ipxe null",
  ]);
  const plain = logged.filter((l) => l.includes("over plain http"));
  assert.equal(plain.length, 2, plain.join("\n"));
  assert.ok(
    plain[0].includes(
      `The API token is sent over plain http to ${api.origin}:`,
    ),
    plain[0],
  );
  assert.ok(
    plain[1].includes(
      `The api_key or image_token of a script URL is sent over plain http to ${api.origin}:`,
    ),
    plain[1],
  );

  // No token, no token warning.
  await using open = serve(() => new Response("#!ipxe\n"));
  const anonymous = createScriptClient({
    kind: "infraenv",
    apiUrl: `${open.origin}/api`,
    infraEnvId: "x",
    auth: { kind: "none" },
  }, fast);
  const [, quiet] = await captureLog(() =>
    anonymous.fetch(anonymous.firstUrl, { maxBytes: 100 })
  );
  assert.deepEqual(quiet.filter((l) => l.includes("plain http")), []);
});

Deno.test("infraenv client: an https API is fetched as https, without a plain http warning", async () => {
  // A plain http server: the TLS handshake fails, the scheme was tried.
  await using plain = serve(() => new Response("#!ipxe\n"));
  const origin = plain.origin.replace("http:", "https:");
  const client = createScriptClient({
    kind: "infraenv",
    apiUrl: `${origin}/api`,
    infraEnvId: "x",
    auth: { kind: "token", token: "tok-https-0123" },
  }, once);
  const [err, logged] = await captureLog(() =>
    rejection(client.fetch(client.firstUrl, { maxBytes: 100 }))
  );
  assert.ok(
    err.message.startsWith(`Cannot fetch ${client.firstUrl}: `),
    err.message,
  );
  assert.equal(err.exitCode, ExitCode.Api);
  assert.deepEqual(logged.filter((l) => l.includes("plain http")), []);
});

Deno.test("infraenv client: a script's 429 and 500 are retried, Retry-After honoured, each retry said", async () => {
  await using server = serve((_, n) =>
    n === 1
      ? new Response("slow down", {
        status: 429,
        headers: { "retry-after": "0" },
      })
      : n === 2
      ? Response.json({ reason: "db down" }, {
        status: 500,
        headers: { "retry-after": "0" },
      })
      : new Response("#!ipxe\n")
  );
  const url = `${server.origin}/boot.ipxe`;
  const client = createScriptClient({ kind: "ipxe-url", url }, fast);
  const [got, logged] = await captureLog(() =>
    client.fetch(url, { maxBytes: 100 })
  );
  assert.equal(text(got.body), "#!ipxe\n");
  const retries = logged.filter((l) => l.includes(`script ${url}: `));
  assert.equal(retries.length, 2, logged.join("\n"));
  assert.ok(
    retries[0].endsWith(`script ${url}: HTTP 429: slow down; retry 1 in 0 ms`),
    retries[0],
  );
  assert.ok(
    retries[1].endsWith(`script ${url}: HTTP 500: db down; retry 2 in 0 ms`),
    retries[1],
  );
});

Deno.test("infraenv client: a script body cut mid-way is retried, then named; one that stops is cut after --timeout", async () => {
  let mode: "cut-once" | "cut" | "stall" = "cut-once";
  await using server = serve((_, n) =>
    mode === "stall"
      ? new Response(stalled("#!ipxe\n"))
      : mode === "cut" || n === 1
      ? cut("#!ipxe\n")
      : new Response("#!ipxe\necho whole\n")
  );
  const url = `${server.origin}/boot.ipxe`;
  const client = createScriptClient({ kind: "ipxe-url", url }, fast);
  const got = await client.fetch(url, { maxBytes: 100 });
  assert.equal(text(got.body), "#!ipxe\necho whole\n");
  assert.equal(server.seen.length, 2);

  const single = createScriptClient({ kind: "ipxe-url", url }, {
    ...once,
    timeoutMs: 1000,
  });
  mode = "cut";
  const lost = await rejection(single.fetch(url, { maxBytes: 100 }));
  assert.ok(
    lost.message.startsWith(
      `Cannot fetch ${url}: connection lost while reading the body: `,
    ),
    lost.message,
  );
  mode = "stall";
  const silent = await rejection(single.fetch(url, { maxBytes: 100 }));
  assert.equal(
    silent.message,
    `Cannot fetch ${url}: no data for 1 s after 7 bytes`,
  );
});

Deno.test("infraenv client: refusals: local boot only for a 404 to a MAC request from the service; hints only for 401/403", async () => {
  const skipped = JSON.stringify({
    kind: "Error",
    reason: "IPXE booting skipped. InfraEnv x: host h is already installed",
  });
  const files = "/downloads/files?file_name=ipxe-script";
  const mac = `${files}&mac=52:54:00:12:34:56`;
  await using elsewhere = serve(() => new Response(skipped, { status: 404 }));
  await using service = serve((s) => {
    switch (s.path) {
      case `/installed${mac}`:
      case `/plain${files}`:
        return new Response(skipped, { status: 404 });
      case `/bad${mac}`:
        return new Response(skipped, { status: 400 });
      case `/moved${mac}`:
        return Response.redirect(`${elsewhere.origin}/x${mac}`, 302);
      case "/cred?api_key=k1":
        return Response.json({ reason: "expired" }, { status: 403 });
      case "/r":
        return Response.redirect(`${service.origin}/s`, 302);
      case "/s":
        return new Response("#!ipxe\n");
      default:
        return new Response("no such thing", { status: 404 });
    }
  });
  const url = (path: string) => `${service.origin}${path}`;
  const client = createScriptClient({
    kind: "ipxe-url",
    url: url("/boot.ipxe"),
  }, fast);
  const fetch = (path: string) =>
    client.fetch(url(path), { maxBytes: 100 }).then(
      () => assert.fail(`${path} answered`),
      (err: unknown) => err,
    );

  const installed = await fetch(`/installed${mac}`);
  assert.ok(installed instanceof LocalBootAnswer, String(installed));
  assert.equal(installed.name, "LocalBootAnswer");

  const reason =
    "IPXE booting skipped. InfraEnv x: host h is already installed";
  const refusals: [string, string][] = [
    [`/plain${files}`, `answered HTTP 404: ${reason}`],
    [`/bad${mac}`, `answered HTTP 400: ${reason}`],
    ["/missing", "answered HTTP 404: no such thing"],
  ];
  for (const [path, what] of refusals) {
    const err = await fetch(path);
    assert.ok(err instanceof BootError, String(err));
    assert.ok(!(err instanceof LocalBootAnswer), path);
    assert.equal(err.message, `${url(path)} ${what}`);
    assert.equal(err.exitCode, ExitCode.Api);
  }
  const moved = await fetch(`/moved${mac}`);
  assert.ok(moved instanceof BootError, String(moved));
  assert.ok(!(moved instanceof LocalBootAnswer), "another origin answered");
  assert.match(moved.message, /answered HTTP 404: IPXE booting skipped/);

  const cred = await fetch("/cred?api_key=k1");
  assert.ok(cred instanceof BootError, String(cred));
  assert.equal(
    cred.message,
    `${
      url("/cred?api_key=REDACTED")
    } answered HTTP 403: expired (the URL's credential was refused or has expired)`,
  );

  const got = await client.fetch(url("/r"), { maxBytes: 100 });
  assert.equal(got.url, url("/s"), "the URL that answered");
});

Deno.test("infraenv client: a local first script is read up to maxBytes + 1", async () => {
  await withTemp(async (dir) => {
    const path = `${dir}/boot.ipxe`;
    await Deno.writeTextFile(path, `#!ipxe\n${"echo x\n".repeat(20)}`);
    const client = createScriptClient({
      kind: "ipxe-url",
      url: `file://${path}`,
    }, fast);
    const got = await client.fetch(client.firstUrl, { maxBytes: 10 });
    assert.equal(got.body.length, 11);
  });
});

Deno.test("infraenv client: a local script another user can change, first or chained, is refused unread (exit 4)", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const first = `${dir}/boot.ipxe`;
    const chained = `${dir}/next.ipxe`;
    await Deno.writeTextFile(first, "#!ipxe\nchain next.ipxe\n");
    await Deno.writeTextFile(chained, "#!ipxe\nexit\n");
    await Deno.chmod(chained, 0o666);
    const client = createScriptClient({
      kind: "ipxe-url",
      url: `file://${first}`,
    }, fast);
    const ok = await client.fetch(client.firstUrl, { maxBytes: 100 });
    assert.equal(
      new TextDecoder().decode(ok.body),
      "#!ipxe\nchain next.ipxe\n",
    );
    await Deno.chmod(first, 0o664);
    for (const [path, mode] of [[first, "0664"], [chained, "0666"]]) {
      await assert.rejects(
        client.fetch(`file://${path}`, { maxBytes: 100 }),
        (err) => {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Api);
          assert.equal(
            err.message,
            `Cannot read file://${path}: it is writable by other users (mode ${mode}): whoever can change it decides what this machine boots (chmod go-w ${path})`,
          );
          return true;
        },
      );
    }
  });
});

Deno.test("infraenv client: a token provider reuses its token until invalidated; only an exchanged token can be renewed", async () => {
  await using sso = serve((_, n) =>
    tokenAnswer({ access_token: `access-reuse-000${n}`, expires_in: 60 })
  );
  const tokens = createTokenProvider({
    kind: "refresh",
    refreshToken: "r",
    ssoUrl: `${sso.origin}/sso`,
  }, fast);
  assert.equal(await tokens.authorization(), "Bearer access-reuse-0001");
  assert.equal(await tokens.authorization(), "Bearer access-reuse-0001");
  assert.equal(sso.seen.length, 1);
  assert.equal(tokens.invalidate(), true);
  assert.equal(await tokens.authorization(), "Bearer access-reuse-0002");
  const fixed = createTokenProvider({ kind: "token", token: "t" });
  assert.equal(fixed.invalidate(), false);
  assert.equal(await fixed.authorization(), "Bearer t");
});
