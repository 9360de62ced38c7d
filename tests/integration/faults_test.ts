/**
 * Fault injection: the real CLI (`deno run -A main.ts … --no-kexec`) against
 * the mock InfraEnv with one fault switched on per test. Each run must end in
 * a verified success (the printed sha256 and size are those of the bytes the
 * server really sent in one complete answer) or in a one-line error with the
 * documented exit code, no JSON on stdout, and no file at a final name
 * (`kernel`, `kernel.Image`, `initrd`) left in the work directory.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ExitCode } from "../../lib/errors.ts";
import { lockWorkDir } from "../../lib/stage/work_dir.ts";
import { createFaults, type FaultLayer } from "../../dev/faults.ts";
import {
  fakeKernel,
  type MockInfraEnv,
  type MockOptions,
  startMock,
} from "../../dev/mock_infraenv.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const KERNEL_PATH = "/boot-artifacts/kernel";
const INITRD_PATH = "/pxe-initrd";
const SCRIPT_PATH = "/downloads/files";
const FINAL_NAMES = ["kernel", "kernel.Image", "initrd"];

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function randomBytes(size: number, head: number[] = []): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(size, at + 65536)));
  }
  out.set(head, 0);
  return out;
}

/** A bzImage-looking kernel (2 MiB by default) with random contents; its header claims its whole size. */
function bigKernel(size = 2 << 20): Uint8Array {
  const kernel = randomBytes(size);
  kernel.set(fakeKernel(size).subarray(0, 1024), 0);
  return kernel;
}

/** A 512 KiB gzip-looking base initrd, so the pxe-initrd can be cut mid-body. */
function bigInitrd(): Uint8Array {
  return randomBytes(512 << 10, [0x1f, 0x8b, 0x08, 0x00]);
}

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

interface Env {
  mock: MockInfraEnv;
  faults: FaultLayer;
  kernel: Uint8Array;
  work: string;
  tmp: string;
  run(extra?: string[], args?: { timeoutMs?: number }): Promise<CliResult>;
}

