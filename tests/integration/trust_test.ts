/**
 * Whom we trust, over real sockets: every redirect hop re-checked (scheme,
 * https → http, malformed Location, a body never re-sent), the bearer token
 * confined to the API origin and path on every hop, the SSO exchange never
 * redirected and its answer capped, a warning when a token travels over
 * plain http, local files only for a local first script, and pins that fail
 * closed in `stage`.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createFaults } from "../../dev/faults.ts";
import { fakeKernel, startMock } from "../../dev/mock_infraenv.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { PolicyError, request } from "../../lib/http/request.ts";
import { createClient } from "../../lib/http/client.ts";
import { withRetries } from "../../lib/http/retry.ts";
import { createScriptClient } from "../../lib/resolve/infraenv.ts";
import { exchangeRefreshToken, MAX_SSO_BYTES } from "../../lib/resolve/sso.ts";
import { errorBodyText } from "../../lib/resolve/service_requests.ts";
import { isAmbiguousMacAnswer } from "../../lib/resolve/mac_request.ts";
import { stage } from "../../lib/stage/stage.ts";
import type { KexecPlan } from "../../lib/plan.ts";
import { captureLog, makeTestCerts, withTemp } from "../test_util.ts";

const fast = { retries: 2, baseDelayMs: 10, timeoutMs: 5000 };

interface Seen {
  method: string;
  path: string;
  auth: string | null;
  body: string;
}

/** A plain HTTP server on 127.0.0.1 recording what it saw. */
function serve(
  handler: (req: Request, url: URL) => Response | Promise<Response>,
  tls?: { cert: string; key: string },
) {
  const seen: Seen[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {}, ...tls },
    async (req) => {
      const url = new URL(req.url);
      // Like most servers: percent escapes in the path are decoded.
      url.pathname = decodeURIComponent(url.pathname);
      seen.push({
        method: req.method,
        path: url.pathname + url.search,
        auth: req.headers.get("authorization"),
        body: req.method === "POST" ? await req.text() : "",
      });
      return await handler(req, url);
    },
  );
  const base = `${tls ? "https" : "http"}://127.0.0.1:${server.addr.port}`;
  return { base, seen, close: () => server.shutdown() };
}

function redirect(location: string, status = 302): Response {
  return new Response(null, { status, headers: { location } });
}

function bootError(code: number, pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}

// ---- request(): every hop re-checked ----

