/**
 * The CLI (`deno run -A main.ts … --print-plan | --no-kexec`) against a mock
 * that behaves like a hostile server or a careless user: scripts that name
 * local files, redirects to `file:`/`data:`/plain http or with a malformed
 * `Location`, an SSO that redirects or never stops talking, pins spelled
 * differently or naming nothing, timeouts no timer can wait, tokens that
 * cannot go in a header, escape sequences in what servers say, credentials in
 * URLs. Each run ends in a verified success or a one-line error with its
 * documented exit code; never exit 1, never a secret or a raw control
 * character on the terminal.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createFaults, type FaultLayer } from "../../dev/faults.ts";
import {
  fakeKernel,
  type MockInfraEnv,
  type MockOptions,
  startMock,
} from "../../dev/mock_infraenv.ts";
import { ExitCode } from "../../lib/errors.ts";
import { makeTestCerts } from "../test_util.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const SECRET = "SECRET-offline-token-0123456789";
const KERNEL_PATH = "/boot-artifacts/kernel";
const SCRIPT_PATH = "/downloads/files";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

interface Env {
  mock: MockInfraEnv;
  faults: FaultLayer;
  tmp: string;
  /** A file holding a secret, the thing a hostile script wants. */
  secretFile: string;
  /** Runs the CLI with `args` (no script source added) and an extra environment. */
  cli(args: string[], env?: Record<string, string>): Promise<Run>;
  /** The SaaS source: API, SSO, InfraEnv id, offline token file. */
  saas: string[];
}

async function withEnv(
  options: MockOptions,
  fn: (env: Env) => Promise<void>,
): Promise<void> {
  const faults = createFaults();
  const mock = await startMock({ authMode: "rhsso", ...options, faults });
  const tmp = await Deno.makeTempDir({ prefix: "hostile-test-" });
  const secretFile = `${tmp}/offline-token`;
  await Deno.writeTextFile(secretFile, SECRET, { mode: 0o600 });
  const refresh = `${tmp}/refresh-token`;
  await Deno.writeTextFile(refresh, mock.refreshToken, { mode: 0o600 });
  const cli = async (
    args: string[],
    extra: Record<string, string> = {},
  ): Promise<Run> => {
    const env: Record<string, string> = {
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
      ASSISTED_RETRIES: "1",
      ASSISTED_TIMEOUT: "5",
      ...extra,
    };
    for (const name of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
      const value = Deno.env.get(name);
      if (value !== undefined) env[name] ??= value;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--no-host-settings",
        "--mac",
        "52:54:00:12:34:56",
        "--work-dir",
        `${tmp}/work`,
        "--progress",
        "none",
        ...args,
      ],
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  };
  const saas = [
    "--api-url",
    mock.apiUrl,
    "--sso-url",
    mock.ssoUrl,
    "--infra-env-id",
    mock.infraEnvId,
    "--refresh-token-file",
    refresh,
  ];
  try {
    await fn({ mock, faults, tmp, secretFile, cli, saas });
  } finally {
    faults.release();
    await mock.close();
    await Deno.remove(tmp, { recursive: true });
  }
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** Nothing a server or the test's secret file holds reaches the output raw. */
function assertClean(r: Run): void {
  const all = r.stdout + r.stderr;
  assert.ok(!all.includes(SECRET), `the secret leaked\n${show(r)}`);
  // deno-lint-ignore no-control-regex
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/.exec(all);
  assert.equal(raw, null, `raw control character\n${show(r)}`);
  assert.ok(!/^\s+at /m.test(r.stderr), `no stack trace\n${show(r)}`);
}

/** A one-line error with `code`: nothing on stdout, the last line matches. */
function assertFailed(r: Run, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, show(r));
  assert.equal(r.stdout, "", show(r));
  const last = r.stderr.trim().split("\n").at(-1) ?? "";
  assert.match(last, /^assisted-bootloader: error: /, show(r));
  assert.match(last, pattern, show(r));
  assertClean(r);
}