/** Starts a mock with a fault layer and a temp dir, runs `fn`, cleans up. */
async function withMock(
  options: MockOptions,
  fn: (env: Env) => Promise<void>,
): Promise<void> {
  const faults = createFaults();
  const kernel = options.kernel instanceof Uint8Array
    ? options.kernel
    : bigKernel();
  const mock = await startMock({
    authMode: "rhsso",
    kernel,
    initrd: bigInitrd(),
    ...options,
    faults,
  });
  const tmp = await Deno.makeTempDir({ prefix: "faults-test-" });
  const work = `${tmp}/work`;
  await Deno.writeTextFile(`${tmp}/refresh-token`, mock.refreshToken);
  const run = async (
    extra: string[] = [],
    args: { timeoutMs?: number } = {},
  ): Promise<CliResult> => {
    const env: Record<string, string> = {
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      // The faults are the downloads': the preflight's HEADs would take them
      // (its own faults are in preflight_test).
      ASSISTED_NO_PREFLIGHT: "1",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    };
    for (const name of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
      const value = Deno.env.get(name);
      if (value !== undefined) env[name] = value;
    }
    const started = Date.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--api-url",
        mock.apiUrl,
        "--sso-url",
        mock.ssoUrl,
        "--infra-env-id",
        mock.infraEnvId,
        "--refresh-token-file",
        `${tmp}/refresh-token`,
        "--mac",
        "52:54:00:12:34:56",
        "--no-host-settings",
        "--no-kexec",
        "--work-dir",
        work,
        "--progress",
        "none",
        "--retries",
        "2",
        "--timeout",
        "5",
        ...extra,
      ],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, args.timeoutMs ?? 30_000);
    const out = await child.output();
    clearTimeout(timer);
    const result = {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
      ms: Date.now() - started,
    };
    return result;
  };
  try {
    await fn({ mock, faults, kernel, work, tmp, run });
  } finally {
    faults.release();
    await mock.close();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

function show(r: CliResult): string {
  return `exit ${r.code} after ${r.ms} ms\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

async function fileSha256(path: string): Promise<string> {
  return sha256(await Deno.readFile(path));
}

interface Printed {
  kernel: { path: string; size: number; sha256: string; url: string };
  initrd?: {
    path: string;
    size: number;
    sha256: string;
    parts: { url: string; size: number; sha256: string; offset: number }[];
  };
}

/**
 * A verified success: exit 0, the JSON's kernel is the true kernel, each
 * initrd part is the body of one complete answer the server sent for that
 * URL path, and the files on disk hold exactly what the JSON says.
 */
async function assertVerified(env: Env, r: CliResult): Promise<Printed> {
  assert.equal(r.code, 0, show(r));
  const printed = JSON.parse(r.stdout) as Printed;
  assert.equal(printed.kernel.sha256, sha256(env.kernel), show(r));
  assert.equal(printed.kernel.size, env.kernel.length);
  assert.equal(await fileSha256(printed.kernel.path), sha256(env.kernel));
  assert.ok(printed.initrd, "the plan has an initrd");
  const assembled = await Deno.readFile(printed.initrd.path);
  assert.equal(sha256(assembled), printed.initrd.sha256);
  assert.equal(assembled.length, printed.initrd.size);
  for (const part of printed.initrd.parts) {
    const path = new URL(part.url).pathname;
    const complete = env.faults.served.filter((s) =>
      s.status === 200 && s.complete && s.path.startsWith(path)
    );
    assert.ok(
      complete.some((s) => s.sha256 === part.sha256 && s.size === part.size),
      `initrd part ${path} (${part.sha256}) matches no complete answer\n${
        show(r)
      }`,
    );
    const slice = assembled.subarray(part.offset, part.offset + part.size);
    assert.equal(sha256(slice), part.sha256, "part bytes in the assembly");
  }
  return printed;
}

/**
 * A clean failure: the exit code, no JSON on stdout, a last error line
 * matching `pattern`, no stack trace, and no file at a final name in the work
 * directory.
 */
async function assertFailed(
  env: Env,
  r: CliResult,
  code: number,
  pattern: RegExp,
): Promise<void> {
  assert.equal(r.code, code, show(r));
  assert.equal(r.stdout.trim(), "", `no result printed\n${show(r)}`);
  const lines = r.stderr.trim().split("\n");
  const last = lines.at(-1) ?? "";
  assert.match(last, /^assisted-bootloader: error: /, show(r));
  assert.match(last, pattern, show(r));
  assert.ok(
    !lines.some((l) => /^\s+at /.test(l)),
    `no stack trace\n${show(r)}`,
  );
  for (const name of FINAL_NAMES) {
    const exists = await Deno.stat(`${env.work}/${name}`).then(
      () => true,
      () => false,
    );
    assert.ok(
      !exists,
      `after a failure the work dir must hold no ${name} that could pass for verified\n${
        show(r)
      }`,
    );
  }
}

// ---- the fault layer itself (no CLI) ----

Deno.test("fault layer: reset, short and stall cut the body; served records what was sent", async () => {
  const faults = createFaults();
  const body = randomBytes(300_000);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      faults.handle(
        req,
        "test",
        () => Promise.resolve(new Response(body as BodyInit)),
      ),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    faults.add({
      match: { path: "/reset" },
      fault: { kind: "reset", afterBytes: 1000 },
    });
    faults.add({
      match: { path: "/short" },
      fault: { kind: "short", afterBytes: 1000 },
    });
    faults.add({
      match: { path: "/stall" },
      fault: { kind: "stall", afterBytes: 1000 },
    });
    faults.add({
      match: { path: "/busy" },
      fault: { kind: "status", status: 503, headers: { "retry-after": "1" } },
      times: 1,
    });
    for (const path of ["/reset", "/short"]) {
      const res = await fetch(base + path);
      assert.equal(res.headers.get("content-length"), "300000");
      await assert.rejects(res.arrayBuffer(), `${path} body must fail`);
    }
    const stalled = await fetch(base + "/stall", {
      signal: AbortSignal.timeout(300),
    });
    await assert.rejects(stalled.arrayBuffer());
    const busy = await fetch(base + "/busy");
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get("retry-after"), "1");
    await busy.body?.cancel();
    const ok = new Uint8Array(
      await (await fetch(base + "/busy")).arrayBuffer(),
    );
    assert.equal(sha256(ok), sha256(body));
    const last = faults.served.at(-1)!;
    assert.equal(last.complete, true);
    assert.equal(last.sha256, sha256(body));
    const cut = faults.served.filter((s) => s.fault === "reset");
    assert.equal(cut[0].complete, false);
    assert.equal(cut[0].size, 1000);
  } finally {
    faults.release();
    await server.shutdown();
  }
});

Deno.test("fault layer: edit drops request headers, rewrites answer headers, ends a body early without a length", async () => {
  const faults = createFaults();
  const body = randomBytes(100_000);
  const seen: Headers[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      faults.handle(req, "test", (inner) => {
        seen.push(inner.headers);
        return Promise.resolve(
          new Response(body as BodyInit, {
            headers: { etag: '"a"', "content-range": "bytes 0-9/10" },
          }),
        );
      }),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    let ran = 0;
    faults.add({
      match: { path: "/edit" },
      fault: {
        kind: "edit",
        run: () => void ran++,
        dropRequest: ["if-range"],
        setResponse: {
          etag: '"b"',
          "content-range": (v) => v?.replace("/10", "/11") ?? null,
          "content-length": null,
        },
        endAfter: 1000,
      },
    });
    const res = await fetch(base + "/edit", {
      headers: { "if-range": '"a"', range: "bytes=5-" },
    });
    assert.equal(ran, 1);
    assert.equal(seen[0].get("if-range"), null, "the server never saw it");
    assert.equal(seen[0].get("range"), "bytes=5-");
    assert.equal(res.headers.get("etag"), '"b"');
    assert.equal(res.headers.get("content-range"), "bytes 0-9/11");
    assert.equal(res.headers.get("content-length"), null);
    const got = new Uint8Array(await res.arrayBuffer());
    assert.equal(got.length, 1000, "ends early, and looks complete");
    assert.equal(faults.served.at(-1)!.complete, false);
  } finally {
    faults.release();
    await server.shutdown();
  }
});

// ---- connection reset mid-body ----

Deno.test(
  "fault: kernel connection reset mid-body resumes and verifies",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "reset", afterBytes: 700_000 },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const kernelGets = env.mock.requests.filter((q) =>
        q.path.includes(KERNEL_PATH)
      );
      assert.ok(kernelGets.length >= 2, show(r));
      assert.ok(
        kernelGets.some((q) =>
          q.headers.range?.startsWith("bytes=") && q.status === 206
        ),
        "the retry resumed with Range",
      );
    });
  },
);

Deno.test(
  "fault: pxe-initrd connection reset mid-body restarts from 0 and verifies",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: INITRD_PATH },
        fault: { kind: "reset", afterBytes: 200_000 },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const gets = env.mock.requests.filter((q) =>
        q.path.includes(INITRD_PATH)
      );
      assert.ok(gets.length >= 2, show(r));
      assert.ok(
        gets.every((q) => q.headers.range === undefined),
        "pxe-initrd never resumed",
      );
    });
  },
);

Deno.test(
  "fault: script connection reset mid-body is retried to a verified success",
  async () => {
    const script = "#!ipxe\n" + "echo padding padding padding\n".repeat(4000);
    await withMock({}, async (env) => {
      const real = await realScript(env.mock);
      env.mock.update({ scriptOverride: real.replace("#!ipxe\n", script) });
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "reset", afterBytes: 20_000 },
        times: 1,
      });
      const r = await env.run();
      // One reset, then a whole answer: the retry must succeed and verify.
      await assertVerified(env, r);
    });
  },
);

// ---- resume: never two versions in one file ----

/** What the run printed for the kernel, checked against `expected` and the file on disk. */
async function assertKernel(r: CliResult, expected: Uint8Array): Promise<void> {
  assert.equal(r.code, 0, show(r));
  const printed = JSON.parse(r.stdout) as Printed;
  assert.equal(printed.kernel.sha256, sha256(expected), show(r));
  assert.equal(printed.kernel.size, expected.length);
  assert.equal(await fileSha256(printed.kernel.path), sha256(expected));
}

function kernelGets(env: Env) {
  return env.mock.requests.filter((q) =>
    q.method === "GET" && q.path.includes(KERNEL_PATH)
  );
}

Deno.test(
  "fault: the kernel changes between a cut and the resume: If-Range gets the new one whole",
  async () => {
    await withMock({}, async (env) => {
      const v2 = bigKernel();
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "reset", afterBytes: 700_000 },
        times: 1,
      });
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "before", run: () => env.mock.update({ kernel: v2 }) },
        times: 1,
      });
      const r = await env.run(["--no-cache"]);
      await assertKernel(r, v2);
      const gets = kernelGets(env);
      assert.match(gets[1].headers["if-range"] ?? "", /^"[0-9a-f]+"$/);
      assert.equal(gets[1].headers.range, "bytes=700000-");
      assert.deepEqual(gets.map((q) => q.status), [200, 200]);
    });
  },
);

Deno.test(
  "fault: a server ignoring If-Range answers the resume from another version: never spliced",
  async () => {
    await withMock({}, async (env) => {
      const v2 = bigKernel();
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "reset", afterBytes: 700_000 },
        times: 1,
      });
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: {
          kind: "edit",
          run: () => env.mock.update({ kernel: v2 }),
          dropRequest: ["if-range"],
        },
        times: 1,
      });
      const r = await env.run(["--no-cache"]);
      await assertKernel(r, v2);
      assert.deepEqual(kernelGets(env).map((q) => q.status), [200, 206, 200]);
      assert.match(r.stderr, /not the rest of the same file .*ETag changed/);
    });
  },
);

Deno.test(
  "fault: a file replaced within the same second (same Last-Modified, no ETag) by a longer one: never spliced",
  async () => {
    await withMock({ etags: false }, async (env) => {
      const v2 = bigKernel((2 << 20) + 300_000);
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "reset", afterBytes: 700_000 },
        times: 1,
      });
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "before", run: () => env.mock.update({ kernel: v2 }) },
        times: 1,
      });
      const r = await env.run(["--no-cache"]);
      await assertKernel(r, v2);
      const gets = kernelGets(env);
      assert.equal(
        gets[1].headers["if-range"],
        gets[0].headers["if-range"] ?? "Wed, 01 Jan 2025 00:00:00 GMT",
      );
      assert.deepEqual(gets.map((q) => q.status), [200, 206, 200]);
      assert.match(r.stderr, /the file is now \d+ bytes, not 2097152 bytes/);
    });
  },
);

Deno.test(
  "fault: a kernel body without Content-Length that ends early is refused as truncated (exit 6)",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: {
          kind: "edit",
          setResponse: { "content-length": null },
          endAfter: 1_000_000,
        },
      });
      const r = await env.run(["--no-cache"]);
      await assertFailed(
        env,
        r,
        ExitCode.Verify,
        /boot-artifacts\/kernel.* is truncated: 1000000 bytes, but its bzimage header says at least 2097152/,
      );
    });
  },
);

// ---- a trickle, and the work directory ----

Deno.test(
  "fault: a trickle (1 byte/s) is cut by --min-speed and fails with exit 5, not a hang",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: { kind: "slow", chunkBytes: 1, intervalMs: 1000 },
      });
      const r = await env.run([
        "--min-speed",
        "1000",
        "--min-speed-time",
        "1",
        "--retries",
        "1",
      ], { timeoutMs: 20_000 });
      await assertFailed(
        env,
        r,
        ExitCode.Download,
        /boot-artifacts\/kernel.*slower than 1000 bytes\/s .*\(after 2 attempts\)/,
      );
      assert.ok(r.ms < 15_000, `cut in ${r.ms} ms`);
    });
  },
);

Deno.test(
  "fault: a second instance on the same work directory exits 9 at once, touching nothing",
  async () => {
    await withMock({}, async (env) => {
      const held = await lockWorkDir(env.work);
      try {
        const r = await env.run();
        await assertFailed(
          env,
          r,
          ExitCode.Locked,
          /Another instance of the bootloader is using the work directory .*\/work/,
        );
        assert.ok(
          !env.mock.requests.some((q) => q.path.includes(SCRIPT_PATH)),
          "not even the script was fetched",
        );
      } finally {
        held.release();
      }
      await assertVerified(env, await env.run());
    });
  },
);

Deno.test(
  "fault: a work dir of another user, or one its group can write, exits 8",
  async () => {
    await withMock({}, async (env) => {
      await Deno.mkdir(env.work);
      await Deno.chmod(env.work, 0o770);
      await assertFailed(
        env,
        await env.run(),
        ExitCode.Disk,
        /work directory .* is writable by other users \(mode 0770\)/,
      );
      if (Deno.uid() !== 0) return;
      await Deno.chmod(env.work, 0o755);
      await Deno.chown(env.work, 65534, 65534);
      await assertFailed(
        env,
        await env.run(),
        ExitCode.Disk,
        /work directory .* belongs to uid 65534/,
      );
    });
  },
);

Deno.test(
  "fault: a FIFO named kernel.part and a link named initrd do not hang or redirect the run",
  async () => {
    await withMock({}, async (env) => {
      await Deno.mkdir(env.work, { mode: 0o700 });
      await new Deno.Command("mkfifo", { args: [`${env.work}/kernel.part`] })
        .output();
      await Deno.writeTextFile(`${env.tmp}/victim`, "precious");
      await Deno.symlink(`${env.tmp}/victim`, `${env.work}/initrd`);
      await assertVerified(env, await env.run([], { timeoutMs: 20_000 }));
      assert.equal(await Deno.readTextFile(`${env.tmp}/victim`), "precious");
      await Deno.remove(`${env.work}/kernel`);
      await Deno.mkdir(`${env.work}/kernel`);
      const r = await env.run();
      assert.equal(r.code, ExitCode.Disk, show(r));
      assert.equal(r.stdout, "");
      assert.match(
        r.stderr.trim().split("\n").at(-1)!,
        /^assisted-bootloader: error: .*work\/kernel is a directory where the bootloader writes a file: remove it$/,
      );
    });
  },
);

// ---- body shorter than Content-Length ----

Deno.test(
  "fault: kernel body shorter than Content-Length is never accepted",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "short", afterBytes: 1_000_000 },
        times: 1,
      });
      await assertVerified(env, await env.run());
    });
  },
);

Deno.test(
  "fault: script body shorter than Content-Length is never run",
  async () => {
    await withMock({}, async (env) => {
      const real = await realScript(env.mock);
      // The cut leaves a valid-looking script whose kernel line lost its arguments.
      const cut = real.indexOf(" initrd=initrd") + 1;
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "short", afterBytes: cut },
      });
      const r = await env.run();
      await assertFailed(env, r, ExitCode.Api, /script|fetch|body|bytes/i);
    });
  },
);

// ---- 5xx bursts, 429 ----

Deno.test(
  "fault: 500/502/503 burst on the kernel is retried to success",
  async () => {
    await withMock({}, async (env) => {
      for (const status of [500, 502, 503]) {
        env.faults.add({
          match: { path: KERNEL_PATH },
          fault: { kind: "status", status, body: `error ${status}\n` },
          times: 1,
        });
      }
      const r = await env.run(["--retries", "3"]);
      await assertVerified(env, r);
      const statuses = env.mock.requests.filter((q) =>
        q.path.includes(KERNEL_PATH)
      )
        .map((q) => q.status);
      assert.deepEqual(statuses.slice(0, 4), [500, 502, 503, 200]);
    });
  },
);

Deno.test(
  "fault: 503 burst on the script API is retried to success",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "status", status: 503, body: "unavailable" },
        times: 2,
      });
      await assertVerified(env, await env.run());
    });
  },
);

Deno.test(
  "fault: a kernel that stays 503 fails with exit 5 after the retries (--busy-timeout 0)",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "status", status: 503, body: "down for maintenance" },
      });
      const r = await env.run(["--retries", "1", "--busy-timeout", "0"]);
      await assertFailed(env, r, ExitCode.Download, /kernel.*503|503.*kernel/i);
    });
  },
);

Deno.test(
  "fault: 429 with Retry-After waits as told and succeeds",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "status", status: 429, headers: { "retry-after": "1" } },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const kernel = env.faults.served.filter((s) =>
        s.path.includes(KERNEL_PATH)
      );
      assert.equal(kernel[0].status, 429);
      const gap = kernel[1].at - kernel[0].at;
      assert.ok(gap >= 900, `waited ${gap} ms after Retry-After: 1`);
    });
  },
);

// ---- stalled and slow servers ----

Deno.test(
  "fault: a stalled kernel body times out and the retry succeeds",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: { kind: "stall", afterBytes: 300_000 },
        times: 1,
      });
      const r = await env.run(["--timeout", "1"]);
      await assertVerified(env, r);
      assert.match(r.stderr, /no data|timed? ?out|stall/i);
    });
  },
);

Deno.test(
  "fault: a server that never answers fails with exit 5",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({ match: { path: KERNEL_PATH }, fault: { kind: "hang" } });
      const r = await env.run(["--timeout", "0.5", "--retries", "1"]);
      await assertFailed(
        env,
        r,
        ExitCode.Download,
        /kernel.*(no answer|timed? ?out|no data)/i,
      );
    });
  },
);

Deno.test("fault: a slow server completes", async () => {
  await withMock({}, async (env) => {
    env.faults.add({
      match: { path: KERNEL_PATH },
      fault: { kind: "slow", chunkBytes: 256 << 10, intervalMs: 80 },
    });
    const r = await env.run(["--timeout", "1"]);
    await assertVerified(env, r);
    const kernel = env.faults.served.filter((s) =>
      s.path.includes(KERNEL_PATH)
    );
    assert.equal(kernel.length, 1, "one slow request, no retry");
  });
});

// ---- expired credentials ----

Deno.test(
  "fault: 401 after the access token expires re-exchanges the offline token",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: { kind: "before", run: () => env.mock.expireAccessTokens() },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const scripts = env.mock.requests.filter((q) =>
        q.path.includes(SCRIPT_PATH)
      );
      assert.deepEqual(scripts.map((q) => q.status), [401, 200]);
      const exchanges = env.mock.requests.filter((q) => q.method === "POST");
      assert.equal(
        exchanges.length,
        2,
        "the offline token was exchanged again",
      );
    });
  },
);

Deno.test(
  "fault: an expired signed initrd URL makes the bootloader fetch the script again",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: INITRD_PATH },
        fault: { kind: "before", run: () => env.mock.expireImageTokens() },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const initrds = env.mock.requests.filter((q) =>
        q.path.includes(INITRD_PATH)
      );
      assert.equal(initrds[0].status, 401);
      assert.equal(initrds.at(-1)!.status, 200);
      const scripts = env.mock.requests.filter((q) =>
        q.path.includes(SCRIPT_PATH)
      );
      assert.equal(scripts.length, 2, "the script was fetched again");
    });
  },
);

Deno.test(
  "fault: the host is installed while its signed URLs expire: the script fetched again boots nothing, exit 3",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: INITRD_PATH },
        fault: {
          kind: "before",
          run: () => {
            env.mock.expireImageTokens();
            env.mock.update({ installedMacs: ["52:54:00:12:34:56"] });
          },
        },
        times: 1,
      });
      const r = await env.run();
      await assertFailed(
        env,
        r,
        ExitCode.Script,
        /fetched again after its signed URLs expired, no longer boots a kernel: IPXE booting skipped/,
      );
    });
  },
);

// ---- bad content ----

Deno.test(
  "fault: an HTML error page with status 200 as the kernel is rejected",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { path: KERNEL_PATH },
        fault: {
          kind: "status",
          status: 200,
          body:
            "<!DOCTYPE html><html><body><h1>Proxy error</h1></body></html>\n",
          headers: { "content-type": "text/html" },
        },
      });
      const r = await env.run();
      await assertFailed(
        env,
        r,
        ExitCode.Verify,
        /boot-artifacts\/kernel.*HTML|HTML.*boot-artifacts\/kernel/i,
      );
    });
  },
);

Deno.test("fault: a wrong pinned kernel digest is fatal", async () => {
  await withMock({}, async (env) => {
    const r = await env.run(["--kernel-sha256", "ab".repeat(32)]);
    await assertFailed(env, r, ExitCode.Verify, /sha256 mismatch.*kernel/i);
  });
});

Deno.test(
  "fault: a redirect loop is a refusal: exit 5 after 6 requests, never retried",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { method: "GET", path: KERNEL_PATH },
        fault: {
          kind: "redirect",
          location: (url) => url.pathname + url.search,
        },
      });
      const before = env.mock.requests.length;
      const r = await env.run(["--retries", "3"]);
      await assertFailed(
        env,
        r,
        ExitCode.Download,
        /more than 5 redirects, refused$/,
      );
      const gets = env.mock.requests.slice(before).filter((q) =>
        q.method === "GET" && q.path.includes(KERNEL_PATH)
      );
      // The first request and 5 redirects followed: one try, no retry.
      assert.equal(gets.length, 6, JSON.stringify(gets.map((q) => q.path)));
      assert.ok(!/retry/.test(r.stderr), r.stderr);
    });
  },
);

Deno.test(
  "fault: a cross-origin redirect of the script does not forward the token",
  async () => {
    await withMock({}, async (env) => {
      const real = await realScript(env.mock);
      env.faults.add({
        match: { server: "image", path: "/moved/boot.ipxe" },
        fault: { kind: "status", status: 200, body: real },
      });
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: {
          kind: "redirect",
          location: `${env.mock.imageBaseUrl}/moved/boot.ipxe`,
        },
        times: 1,
      });
      const r = await env.run();
      await assertVerified(env, r);
      const first = env.mock.requests.find((q) =>
        q.path.includes(SCRIPT_PATH)
      )!;
      assert.match(
        first.headers.authorization ?? "",
        /^Bearer /,
        "the API got the token",
      );
      const moved = env.mock.requests.filter((q) => q.path.includes("/moved/"));
      assert.equal(moved.length, 1);
      assert.equal(
        moved[0].headers.authorization,
        undefined,
        "no token across origins",
      );
      for (const q of env.mock.requests.filter((q) => q.server === "image")) {
        assert.equal(
          q.headers.authorization,
          undefined,
          `no token on ${q.path}`,
        );
      }
    });
  },
);

Deno.test(
  "fault: a script larger than the limit fails with a clear error",
  async () => {
    await withMock({}, async (env) => {
      env.mock.update({
        scriptOverride: "#!ipxe\n" +
          "echo 0123456789abcdef0123456789abcdef\n".repeat(40_000),
      });
      const r = await env.run();
      await assertFailed(
        env,
        r,
        ExitCode.Script,
        /larger|too (big|large)|limit|bytes/i,
      );
    });
  },
);

Deno.test(
  "fault: binary garbage as the script fails with a clear error",
  async () => {
    await withMock({}, async (env) => {
      env.faults.add({
        match: { server: "api", path: SCRIPT_PATH },
        fault: {
          kind: "status",
          status: 200,
          body: randomBytes(8192, [0x7f, 0x45, 0x4c, 0x46]),
        },
      });
      const r = await env.run();
      await assertFailed(env, r, ExitCode.Script, /script|ipxe/i);
    });
  },
);

// ---- disk full ----

Deno.test(
  "fault: disk full in the work dir fails with exit 8",
  async () => {
    await withMock({}, async (env) => {
      await Deno.mkdir(env.work);
      const mount = await new Deno.Command("mount", {
        args: ["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", env.work],
        stdout: "null",
        stderr: "piped",
      }).output().catch((err) => ({
        success: false,
        stderr: new TextEncoder().encode(String(err)),
      }));
      if (!mount.success) {
        console.warn(
          `SKIPPED disk-full fault: cannot mount a tmpfs (${
            new TextDecoder().decode(mount.stderr).trim()
          }); run as root to test it`,
        );
        return;
      }
      try {
        const r = await env.run();
        await assertFailed(env, r, ExitCode.Disk, /space|disk|write/i);
      } finally {
        await new Deno.Command("umount", { args: [env.work] }).output();
      }
    });
  },
);

/** The boot script the mock serves now, fetched with a valid token. */
async function realScript(mock: MockInfraEnv): Promise<string> {
  const res = await fetch(
    `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script`,
    { headers: { authorization: `Bearer ${mock.accessToken}` } },
  );
  assert.equal(res.status, 200);
  return await res.text();
}