Deno.test("request: a redirect to file:, data: or a malformed Location is refused and never retried", async () => {
  const secret = await Deno.makeTempFile();
  await Deno.writeTextFile(secret, "#!ipxe\nlocal secret\n");
  const srv = serve((_req, url) => {
    if (url.pathname === "/file") return redirect(`file://${secret}`);
    if (url.pathname === "/data") return redirect("data:text/plain,#!ipxe");
    if (url.pathname === "/bad") return redirect("http://[::1", 301);
    return new Response("ok");
  });
  try {
    for (
      const [path, pattern] of [
        ["/file", /redirects to file:\/\/\/.*, refused/],
        ["/data", /redirects to data:text\/plain,#!ipxe, refused/],
        ["/bad", /HTTP 301 with a malformed Location "http:\/\/\[::1"/],
      ] as const
    ) {
      let calls = 0;
      await assert.rejects(
        withRetries(() => {
          calls++;
          return request(`${srv.base}${path}`);
        }, { retries: 3, baseDelayMs: 1 }),
        (err: unknown) => {
          assert.ok(err instanceof PolicyError, String(err));
          assert.match(err.message, pattern);
          return true;
        },
      );
      assert.equal(calls, 1, `${path}: not retried`);
    }
    // A request may not start on data: or another scheme either.
    await assert.rejects(request("data:text/plain,x"), PolicyError);
  } finally {
    await srv.close();
    await Deno.remove(secret);
  }
});

Deno.test("request: a redirect never adds credentials: a Location with user:password@ is refused, so no Authorization: Basic is ever sent", async () => {
  const target = serve(() => new Response("ok"));
  const port = new URL(target.base).port;
  const srv = serve((_req, url) =>
    url.pathname === "/k"
      ? redirect(`http://user:hunter2@127.0.0.1:${port}/k`)
      : new Response("ok")
  );
  try {
    let calls = 0;
    await assert.rejects(
      withRetries(() => {
        calls++;
        return request(`${srv.base}/k`);
      }, { retries: 3, baseDelayMs: 1 }),
      (err: unknown) => {
        assert.ok(err instanceof PolicyError, String(err));
        assert.match(
          err.message,
          /redirects to an URL with a user:password@ \(http:\/\/REDACTED@127\.0\.0\.1:\d+\/k\), refused/,
        );
        assert.ok(!err.message.includes("hunter2"), err.message);
        return true;
      },
    );
    assert.equal(calls, 1, "not retried");
    assert.deepEqual(target.seen, [], "the target never got a request");
  } finally {
    await srv.close();
    await target.close();
  }
});

Deno.test("request: a 307/308 never sends a POST body again; a 303 turns it into a body-less GET", async () => {
  const sink = serve(() => new Response("sink"));
  const srv = serve((_req, url) => {
    if (url.pathname === "/307") return redirect(`${sink.base}/got`, 307);
    if (url.pathname === "/308") return redirect("/same-origin", 308);
    if (url.pathname === "/303") return redirect(`${sink.base}/get`, 303);
    return new Response("ok");
  });
  try {
    for (const path of ["/307", "/308"]) {
      await assert.rejects(
        request(`${srv.base}${path}`, {
          method: "POST",
          body: "refresh_token=s3cret",
        }),
        (err: unknown) =>
          err instanceof PolicyError &&
          /would send the request body again/.test(err.message),
      );
    }
    const res = await request(`${srv.base}/303`, {
      method: "POST",
      body: "refresh_token=s3cret",
    });
    assert.equal(await res.text(), "sink");
    assert.deepEqual(sink.seen, [{
      method: "GET",
      path: "/get",
      auth: null,
      body: "",
    }]);
    assert.ok(!srv.seen.some((s) => s.path === "/same-origin"));
    // "manual" hands the redirect itself to the caller.
    const manual = await request(`${srv.base}/307`, { redirect: "manual" });
    assert.equal(manual.status, 307);
    assert.equal(manual.headers.get("location"), `${sink.base}/got`);
    await manual.body?.cancel();
  } finally {
    await srv.close();
    await sink.close();
  }
});

Deno.test("request: https → http is refused unless the client is --insecure", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const plain = serve(() => new Response("plain"));
    const tls = serve((_req, url) => {
      if (url.pathname === "/down") return redirect(`${plain.base}/x`);
      if (url.pathname === "/up") return redirect("/final");
      return new Response("secure");
    }, {
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    });
    const [verified] = await captureLog(() =>
      Promise.resolve(createClient({ caCertFiles: [`${dir}/ca.pem`] }))
    );
    try {
      await assert.rejects(
        request(`${tls.base}/down`, { client: verified }),
        (err: unknown) =>
          err instanceof PolicyError &&
          /redirects from https to plain http .*--insecure allows it/.test(
            err.message,
          ),
      );
      assert.equal(plain.seen.length, 0, "the http server was never asked");
      const same = await request(`${tls.base}/up`, { client: verified });
      assert.equal(await same.text(), "secure");
      const [insecure] = await captureLog(() =>
        Promise.resolve(createClient({ insecure: true }))
      );
      const [down] = await captureLog(() =>
        request(`${tls.base}/down`, { client: insecure })
      );
      assert.equal(await down.text(), "plain");
      insecure?.close();
    } finally {
      verified?.close();
      await tls.close();
      await plain.close();
    }
  });
});