function sha(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const enc = new TextEncoder();
const GZIP_INITRD = new Uint8Array([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3]);

/** A mock without auth that serves a kernel at `/k` and an initrd at `/i.img` on its API origin. */
const SCRIPTED: MockOptions = {
  authMode: "none",
  files: { "/k": fakeKernel(), "/i.img": GZIP_INITRD },
};

/** Serves `text` at `/s.ipxe` on the mock's API origin through the fault layer. */
function serveScript(env: Env, text: string): string {
  env.faults.add({
    match: { server: "api", path: "/s.ipxe" },
    fault: { kind: "status", status: 200, body: text },
  });
  return `${env.mock.baseUrl}/s.ipxe`;
}

// ---- 3. local files only when the user asked for them ----

Deno.test(
  "hostile: a remote script cannot pack local files into the initrd",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      for (
        const line of [
          `initrd file://${env.secretFile} /etc/x`,
          "initrd file:///proc/self/environ",
          `initrd FILE://${env.secretFile}`,
          `chain file://${env.secretFile}`,
        ]
      ) {
        env.faults.clear();
        const url = serveScript(
          env,
          `#!ipxe\n${line}\nkernel ${env.mock.baseUrl}/k\nboot\n`,
        );
        for (const mode of ["--print-plan", "--no-kexec"]) {
          const r = await env.cli(["--ipxe-url", url, mode]);
          assertFailed(
            r,
            ExitCode.Script,
            /cannot name local files \(file: URLs are allowed in a file: script only\)/,
          );
        }
      }
      // The API's script is remote too.
      env.mock.update({
        authMode: "rhsso",
        scriptOverride:
          `#!ipxe\ninitrd file://${env.secretFile}\nkernel ${env.mock.baseUrl}/k\nboot\n`,
      });
      const r = await env.cli([...env.saas, "--no-kexec"]);
      assertFailed(r, ExitCode.Script, /cannot name local files/);
    });
  },
);

Deno.test(
  "hostile: redirects to file: or data: are refused for artifacts (5), the first script and chains (4)",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      const base = env.mock.baseUrl;
      env.faults.add({
        match: { path: "/to-file" },
        fault: { kind: "redirect", location: `file://${env.secretFile}` },
      });
      env.faults.add({
        match: { path: "/to-data" },
        fault: {
          kind: "redirect",
          location:
            "data:application/octet-stream;base64,H4sIAAAAAAAAAwMAAAAAAAAAAAA=",
          status: 307,
        },
      });
      for (const target of ["/to-file", "/to-data"]) {
        const url = serveScript(
          env,
          `#!ipxe\ninitrd ${base}${target}\nkernel ${base}/k\nboot\n`,
        );
        const r = await env.cli(["--ipxe-url", url, "--no-kexec"]);
        assertFailed(
          r,
          ExitCode.Download,
          /Cannot download .*: HTTP 30[27] redirects to (file|data):.*, refused \(redirects lead to http or https only\)/,
        );
        env.faults.clear();
        env.faults.add({
          match: { path: "/to-file" },
          fault: { kind: "redirect", location: `file://${env.secretFile}` },
        });
        env.faults.add({
          match: { path: "/to-data" },
          fault: { kind: "redirect", location: "data:text/plain,#!ipxe" },
        });
      }
      // The first script.
      const first = await env.cli([
        "--ipxe-url",
        `${base}/to-file`,
        "--print-plan",
      ]);
      assertFailed(
        first,
        ExitCode.Api,
        /Cannot fetch .*\/to-file: .*redirects to file:.*, refused/,
      );
      // A chained script: the chain command fails, the script with it, and
      // the refused fetch is the exit code's cause.
      const url = serveScript(env, `#!ipxe\nchain ${base}/to-data\n`);
      const chained = await env.cli(["--ipxe-url", url, "--print-plan"]);
      assertFailed(
        chained,
        ExitCode.Api,
        /chain .*\/to-data: .*redirects to data:.*, refused/,
      );
      // The API's script.
      env.mock.update({ authMode: "rhsso" });
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "redirect", location: `file://${env.secretFile}` },
      });
      const api = await env.cli([...env.saas, "--print-plan"]);
      assertFailed(api, ExitCode.Api, /redirects to file:.*, refused/);
    });
  },
);

