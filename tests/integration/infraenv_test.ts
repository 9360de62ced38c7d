import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  createScriptClient,
  LocalBootAnswer,
  scriptUrl,
} from "../../lib/resolve/infraenv.ts";
import {
  createTokenProvider,
  exchangeRefreshToken,
} from "../../lib/resolve/sso.ts";
import { errorBodyText } from "../../lib/resolve/service_requests.ts";
import {
  isAmbiguousMacAnswer,
  isMacScriptRequest,
  withoutMac,
} from "../../lib/resolve/mac_request.ts";
import { captureLog } from "../test_util.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import {
  type MockHost,
  type MockInfraEnv,
  startMock,
} from "../../dev/mock_infraenv.ts";

const fast = { retries: 2, baseDelayMs: 10, timeoutMs: 5000 };
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A client as the SaaS flow builds it: offline token exchanged at the mock's SSO. */
function saasClient(mock: MockInfraEnv) {
  return createScriptClient({
    kind: "infraenv",
    apiUrl: mock.apiUrl,
    infraEnvId: mock.infraEnvId,
    auth: {
      kind: "refresh",
      refreshToken: mock.refreshToken,
      ssoUrl: mock.ssoUrl,
    },
  }, fast);
}

Deno.test("infraenv: script URL shape", () => {
  assert.equal(
    scriptUrl("https://api.openshift.com/api/", "abc-123"),
    "https://api.openshift.com/api/assisted-install/v2/infra-envs/abc-123/downloads/files?file_name=ipxe-script",
  );
  assert.equal(
    scriptUrl("http://h/api", "x", { scriptType: "boot-order-control" }),
    "http://h/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script&ipxe_script_type=boot-order-control",
  );
  assert.ok(
    isMacScriptRequest(
      "http://h/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script&mac=aa",
    ),
  );
  assert.ok(
    !isMacScriptRequest(
      "http://h/api/assisted-install/v2/infra-envs/x/downloads/files?file_name=ipxe-script",
    ),
  );
});

Deno.test("infraenv: error bodies become one line", () => {
  assert.equal(
    errorBodyText(
      '{"code":"404","href":"","id":404,"kind":"Error","reason":"IPXE booting skipped."}',
    ),
    "IPXE booting skipped.",
  );
  assert.equal(
    errorBodyText(
      '{"code":401,"message":"unauthenticated for invalid credentials"}',
    ),
    "unauthenticated for invalid credentials",
  );
  assert.equal(
    errorBodyText(
      '{"error":"invalid_grant","error_description":"Invalid refresh token"}',
    ),
    "Invalid refresh token",
  );
  assert.equal(
    errorBodyText("<html><body><h1>502 Bad Gateway</h1>\n</body></html>"),
    "502 Bad Gateway",
  );
  assert.equal(errorBodyText("x?api_key=secret123"), "x?api_key=REDACTED");
});