Deno.test("request: Authorization goes only to URLs in its scope, checked on every hop", async () => {
  const srv = serve((_req, url) => {
    if (url.pathname === "/api/off") return redirect("/elsewhere/x");
    if (url.pathname === "/api/on") return redirect("/api/moved");
    if (url.pathname === "/elsewhere/back") return redirect("/api/y");
    return new Response("ok");
  });
  const scope = (u: URL) =>
    u.origin === new URL(srv.base).origin && u.pathname.startsWith("/api/");
  try {
    for (const path of ["/api/off", "/api/on", "/elsewhere/back"]) {
      const res = await request(`${srv.base}${path}`, {
        authorization: "Bearer t0ken",
        authorizationScope: scope,
      });
      await res.body?.cancel();
    }
    assert.deepEqual(srv.seen.map((s) => [s.path, s.auth]), [
      ["/api/off", "Bearer t0ken"],
      ["/elsewhere/x", null],
      ["/api/on", "Bearer t0ken"],
      ["/api/moved", "Bearer t0ken"],
      ["/elsewhere/back", null],
      ["/api/y", "Bearer t0ken"],
    ]);
  } finally {
    await srv.close();
  }
});

// ---- the InfraEnv client ----

Deno.test("infraenv: the bearer stays on the API origin and path, also across a same-origin redirect off the path", async () => {
  const faults = createFaults();
  const mock = await startMock({ authMode: "rhsso", faults });
  try {
    const real = await fetch(
      `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script`,
      { headers: { authorization: `Bearer ${mock.accessToken}` } },
    ).then((r) => r.text());
    faults.add({
      match: { server: "api", path: "/downloads/files" },
      fault: { kind: "redirect", location: "/static/boot.ipxe" },
      times: 1,
    });
    faults.add({
      match: { server: "api", path: "/static/boot.ipxe" },
      fault: { kind: "status", status: 200, body: real },
    });
    const client = createScriptClient({
      kind: "infraenv",
      apiUrl: mock.apiUrl,
      infraEnvId: mock.infraEnvId,
      auth: { kind: "token", token: mock.accessToken },
    }, fast);
    const before = mock.requests.length;
    const [got] = await captureLog(() =>
      client.fetch(client.firstUrl, { maxBytes: 1 << 20 })
    );
    assert.match(new TextDecoder().decode(got.body), /^#!ipxe/);
    const seen = mock.requests.slice(before).map((
      r,
    ) => [r.path.split("?")[0], r.headers.authorization]);
    assert.deepEqual(seen, [
      [
        `/api/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files`,
        `Bearer ${mock.accessToken}`,
      ],
      ["/static/boot.ipxe", undefined],
    ]);
  } finally {
    faults.release();
    await mock.close();
  }
});

Deno.test("infraenv: a token over plain http is warned about once per origin, API and SSO alike", async () => {
  const mock = await startMock({ authMode: "rhsso" });
  try {
    const client = createScriptClient({
      kind: "infraenv",
      apiUrl: mock.apiUrl,
      infraEnvId: mock.infraEnvId,
      auth: {
        kind: "refresh",
        refreshToken: mock.refreshToken,
        ssoUrl: mock.ssoUrl,
      },
    }, fast);
    const [, lines] = await captureLog(async () => {
      await client.fetch(client.firstUrl, { maxBytes: 1 << 20 });
      await client.fetch(client.firstUrl, { maxBytes: 1 << 20 });
      await exchangeRefreshToken(mock.ssoUrl, mock.refreshToken, fast);
    });
    const warnings = lines.filter((l) => /over plain http/.test(l));
    assert.deepEqual(warnings, [
      `assisted-bootloader: warn: The API token is sent over plain http to ${mock.baseUrl}: anyone on the network path can read it (use https)`,
      `assisted-bootloader: warn: The offline token is sent over plain http to ${mock.baseUrl}: anyone on the network path can read it (use https)`,
    ]);
    // A hub's script URL carries its api_key: warned about too, once.
    const hub = createScriptClient(
      { kind: "ipxe-url", url: `${mock.ipxeScriptUrl}&api_key=k` },
      fast,
    );
    const [, hubLines] = await captureLog(async () => {
      await hub.fetch(hub.firstUrl, { maxBytes: 1 << 20 }).catch(() => {});
      await hub.fetch(hub.firstUrl, { maxBytes: 1 << 20 }).catch(() => {});
    });
    assert.deepEqual(hubLines.filter((l) => /plain http/.test(l)), [
      `assisted-bootloader: warn: The api_key or image_token of a script URL is sent over plain http to ${mock.baseUrl}: anyone on the network path can read it (use https)`,
    ]);
    // No credential, no warning.
    const plain = createScriptClient(
      { kind: "ipxe-url", url: `${mock.baseUrl}/boot.ipxe` },
      fast,
    );
    const [, none] = await captureLog(() =>
      plain.fetch(plain.firstUrl, { maxBytes: 1 << 20 }).catch(() => {})
    );
    assert.ok(!none.some((l) => /plain http/.test(l)), none.join("\n"));
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: the SSO never gets its redirect followed: the offline token goes nowhere else", async () => {
  const faults = createFaults();
  const mock = await startMock({ authMode: "rhsso", faults });
  try {
    for (const status of [307, 308, 302, 301, 303]) {
      faults.clear();
      faults.add({
        match: { server: "api", path: "openid-connect" },
        fault: {
          kind: "redirect",
          status,
          location: `${mock.imageBaseUrl}/steal`,
        },
      });
      const before = mock.requests.length;
      await captureLog(() =>
        assert.rejects(
          exchangeRefreshToken(mock.ssoUrl, mock.refreshToken, fast),
          bootError(
            ExitCode.Api,
            new RegExp(
              `SSO at .* answered HTTP ${status} \\(a redirect to http://127\\.0\\.0\\.1:\\d+/steal\\): not followed`,
            ),
          ),
        )
      );
      const after = mock.requests.slice(before);
      assert.deepEqual(after.map((r) => [r.server, r.method]), [[
        "api",
        "POST",
      ]], `HTTP ${status}: one POST to the SSO, nothing anywhere else`);
    }
  } finally {
    faults.release();
    await mock.close();
  }
});

Deno.test("infraenv: an endless or oversized SSO answer is cut at the cap; a token that cannot be a header is refused", async () => {
  const faults = createFaults();
  const mock = await startMock({ authMode: "rhsso", faults });
  try {
    faults.add({
      match: { path: "openid-connect" },
      fault: {
        kind: "endless",
        headers: { "content-type": "application/json" },
      },
      times: 1,
    });
    const started = Date.now();
    await captureLog(() =>
      assert.rejects(
        exchangeRefreshToken(mock.ssoUrl, mock.refreshToken, fast),
        bootError(
          ExitCode.Api,
          new RegExp(`answered more than ${MAX_SSO_BYTES} bytes`),
        ),
      )
    );
    assert.ok(Date.now() - started < 5000, "cut, not read to the end");
    let served = faults.served.find((s) => s.fault === "endless");
    for (let i = 0; !served && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 20));
      served = faults.served.find((s) => s.fault === "endless");
    }
    assert.ok(served, "the endless answer ended");
    assert.equal(served.complete, false);
    for (const token of ["bad\u0001token", "t\u00f6ken", "two words"]) {
      faults.clear();
      faults.add({
        match: { path: "openid-connect" },
        fault: {
          kind: "status",
          status: 200,
          body: JSON.stringify({ access_token: token, expires_in: 900 }),
        },
      });
      await captureLog(() =>
        assert.rejects(
          exchangeRefreshToken(mock.ssoUrl, mock.refreshToken, fast),
          bootError(
            ExitCode.Api,
            /answered an access_token that cannot be sent in an HTTP header/,
          ),
        )
      );
    }
    // Valid JSON that is no object: a one-line refusal (exit 4), never a crash.
    for (
      const [body, pattern] of [
        ["null", /JSON that is not an object \(null\)/],
        ["[]", /JSON that is not an object \(a list\)/],
        ['"token"', /JSON that is not an object \(a string\)/],
        ["42", /JSON that is not an object \(a number\)/],
        ["true", /JSON that is not an object \(a boolean\)/],
        ["{}", /answered without an access_token/],
        ['{"access_token":null}', /answered without an access_token/],
      ] as const
    ) {
      faults.clear();
      faults.add({
        match: { path: "openid-connect" },
        fault: { kind: "status", status: 200, body },
      });
      await captureLog(() =>
        assert.rejects(
          exchangeRefreshToken(mock.ssoUrl, mock.refreshToken, fast),
          bootError(ExitCode.Api, pattern),
        )
      );
    }
    // Error bodies and the MAC answer read JSON too: null there is text.
    assert.equal(errorBodyText("null"), "null");
    assert.equal(errorBodyText("[1]"), "[1]");
    assert.equal(isAmbiguousMacAnswer(500, "null"), false);
  } finally {
    faults.release();
    await mock.close();
  }
});