Deno.test(
  "hostile: a file: first script may name local files; its remote chain may not",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      await Deno.writeFile(`${env.tmp}/vmlinuz`, fakeKernel());
      await Deno.writeFile(`${env.tmp}/initrd.img`, GZIP_INITRD);
      await Deno.writeTextFile(
        `${env.tmp}/boot.ipxe`,
        `#!ipxe\ninitrd initrd.img\ninitrd ${env.mock.baseUrl}/i.img\nkernel vmlinuz\nboot\n`,
      );
      const r = await env.cli([
        "--ipxe-url",
        `file://${env.tmp}/boot.ipxe`,
        "--no-kexec",
      ]);
      assert.equal(r.code, 0, show(r));
      const out = JSON.parse(r.stdout);
      assert.equal(out.kernel.sha256, sha(fakeKernel()));
      assert.equal(out.initrd.parts.length, 2);
      const remote = serveScript(
        env,
        `#!ipxe\ninitrd file://${env.secretFile}\nkernel ${env.mock.baseUrl}/k\nboot\n`,
      );
      await Deno.writeTextFile(
        `${env.tmp}/boot.ipxe`,
        `#!ipxe\nchain ${remote}\n`,
      );
      assertFailed(
        await env.cli([
          "--ipxe-url",
          `file://${env.tmp}/boot.ipxe`,
          "--print-plan",
        ]),
        ExitCode.Script,
        /s\.ipxe line 2: .*cannot name local files/,
      );
    });
  },
);

Deno.test(
  "hostile: https → http redirects are refused (scripts 4, artifacts 5) unless --insecure",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      await makeTestCerts(env.tmp);
      const plainScript =
        `#!ipxe\ninitrd ${env.mock.baseUrl}/i.img\nkernel ${env.mock.baseUrl}/k\nboot\n`;
      let tlsBase = "";
      const tls = Deno.serve({
        hostname: "127.0.0.1",
        port: 0,
        onListen() {},
        cert: await Deno.readTextFile(`${env.tmp}/leaf.pem`),
        key: await Deno.readTextFile(`${env.tmp}/leaf.key`),
      }, (req) => {
        const path = new URL(req.url).pathname;
        const down = (to: string) =>
          new Response(null, { status: 302, headers: { location: to } });
        if (path === "/down.ipxe") return down(serveScript(env, plainScript));
        if (path === "/boot.ipxe") {
          return new Response(
            `#!ipxe\ninitrd ${tlsBase}/i.img\nkernel ${tlsBase}/k\nboot\n`,
          );
        }
        if (path === "/k") return down(`${env.mock.baseUrl}/k`);
        if (path === "/i.img") return new Response(GZIP_INITRD as BodyInit);
        return new Response("not found", { status: 404 });
      });
      tlsBase = `https://127.0.0.1:${tls.addr.port}`;
      const ca = ["--ca-cert", `${env.tmp}/ca.pem`];
      try {
        assertFailed(
          await env.cli([
            "--ipxe-url",
            `${tlsBase}/down.ipxe`,
            ...ca,
            "--print-plan",
          ]),
          ExitCode.Api,
          /redirects from https to plain http .*refused \(--insecure allows it\)/,
        );
        assertFailed(
          await env.cli([
            "--ipxe-url",
            `${tlsBase}/boot.ipxe`,
            ...ca,
            "--no-kexec",
          ]),
          ExitCode.Download,
          /Cannot download https:.*\/k: .*redirects from https to plain http/,
        );
        const insecure = await env.cli([
          "--ipxe-url",
          `${tlsBase}/boot.ipxe`,
          "--insecure",
          "--no-kexec",
        ]);
        assert.equal(insecure.code, 0, show(insecure));
        assert.equal(
          JSON.parse(insecure.stdout).kernel.sha256,
          sha(fakeKernel()),
        );
      } finally {
        await tls.shutdown();
      }
    });
  },
);

// ---- 4. the SSO exchange ----

