/**
 * The bootloader behind an HTTP proxy given the way the initramfs and the
 * disk image give it, in the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
 * `NO_PROXY`), end to end (`main.ts --print-plan` against the mock, whose API
 * is served over https by a TLS front here; dev/proxy.ts in between):
 *
 * - https through the proxy is a CONNECT tunnel: the proxy relays the bearer
 *   token only inside TLS, never where it can read it; the same through the
 *   `--insecure` transport (curl), whose answer does not start with the
 *   proxy's own "200 Connection established";
 * - plain http through a proxy shows it everything, the token included (what
 *   docs/networks.md warns about);
 * - `NO_PROXY` sends a host around the proxy.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fakeKernel, startMock } from "../../dev/mock_infraenv.ts";
import { startProxy, type TestProxy } from "../../dev/proxy.ts";
import { makeTestCerts, withTemp } from "../test_util.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** An https front on 127.0.0.1 for the mock's API (the mock serves plain http). */
function tlsFront(dir: string, upstream: string) {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    cert: Deno.readTextFileSync(`${dir}/leaf.pem`),
    key: Deno.readTextFileSync(`${dir}/leaf.key`),
  }, async (req) => {
    const url = new URL(req.url);
    const res = await fetch(`${upstream}${url.pathname}${url.search}`, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: "manual",
    });
    return new Response(res.body, { status: res.status, headers: res.headers });
  });
  return {
    port: server.addr.port,
    origin: `https://127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}

function plan(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(["--print-plan", ...args], env);
}

async function run(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--no-host-settings", ...args],
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/root",
      NO_COLOR: "1",
      DENO_NO_UPDATE_CHECK: "1",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
      ...env,
    },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

async function withApi(
  body: (
    api: { mock: Awaited<ReturnType<typeof startMock>>; https: string },
    proxy: TestProxy,
    certs: string,
  ) => Promise<void>,
): Promise<void> {
  await withTemp(async (certs) => {
    await makeTestCerts(certs);
    const mock = await startMock();
    const front = tlsFront(certs, mock.baseUrl);
    const mockPort = Number(new URL(mock.baseUrl).port);
    const proxy = await startProxy({
      targets: {
        [`127.0.0.1:${front.port}`]: front.port,
        [`127.0.0.1:${mockPort}`]: mockPort,
      },
    });
    try {
      await body({ mock, https: front.origin }, proxy, certs);
    } finally {
      await proxy.close();
      await front.close();
      await mock.close();
    }
  });
}

Deno.test("proxy: https to the API goes through a CONNECT tunnel; the proxy never reads the bearer token (also with --insecure through curl)", async () => {
  await withApi(async ({ mock, https }, proxy, certs) => {
    const proxyUrl = `http://127.0.0.1:${proxy.port}`;
    const args = [
      "--api-url",
      `${https}/api`,
      "--infra-env-id",
      mock.infraEnvId,
      "--token",
      mock.accessToken,
    ];
    for (
      const [label, extra] of [
        ["verified", ["--ca-cert", `${certs}/ca.pem`]],
        ["--insecure", ["--insecure"]],
      ] as const
    ) {
      const before = proxy.requests.length;
      const seen = mock.requests.length;
      const r = await plan([...args, ...extra], { HTTPS_PROXY: proxyUrl });
      assert.equal(r.code, 0, `${label}: ${r.stderr}`);
      assert.ok(JSON.parse(r.stdout).kernel, r.stdout);
      const requests = proxy.requests.slice(before);
      assert.ok(requests.length > 0, `${label}: the proxy was not used`);
      for (const req of requests) {
        assert.equal(req.method, "CONNECT", `${label}: ${req.target}`);
        assert.equal(req.target, `127.0.0.1:${new URL(https).port}`);
        assert.equal(req.headers.authorization, undefined);
      }
      // The token reached the API, inside the tunnel.
      const api = mock.requests.slice(seen);
      assert.ok(
        api.some((q) =>
          q.headers.authorization === `Bearer ${mock.accessToken}`
        ),
        `${label}: ${JSON.stringify(api)}`,
      );
    }
    assert.ok(
      !proxy.relayed().includes(mock.accessToken),
      "the proxy relayed the token in the clear",
    );
  });
});

Deno.test("proxy: plain http through a proxy shows it the bearer token; NO_PROXY sends a host around it", async () => {
  await withApi(async ({ mock }, proxy) => {
    const proxyUrl = `http://127.0.0.1:${proxy.port}`;
    const args = [
      "--api-url",
      `${mock.baseUrl}/api`,
      "--infra-env-id",
      mock.infraEnvId,
      "--token",
      mock.accessToken,
    ];
    const r = await plan(args, { HTTP_PROXY: proxyUrl });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(proxy.requests.length > 0, "the proxy was not used");
    assert.ok(
      proxy.requests.some((q) =>
        q.method === "GET" &&
        q.headers.authorization === `Bearer ${mock.accessToken}`
      ),
      JSON.stringify(proxy.requests),
    );

    const before = proxy.requests.length;
    const around = await plan(args, {
      HTTP_PROXY: proxyUrl,
      NO_PROXY: "127.0.0.1",
    });
    assert.equal(around.code, 0, around.stderr);
    assert.equal(proxy.requests.length, before, "NO_PROXY was not honoured");
  });
});

Deno.test("proxy: --insecure (curl) behind a proxy: a 404 stays a 404, a 200's body is exactly the file, never the proxy's or the server's head", async () => {
  await withApi(async ({ mock, https }, proxy) => {
    const kernel = fakeKernel(8192);
    const initrd = new TextEncoder().encode('{"ignition":{}}\n');
    const env = { HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` };
    await withTemp(async (work) => {
      const args = [
        "--ipxe-url",
        `${mock.baseUrl}/script`,
        "--insecure",
        "--no-cache",
        "--no-kexec",
        "--progress",
        "none",
        "--retries",
        "0",
        "--work-dir",
        `${work}/w`,
      ];
      mock.update({
        files: {
          "/k": kernel,
          "/config.ign": initrd,
          "/script": new TextEncoder().encode(
            `#!ipxe\nkernel ${https}/k\ninitrd ${https}/config.ign /etc/config.ign\nboot\n`,
          ),
        },
      });
      const ok = await run(args, env);
      assert.equal(ok.code, 0, ok.stderr);
      const out = JSON.parse(ok.stdout);
      const sha = (b: Uint8Array) =>
        createHash("sha256").update(b).digest("hex");
      assert.equal(out.kernel.sha256, sha(kernel));
      assert.equal(out.initrd.parts[0].sha256, sha(initrd));
      assert.ok(
        proxy.requests.some((q) => q.method === "CONNECT"),
        "the proxy was not used",
      );
      mock.update({
        files: {
          "/k": kernel,
          "/script": new TextEncoder().encode(
            `#!ipxe\nkernel ${https}/k\ninitrd ${https}/nonexistent /etc/config.ign\nboot\n`,
          ),
        },
      });
      const missing = await run(args, env);
      assert.equal(missing.code, 5, missing.stderr);
      assert.match(
        missing.stderr.trim().split("\n").at(-1)!,
        /error: Cannot download https:.*\/nonexistent: HTTP 404/,
      );
    });
  });
});