Deno.test("infraenv: local files are read only for a file: first script", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/boot.ipxe`, "#!ipxe\n");
    await Deno.writeTextFile(`${dir}/secret`, "offline-token");
    const remote = createScriptClient(
      { kind: "ipxe-url", url: "http://127.0.0.1:1/boot.ipxe" },
      fast,
    );
    await assert.rejects(
      remote.fetch(`file://${dir}/secret`, { maxBytes: 1024 }),
      bootError(
        ExitCode.Api,
        /Refused to read file:\/\/.*\/secret: local files are read only when --ipxe-url is a file: URL/,
      ),
    );
    const infraenv = createScriptClient({
      kind: "infraenv",
      apiUrl: "http://127.0.0.1:1/api",
      infraEnvId: "x",
      auth: { kind: "none" },
    }, fast);
    await assert.rejects(
      infraenv.fetch(`file://${dir}/secret`, { maxBytes: 1024 }),
      bootError(ExitCode.Api, /Refused to read/),
    );
    const local = createScriptClient(
      { kind: "ipxe-url", url: `file://${dir}/boot.ipxe` },
      fast,
    );
    const got = await local.fetch(`file://${dir}/secret`, { maxBytes: 1024 });
    assert.equal(new TextDecoder().decode(got.body), "offline-token");
  });
});