Deno.test(
  "hostile: an SSO that redirects never gets the offline token re-posted; an endless answer is cut",
  async () => {
    await withEnv({}, async (env) => {
      env.faults.add({
        match: { path: "openid-connect" },
        fault: {
          kind: "redirect",
          status: 307,
          location: `${env.mock.imageBaseUrl}/collect`,
        },
      });
      const r = await env.cli([...env.saas, "--print-plan"]);
      assertFailed(
        r,
        ExitCode.Api,
        /SSO at .* answered HTTP 307 \(a redirect to .*\/collect\): not followed/,
      );
      assert.deepEqual(
        env.mock.requests.filter((q) => q.server === "image"),
        [],
        "nothing reached the redirect's target",
      );
      env.faults.clear();
      env.faults.add({
        match: { path: "openid-connect" },
        fault: { kind: "endless" },
      });
      const started = Date.now();
      const endless = await env.cli([...env.saas, "--print-plan"]);
      assertFailed(endless, ExitCode.Api, /answered more than \d+ bytes/);
      assert.ok(Date.now() - started < 15_000, "cut, not read to the end");
      // A valid JSON answer that is not an object.
      env.faults.clear();
      env.faults.add({
        match: { path: "openid-connect" },
        fault: { kind: "status", status: 200, body: "null" },
      });
      assertFailed(
        await env.cli([...env.saas, "--print-plan"]),
        ExitCode.Api,
        /SSO at .* answered with JSON that is not an object \(null\)/,
      );
      // Plain http: one warning per token kind, the run goes on.
      env.faults.clear();
      const ok = await env.cli([...env.saas, "--print-plan"]);
      assert.equal(ok.code, 0, show(ok));
      assert.equal(
        ok.stderr.match(/The offline token is sent over plain http/g)?.length,
        1,
      );
      assert.equal(
        ok.stderr.match(/The API token is sent over plain http/g)?.length,
        1,
      );
    });
  },
);

// ---- 5. pins fail closed ----

Deno.test(
  "hostile: a pin spelled differently still binds; one that names nothing is exit 2, also after a refetch",
  async () => {
    const extra = enc.encode("extra initrd bytes");
    await withEnv({
      extraInitrds: [{ name: "a.img", body: extra, wrapAs: "/etc/a" }],
    }, async (env) => {
      const kernelUrl =
        `${env.mock.imageBaseUrl}/api/assisted-images/boot-artifacts/kernel?arch=x86_64&version=4.18`;
      const respelled = kernelUrl.replace("http://", "HTTP://").replace(
        "/boot-artifacts/",
        "/x/../boot-artifacts/./",
      );
      const wrong = await env.cli([
        ...env.saas,
        "--no-kexec",
        "--artifact-sha256",
        `${respelled}=${"ab".repeat(32)}`,
      ]);
      assertFailed(wrong, ExitCode.Verify, /sha256 mismatch for .*kernel/);
      for (const mode of ["--print-plan", "--no-kexec"]) {
        const none = await env.cli([
          ...env.saas,
          mode,
          "--artifact-sha256",
          `${env.mock.imageBaseUrl}/kernel.img=${"ab".repeat(32)}`,
        ]);
        assertFailed(none, ExitCode.Usage, /matches no kernel or initrd/);
      }
      for (const hex of ["a".repeat(32), "a".repeat(63), "a".repeat(65)]) {
        const short = await env.cli([
          ...env.saas,
          "--print-plan",
          "--artifact-sha256",
          `${kernelUrl}=${hex}`,
        ]);
        assertFailed(short, ExitCode.Usage, /64 hexadecimal digits/);
      }
      // The signed initrd expires (at its download, not at the preflight's
      // HEAD); the script fetched again no longer has a.img.
      env.faults.add({
        match: { method: "GET", path: "/pxe-initrd" },
        fault: {
          kind: "before",
          run: () => {
            env.mock.expireImageTokens();
            env.mock.update({ extraInitrds: [] });
          },
        },
        times: 1,
      });
      const aUrl = `${env.mock.imageBaseUrl}/api/assisted-images/extra/a.img`;
      const refetched = await env.cli([
        ...env.saas,
        "--no-kexec",
        "--artifact-sha256",
        `${aUrl}=${sha(extra)}`,
      ]);
      assertFailed(
        refetched,
        ExitCode.Usage,
        /--artifact-sha256 .*\/extra\/a\.img matches no kernel or initrd/,
      );
    });
  },
);

// ---- 7. bounds and malformed input ----