Deno.test("infraenv: SaaS flow: refresh token → access token → script, bearer only on the API", async () => {
  const mock = await startMock({ authMode: "rhsso" });
  try {
    const client = saasClient(mock);
    const { body } = await client.fetch(client.firstUrl, { maxBytes: 65536 });
    const script = text(body);
    assert.match(
      script,
      /^#!ipxe\ninitrd --name initrd http:\/\/127\.0\.0\.1:\d+\/api\/assisted-images\/images\//,
    );
    const sso = mock.requests.find((r) => r.path.includes("openid-connect"));
    assert.ok(sso, "the SSO was asked");
    const api = mock.requests.find((r) => r.path.includes("downloads/files"));
    assert.match(api!.headers.authorization, /^Bearer access-/);
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: a 401 from the API exchanges the token again once and retries", async () => {
  const mock = await startMock({ authMode: "rhsso" });
  try {
    const client = saasClient(mock);
    await client.fetch(client.firstUrl, { maxBytes: 65536 });
    mock.expireAccessTokens();
    const { body } = await client.fetch(client.firstUrl, { maxBytes: 65536 });
    assert.match(text(body), /^#!ipxe/);
    const ssoCalls = mock.requests.filter((r) =>
      r.path.includes("openid-connect")
    ).length;
    assert.equal(ssoCalls, 2);
    assert.deepEqual(
      mock.requests.filter((r) => r.path.includes("downloads/files")).map((r) =>
        r.status
      ),
      [200, 401, 200],
    );
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: a bad token is a clear API error, not retried forever", async () => {
  const mock = await startMock({ authMode: "rhsso" });
  try {
    const client = createScriptClient({
      kind: "infraenv",
      apiUrl: mock.apiUrl,
      infraEnvId: mock.infraEnvId,
      auth: { kind: "token", token: "not-a-valid-token" },
    }, fast);
    await assert.rejects(
      client.fetch(client.firstUrl, { maxBytes: 65536 }),
      (err: unknown) => {
        assert.ok(err instanceof BootError);
        assert.equal(err.exitCode, ExitCode.Api);
        assert.match(
          err.message,
          /answered HTTP 401: unauthenticated for invalid credentials \(check the token\)/,
        );
        return true;
      },
    );
    await assert.rejects(
      exchangeRefreshToken(mock.ssoUrl, "wrong", fast),
      /SSO refused the refresh token \(HTTP 400\): Invalid refresh token/,
    );
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: 404 to a MAC-specific request is the local-boot signal", async () => {
  const mock = await startMock({
    authMode: "none",
    installedMacs: ["52:54:00:12:34:56"],
  });
  try {
    const client = createScriptClient({
      kind: "ipxe-url",
      url: mock.ipxeScriptUrl,
    }, fast);
    const url = `${mock.ipxeScriptUrl}&mac=52:54:00:12:34:56`;
    const answer = await client.fetch(url, { maxBytes: 65536 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(answer instanceof LocalBootAnswer, String(answer));
    assert.match(
      answer.reason,
      /^IPXE booting skipped\. InfraEnv .* is already installed$/,
    );
    // Anywhere it is not turned into a local boot, it is an API answer (4).
    assert.equal(answer.exitCode, ExitCode.Api);
    assert.match(answer.message, /HTTP 404/);
    await client.fetch(`${mock.ipxeScriptUrl}&mac=52:54:00:00:00:01`, {
      maxBytes: 65536,
    });
    // A 404 for an InfraEnv that does not exist is an error, not "installed".
    const missing = mock.ipxeScriptUrl.replace(
      mock.infraEnvId,
      "00000000-0000-0000-0000-000000000000",
    );
    const other = await client.fetch(`${missing}&mac=52:54:00:12:34:56`, {
      maxBytes: 65536,
    }).then(() => undefined, (err: unknown) => err);
    assert.ok(other instanceof BootError, String(other));
    assert.ok(!(other instanceof LocalBootAnswer));
    assert.match(other.message, /HTTP 404: Object Not Found/);
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: hub URL with api_key: no bearer, bounded body, 5xx retried", async () => {
  const mock = await startMock({
    authMode: "local",
    downUntil: Date.now() + 150,
  });
  try {
    const client = createScriptClient({
      kind: "ipxe-url",
      url: mock.ipxeScriptUrl,
    }, { ...fast, retries: 5, baseDelayMs: 60 });
    const { body } = await client.fetch(client.firstUrl, { maxBytes: 16 });
    assert.equal(body.length, 17, "at most maxBytes + 1 bytes are read");
    const statuses = mock.requests.map((r) => r.status);
    assert.equal(statuses.at(-1), 200);
    assert.ok(statuses.includes(503), "the 503 was retried");
    assert.ok(
      mock.requests.every((r) => r.headers.authorization === undefined),
    );
  } finally {
    await mock.close();
  }
});

Deno.test("infraenv: unsupported schemes and missing files are named", async () => {
  const client = createScriptClient({
    kind: "ipxe-url",
    url: "file:///nonexistent/boot.ipxe",
  }, fast);
  await assert.rejects(
    client.fetch("tftp://10.0.0.1/boot.ipxe", { maxBytes: 10 }),
    /Unsupported URL scheme "tftp"/,
  );
  await assert.rejects(
    client.fetch(client.firstUrl, { maxBytes: 10 }),
    /Cannot read file:\/\/\/nonexistent\/boot\.ipxe: no such file/,
  );
});

const MAC = "52:54:00:12:34:56";

/** Fetches the InfraEnv's script for `mac` from a mock with `hosts`; the log lines it wrote. */
async function macRequest(
  hosts: MockHost[],
  extra: { inventoryError?: string } = {},
) {
  const mock = await startMock({ authMode: "none", hosts, ...extra });
  try {
    const client = createScriptClient({
      kind: "infraenv",
      apiUrl: mock.apiUrl,
      infraEnvId: mock.infraEnvId,
      auth: { kind: "none" },
    }, { ...fast, mac: MAC });
    const [result, logged] = await captureLog(() =>
      client.fetch(client.firstUrl, { maxBytes: 65536 })
        .then((r) => ({ ...r, text: text(r.body) }), (err: unknown) => err)
    );
    return {
      mock,
      client,
      result,
      logged,
      statuses: mock.requests.map((r) => `${r.status} ${r.path}`),
    };
  } finally {
    await mock.close();
  }
}

Deno.test("infraenv: the service's inventory lookup for a MAC known to 0, 1 or 2 hosts", async () => {
  const plain =
    "/api/assisted-install/v2/infra-envs/6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b/downloads/files?file_name=ipxe-script";
  const withMac = `${plain}&mac=52%3A54%3A00%3A12%3A34%3A56`;
  // Unknown MAC, or one host still in discovery: the boot script, at once.
  for (
    const hosts of [
      [],
      [{ macs: ["52:54:00:00:00:09"] }],
      [{ macs: ["52:54:00:aa:aa:aa", MAC], status: "known" }],
      [{ macs: [MAC], status: "installing-in-progress", stage: "Installing" }],
    ]
  ) {
    const r = await macRequest(hosts);
    assert.match((r.result as { text: string }).text, /^#!ipxe\n/);
    assert.deepEqual(r.statuses, [`200 ${withMac}`], JSON.stringify(hosts));
  }
  // One host, installed (or past the point of no return): boot the local disk.
  for (
    const [host, why] of <[MockHost, RegExp][]> [
      [{ macs: [MAC], status: "installed" }, /is already installed$/],
      [
        { macs: [MAC.toUpperCase()], status: "installed" },
        /is already installed$/,
      ],
      [
        { macs: [MAC], status: "installing-in-progress", stage: "Rebooting" },
        /is in stage Rebooting$/,
      ],
    ]
  ) {
    const r = await macRequest([host]);
    assert.ok(r.result instanceof LocalBootAnswer, String(r.result));
    assert.match(
      r.result.reason,
      new RegExp(
        `^IPXE booting skipped\\. InfraEnv \\S+: host \\S+ having mac ${MAC} ${why.source}`,
      ),
    );
    assert.deepEqual(r.statuses, [`404 ${withMac}`]);
  }
});

Deno.test("infraenv: a MAC two hosts have: one 500, then the plain script URL, said in one line", async () => {
  const plain =
    "/api/assisted-install/v2/infra-envs/6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b/downloads/files?file_name=ipxe-script";
  // Even when one of them is installed: the service counts before it looks.
  const r = await macRequest([
    { macs: [MAC], status: "installed" },
    { macs: [MAC, "52:54:00:00:00:02"], status: "known" },
  ]);
  const result = r.result as { url: string; text: string };
  assert.match(result.text, /^#!ipxe\ninitrd --name initrd /);
  assert.equal(result.url, `${r.mock.baseUrl}${plain}`);
  assert.deepEqual(r.statuses, [
    `500 ${plain}&mac=52%3A54%3A00%3A12%3A34%3A56`,
    `200 ${plain}`,
  ]);
  const said = r.logged.filter((l) => /without mac=/.test(l));
  assert.equal(said.length, 1, r.logged.join("\n"));
  assert.match(
    said[0],
    /Unexpected number of hosts 2 with mac 52:54:00:12:34:56.*fetching the script without mac=/,
  );
});

Deno.test("infraenv: a 500 of another kind is retried and reported, never a reason to drop the MAC", async () => {
  const r = await macRequest([{ macs: [MAC] }], {
    inventoryError: "dial tcp 10.0.0.5:5432: connect: connection refused",
  });
  assert.ok(r.result instanceof BootError, String(r.result));
  assert.equal(r.result.exitCode, ExitCode.Api);
  assert.match(
    r.result.message,
    /answered HTTP 500|HTTP 500: IPXE booting skipped\. InfraEnv \S+: Host with mac 52:54:00:12:34:56: dial tcp/,
  );
  assert.equal(r.statuses.length, 1 + fast.retries, r.statuses.join("\n"));
  assert.ok(r.statuses.every((s) => s.includes("&mac=")), "the MAC stays");
});

Deno.test("infraenv: which 500s mean 'more than one host has this MAC'", () => {
  const body = (reason: string, code = "500") =>
    JSON.stringify({ code, href: "", id: Number(code), kind: "Error", reason });
  const ambiguous =
    "IPXE booting skipped. Unexpected number of hosts 2 with mac 52:54:00:12:34:56";
  assert.ok(isAmbiguousMacAnswer(500, body(ambiguous)));
  assert.ok(!isAmbiguousMacAnswer(404, body(ambiguous, "404")));
  assert.ok(!isAmbiguousMacAnswer(503, body(ambiguous, "503")));
  assert.ok(
    !isAmbiguousMacAnswer(500, ambiguous),
    "plain text is not the service's shape",
  );
  assert.ok(
    !isAmbiguousMacAnswer(
      500,
      body(
        "IPXE booting skipped. InfraEnv x: Host with mac 52:54:00:12:34:56: timeout",
      ),
    ),
  );
  assert.ok(
    !isAmbiguousMacAnswer(500, `<html>${ambiguous}</html>`),
    "a proxy page",
  );
  assert.ok(!isAmbiguousMacAnswer(500, body(`proxy: ${ambiguous}`)));
});

Deno.test("infraenv: withoutMac drops the mac parameter, every other byte stays", () => {
  assert.equal(
    withoutMac(
      "http://h/p?file_name=ipxe-script&mac=52%3A54%3A00%3A12%3A34%3A56",
    ),
    "http://h/p?file_name=ipxe-script",
  );
  assert.equal(
    withoutMac(
      "https://h/p?api_key=a.b%2Bc&file_name=ipxe-script&mac=52:54:00:12:34:56&x=1#f",
    ),
    "https://h/p?api_key=a.b%2Bc&file_name=ipxe-script&x=1#f",
  );
  assert.equal(withoutMac("http://h/p?mac=1&%6Dac=2"), "http://h/p");
  assert.equal(withoutMac("http://h/p?macx=1"), "http://h/p?macx=1");
  assert.equal(withoutMac("http://h/p"), "http://h/p");
});

Deno.test("infraenv: 'boot from the local disk' counts only from the first script's origin, never from a server a script names", async () => {
  const ID = "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b";
  const skipped = JSON.stringify({
    kind: "Error",
    reason:
      `IPXE booting skipped. InfraEnv ${ID}: host h having mac ${MAC} is already installed`,
  });
  const macPath = `/api/assisted-install/v2/infra-envs/${ID}/downloads/files`;
  const macQuery = `?file_name=ipxe-script&mac=${MAC}`;
  // The other server answers every MAC request "installed".
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(skipped, { status: 404 }),
  );
  const otherUrl = `http://127.0.0.1:${
    (other.addr as Deno.NetAddr).port
  }${macPath}${macQuery}`;
  let script = "";
  const service = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const u = new URL(req.url);
      // Its own MAC request: "installed" too (boot-order-control's chain).
      if (u.pathname === "/own" + macPath) {
        return new Response(skipped, { status: 404 });
      }
      return new Response(script);
    },
  );
  const origin = `http://127.0.0.1:${(service.addr as Deno.NetAddr).port}`;
  const sources = [
    { kind: "ipxe-url" as const, url: `${origin}/boot.ipxe` },
    {
      kind: "infraenv" as const,
      apiUrl: `${origin}/api`,
      infraEnvId: ID,
      auth: { kind: "none" as const },
      scriptType: "discovery-image-always",
    },
  ];
  try {
    for (const source of sources) {
      const resolve = () =>
        resolvePlan(createScriptClient(source, { ...fast, mac: MAC }), {
          settings: {},
        });
      // Another origin's answer is an API error (4), not a local boot.
      script = `#!ipxe\nchain ${otherUrl}\n`;
      await assert.rejects(resolve(), (err: unknown) => {
        assert.ok(err instanceof BootError, String(err));
        assert.ok(!(err instanceof LocalBootAnswer), source.kind);
        assert.equal(err.exitCode, ExitCode.Api, err.message);
        assert.match(err.message, /answered HTTP 404: IPXE booting skipped/);
        return true;
      });
      // Recovered with ||, then a failure of the script's own: exit 3.
      script = `#!ipxe\nchain ${otherUrl} || goto missing_label\n`;
      await assert.rejects(resolve(), (err: unknown) => {
        assert.ok(err instanceof BootError, String(err));
        assert.equal(err.exitCode, ExitCode.Script, err.message);
        return true;
      });
      // The service's own answer, to a MAC request its script chains, is.
      script = `#!ipxe\nchain ${origin}/own${macPath}${macQuery}\n`;
      const plan = await resolve();
      assert.equal(plan.action, "local-boot", source.kind);
    }
  } finally {
    await other.shutdown();
    await service.shutdown();
  }
});

/** A body sent `chunk` bytes at a time every `everyMs`, or stopping after `stopAfter` chunks. */
function trickle(
  text: string,
  options: { chunk: number; everyMs: number; stopAfter?: number },
): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  let sent = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  return new ReadableStream({
    start(controller) {
      timer = setInterval(() => {
        if (options.stopAfter !== undefined && sent >= options.stopAfter) {
          return;
        }
        try {
          controller.enqueue(bytes.subarray(at, at + options.chunk));
        } catch {
          clearInterval(timer);
          return;
        }
        at += options.chunk;
        sent++;
        if (at >= bytes.length) {
          clearInterval(timer);
          controller.close();
        }
      }, options.everyMs);
    },
    cancel() {
      clearInterval(timer);
    },
  });
}

Deno.test("infraenv: --timeout bounds the silence of a script or SSO body, not its whole read", async () => {
  const script = `#!ipxe\n${
    "echo padding\n".repeat(30)
  }kernel http://h/k\nboot\n`;
  const sso = JSON.stringify({
    access_token: "a".repeat(200),
    expires_in: 900,
    token_type: "Bearer",
  });
  let stall = false;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const json = new URL(req.url).pathname === "/sso";
      // 64 bytes every 200 ms: well over 1 s in all, never 1 s of silence.
      return new Response(
        trickle(json ? sso : script, {
          chunk: 64,
          everyMs: 200,
          stopAfter: stall ? 2 : undefined,
        }),
        { headers: json ? { "content-type": "application/json" } : {} },
      );
    },
  );
  const origin = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  const options = { retries: 0, baseDelayMs: 10, timeoutMs: 1000 };
  try {
    const started = Date.now();
    const client = createScriptClient(
      { kind: "ipxe-url", url: `${origin}/s` },
      options,
    );
    const got = await client.fetch(`${origin}/s`, { maxBytes: 65536 });
    assert.equal(text(got.body), script);
    assert.ok(Date.now() - started > 1000, "the read took longer than 1 s");
    const token = await exchangeRefreshToken(`${origin}/sso`, "r", options);
    assert.equal(token.token, "a".repeat(200));
    // A body that stops is cut after 1 s of silence.
    stall = true;
    await assert.rejects(
      client.fetch(`${origin}/s`, { maxBytes: 65536 }),
      /: no data for 1 s after 128 bytes$/,
    );
    await assert.rejects(
      exchangeRefreshToken(`${origin}/sso`, "r", options),
      /: no data for 1 s after 128 bytes$/,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("infraenv: an access token within 30 s of expiry is exchanged again before use; a fresh one is reused", async () => {
  for (const [ttl, exchanges] of [[20, 3], [120, 1]] as const) {
    const mock = await startMock({ authMode: "rhsso", accessTokenTtl: ttl });
    try {
      const tokens = createTokenProvider({
        kind: "refresh",
        refreshToken: mock.refreshToken,
        ssoUrl: mock.ssoUrl,
      }, fast);
      const values: (string | undefined)[] = [];
      for (let i = 0; i < 3; i++) values.push(await tokens.authorization());
      assert.ok(values.every((v) => v?.startsWith("Bearer ")), `${values}`);
      const ssoCalls = mock.requests.filter((r) =>
        r.path.includes("openid-connect")
      ).length;
      assert.equal(ssoCalls, exchanges, `expires_in ${ttl}`);
    } finally {
      await mock.close();
    }
  }
});