// ---- stage(): schemes and pins ----

function sha(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const KERNEL = fakeKernel();
const INITRD = new TextEncoder().encode("070701" + "0".repeat(200));

function kexecPlan(kernel: string, initrds: string[]): KexecPlan {
  return {
    action: "kexec",
    kernel: { url: kernel, name: "vmlinuz" },
    initrds: initrds.map((url) => ({ url, name: "initrd" })),
    cmdline: "",
    scripts: [],
  };
}

Deno.test("stage: file: artifacts only when the first script was local", async () => {
  await withTemp(async (dir) => {
    await Deno.writeFile(`${dir}/vmlinuz`, KERNEL);
    await Deno.writeFile(`${dir}/token`, INITRD);
    const plan = kexecPlan(`file://${dir}/vmlinuz`, [`file://${dir}/token`]);
    const base = {
      workDir: `${dir}/work`,
      progress: "none" as const,
      retries: 0,
      cache: false,
    };
    await captureLog(() =>
      assert.rejects(
        stage(plan, base),
        bootError(
          ExitCode.Download,
          /Refused to read file:\/\/.*\/vmlinuz: local files are read only when --ipxe-url is a file: URL/,
        ),
      )
    );
    const [ok] = await captureLog(() =>
      stage(plan, { ...base, localFiles: true })
    );
    assert.equal(ok.kernel.sha256, sha(KERNEL));
  });
});

Deno.test("load: pins compare normalised URLs; a pin naming nothing is a usage error before any download, and after a refetch", async () => {
  const srv = serve((_req, url) => {
    if (url.pathname === "/boot/vmlinuz") {
      return new Response(KERNEL as BodyInit);
    }
    if (url.pathname === "/boot/initrd.img") {
      return new Response(INITRD as BodyInit);
    }
    if (url.pathname === "/signed/initrd.img") {
      // The signed URL "expired": the plan is fetched again.
      return new Response("expired", { status: 401 });
    }
    return new Response("not found", { status: 404 });
  });
  try {
    await withTemp(async (dir) => {
      const base = {
        workDir: `${dir}/work`,
        progress: "none" as const,
        retries: 0,
        cache: false,
      };
      // The script spells the kernel one way, the user another.
      const plan = kexecPlan(`${srv.base.toUpperCase()}/a/../boot/./vmlinuz`, [
        `${srv.base}/boot/%69nitrd.img`,
      ]);
      const userKernel = `${srv.base}/boot/x/../%76mlinuz`;
      await captureLog(() =>
        assert.rejects(
          stage(plan, {
            ...base,
            artifactSha256: { [userKernel]: "ab".repeat(32) },
          }),
          bootError(ExitCode.Verify, /sha256 mismatch for .*vmlinuz/),
        )
      );
      const asked = srv.seen.length;
      await captureLog(() =>
        assert.rejects(
          stage(plan, {
            ...base,
            artifactSha256: {
              [`${srv.base}/BOOT/initrd.img`]: "ab".repeat(32),
            },
          }),
          bootError(ExitCode.Usage, /matches no kernel or initrd/),
        )
      );
      assert.equal(srv.seen.length, asked, "refused before any download");
      const [ok] = await captureLog(() =>
        stage(plan, {
          ...base,
          artifactSha256: {
            [userKernel]: sha(KERNEL),
            [`${srv.base}/boot/initrd.img`]: sha(INITRD),
          },
        })
      );
      assert.equal(ok.kernel.sha256, sha(KERNEL));
      // The refetched plan no longer names the pinned initrd.
      const signed = kexecPlan(`${srv.base}/boot/vmlinuz`, [
        `${srv.base}/signed/initrd.img?image_token=t`,
      ]);
      await captureLog(() =>
        assert.rejects(
          stage(signed, {
            ...base,
            artifactSha256: {
              [`${srv.base}/signed/initrd.img`]: sha(INITRD),
            },
            refetchPlan: () =>
              Promise.resolve(
                kexecPlan(`${srv.base}/boot/vmlinuz`, [
                  `${srv.base}/boot/initrd.img`,
                ]),
              ),
          }),
          bootError(
            ExitCode.Usage,
            /--artifact-sha256 .*\/signed\/initrd\.img matches no kernel or initrd/,
          ),
        )
      );
    });
  } finally {
    await srv.close();
  }
});

Deno.test("request: a 301 or 302 answering a POST is followed as a body-less GET; a 303 after a GET stays a GET", async () => {
  const sink = serve(() => new Response("sink"));
  const srv = serve((_req, url) => {
    const status = Number(url.pathname.slice(1));
    return redirect(`${sink.base}/to${status}`, status);
  });
  try {
    for (const status of [301, 302]) {
      const res = await request(`${srv.base}/${status}`, {
        method: "POST",
        body: "refresh_token=s3cret",
      });
      assert.equal(await res.text(), "sink");
    }
    await (await request(`${srv.base}/303`)).text();
    const head = await request(`${srv.base}/302`, { method: "HEAD" });
    await head.body?.cancel();
    assert.deepEqual(sink.seen, [
      { method: "GET", path: "/to301", auth: null, body: "" },
      { method: "GET", path: "/to302", auth: null, body: "" },
      { method: "GET", path: "/to303", auth: null, body: "" },
      { method: "HEAD", path: "/to302", auth: null, body: "" },
    ]);
  } finally {
    await srv.close();
    await sink.close();
  }
});