Deno.test(
  "hostile: --timeout beyond a timer, a malformed Location, a token no header can carry",
  async () => {
    await withEnv({}, async (env) => {
      for (
        const [args, extra, where] of [
          [["--timeout", "2147484"], {}, "--timeout"],
          [[], { ASSISTED_TIMEOUT: "9999999999" }, "variable ASSISTED_TIMEOUT"],
        ] as const
      ) {
        const r = await env.cli([...env.saas, "--print-plan", ...args], extra);
        assertFailed(
          r,
          ExitCode.Usage,
          new RegExp(`${where} must be at most 2147483`),
        );
      }
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "redirect", location: "http://[::1" },
      });
      assertFailed(
        await env.cli([...env.saas, "--no-kexec"]),
        ExitCode.Download,
        /Cannot download .*kernel.*: HTTP 302 with a malformed Location "http:\/\/\[::1"/,
      );
      env.faults.clear();
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "redirect", location: "https://exa mple/" },
      });
      assertFailed(
        await env.cli([...env.saas, "--print-plan"]),
        ExitCode.Api,
        /Cannot fetch .*: .*HTTP 302 with a malformed Location "https:\/\/exa mple\/"/,
      );
      const id = [
        "--api-url",
        env.mock.apiUrl,
        "--infra-env-id",
        env.mock.infraEnvId,
        "--print-plan",
      ];
      const tokenFile = `${env.tmp}/bad-token`;
      await Deno.writeTextFile(tokenFile, "access-\u0442oken\n", {
        mode: 0o600,
      });
      for (
        const [args, extra] of [
          [["--token", "access-\u{1f511}"], {}],
          [[], { ASSISTED_TOKEN: "acc\u00e9ss" }],
          [["--token-file", tokenFile], {}],
        ] as const
      ) {
        const r = await env.cli([...id, ...args], extra);
        assertFailed(r, ExitCode.Usage, /cannot be sent in an HTTP header/);
      }
    });
  },
);

// ---- 9. what reaches the terminal and the journal ----

Deno.test(
  "hostile: escape sequences from scripts and error bodies are neutralised; user:password@ is redacted",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      const url = serveScript(
        env,
        "#!ipxe\necho \x1b]0;owned\x07\x1b[2J\x1b[1A\x9b31m\u202eevil\nset nl:hex 0a\necho forged${nl:string}assisted-bootloader: kernel verified\nchain " +
          `${env.mock.baseUrl}/denied\n`,
      );
      env.faults.add({
        match: { path: "/denied" },
        fault: {
          kind: "status",
          status: 403,
          body: "\x1b[31mdenied\x1b[0m\r\nassisted-bootloader: all good",
        },
      });
      const withCreds = url.replace("http://", "http://admin:pa55word@");
      const r = await env.cli(["--ipxe-url", withCreds, "--print-plan"]);
      assertFailed(r, ExitCode.Api, /denied/);
      assert.match(r.stderr, /script: \\x1b\]0;owned\\x07\\x1b\[2J/);
      assert.match(r.stderr, /\\u\{202e\}evil/);
      for (const line of r.stderr.trim().split("\n")) {
        assert.match(line, /^assisted-bootloader: /, line);
        assert.ok(
          !/^assisted-bootloader: (kernel verified|all good)/.test(line),
          `a forged line: ${line}`,
        );
      }
      assert.ok(!r.stderr.includes("pa55word"), show(r));
      assert.match(r.stderr, /http:\/\/REDACTED@127\.0\.0\.1/);
      // An API error body with escapes, through the first script.
      env.mock.update({ authMode: "rhsso" });
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: {
          kind: "status",
          status: 500,
          body: '{"code":"500","reason":"\\u001b[2Jwiped\\u0007"}',
        },
      });
      const api = await env.cli([...env.saas, "--print-plan"]);
      assertFailed(api, ExitCode.Api, /\\x1b\[2Jwiped\\x07/);
    });
  },
);

Deno.test(
  "hostile: credentials in any spelling never reach a log line, URLs with one are never cached, and a log line cannot name another host",
  async () => {
    await withEnv(SCRIPTED, async (env) => {
      const base = env.mock.baseUrl;
      const url = serveScript(
        env,
        `#!ipxe\nkernel ${base}/k?api%5Fkey=SECRETVALUE3&arch=x86_64\ninitrd ${base}/i.img?%61pi_key=SECRETVALUE4\ninitrd ${base}/i.img?image%5ftoken=SECRET%22VALUE5\nboot\n`,
      );
      for (const password of ["pa'ss", 'pa"ss', "p<a>ss"]) {
        const withCreds = url.replace(
          "http://",
          `http://user:${encodeURIComponent(password)}@`,
        );
        for (const mode of [["--print-plan"], ["--no-kexec", "--verbose"]]) {
          const r = await env.cli(["--ipxe-url", withCreds, ...mode]);
          assert.equal(r.code, 0, show(r));
          // As written, percent-encoded, or with its quote escaped.
          const said = r.stderr.replaceAll("\\", "");
          for (
            const secret of ["SECRET", password, encodeURIComponent(password)]
          ) {
            assert.ok(!said.includes(secret), `${secret}\n${show(r)}`);
          }
          assert.match(
            r.stderr,
            /fetching the iPXE script http:\/\/REDACTED@127/,
          );
          assert.match(
            r.stderr,
            /plan: kernel http:\/\/127\.0\.0\.1:\d+\/k\?api%5Fkey=REDACTED&arch=x86_64, 2 initrd\(s\)/,
          );
        }
      }
      // Nothing of a URL with a credential was kept in the cache.
      let cache: string[] = [];
      try {
        cache = [...Deno.readDirSync(`${env.tmp}/work/cache`)].map((e) =>
          e.name
        );
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      assert.deepEqual(cache, [], cache.join(" "));
      // A backslash ends the host: the line names the host that is fetched.
      const port = new URL(base).port;
      env.faults.clear();
      const deceptive = serveScript(
        env,
        `#!ipxe\nkernel http://127.0.0.1:${port}\\@good.example.com/k\nboot\n`,
      );
      const r = await env.cli(["--ipxe-url", deceptive, "--print-plan"]);
      assert.equal(r.code, 0, show(r));
      assert.match(
        r.stderr,
        new RegExp(
          `plan: kernel http://127\\.0\\.0\\.1:${port}/@good\\.example\\.com/k,`,
        ),
      );
      assert.ok(!/REDACTED@good/.test(r.stderr), show(r));
    });
  },
);

Deno.test(
  "hostile: a token file others can read is warned about by name",
  async () => {
    await withEnv({}, async (env) => {
      const file = `${env.tmp}/token`;
      await Deno.writeTextFile(file, env.mock.accessToken, { mode: 0o600 });
      await Deno.chmod(file, 0o644);
      const r = await env.cli([
        "--api-url",
        env.mock.apiUrl,
        "--infra-env-id",
        env.mock.infraEnvId,
        "--token-file",
        file,
        "--print-plan",
      ]);
      assert.equal(r.code, 0, show(r));
      assert.match(
        r.stderr,
        new RegExp(
          `warn: Token file ${file} is readable by other users \\(mode 0644\\): chmod 600 ${file}`,
        ),
      );
    });
  },
);

Deno.test(
  "hostile: the bearer token stays on the API path: a same-origin redirect off it gets none",
  async () => {
    await withEnv({}, async (env) => {
      const real = await fetch(
        `${env.mock.apiUrl}/assisted-install/v2/infra-envs/${env.mock.infraEnvId}/downloads/files?file_name=ipxe-script`,
        { headers: { authorization: `Bearer ${env.mock.accessToken}` } },
      ).then((res) => res.text());
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "redirect", location: "/elsewhere/boot.ipxe" },
      });
      env.faults.add({
        match: { server: "api", path: "/elsewhere/" },
        fault: { kind: "status", status: 200, body: real },
      });
      const before = env.mock.requests.length;
      const r = await env.cli([...env.saas, "--print-plan"]);
      assert.equal(r.code, 0, show(r));
      const seen = env.mock.requests.slice(before).filter((q) =>
        q.method === "GET"
      ).map((
        q,
      ) => [q.path.split("?")[0], q.headers.authorization?.split(" ")[0]]);
      assert.deepEqual(seen, [
        [
          `/api/assisted-install/v2/infra-envs/${env.mock.infraEnvId}/downloads/files`,
          "Bearer",
        ],
        ["/elsewhere/boot.ipxe", undefined],
      ]);
    });
  },
);
