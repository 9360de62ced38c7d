/**
 * The memory preflight through `main.ts --no-kexec` against the mock, with
 * the machine's memory given by `ASSISTED_MEMINFO_FILE`: a boot that cannot
 * fit is refused with exit code Memory before any body is fetched; the
 * option skips the check; a HEAD that fails, or a meminfo that cannot be
 * read, never blocks a boot that would have worked.
 */

import assert from "node:assert/strict";
import { createFaults } from "../../dev/faults.ts";
import {
  type MockInfraEnv,
  type MockOptions,
  startMock,
} from "../../dev/mock_infraenv.ts";
import { ExitCode } from "../../lib/errors.ts";
import { withTemp } from "../test_util.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const GiB = 1024 * 1024 * 1024;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a boot from the mock (`--no-kexec`) with `meminfo` as /proc/meminfo. */
async function boot(
  mock: MockInfraEnv,
  dir: string,
  options: { meminfo?: string; args?: string[]; env?: Record<string, string> },
): Promise<Run> {
  const meminfoFile = `${dir}/meminfo`;
  if (options.meminfo !== undefined) {
    await Deno.writeTextFile(meminfoFile, options.meminfo);
  }
  await Deno.writeTextFile(`${dir}/token`, mock.refreshToken, { mode: 0o600 });
  const out = await new Deno.Command(Deno.execPath(), {
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
      `${dir}/token`,
      "--no-kexec",
      "--no-host-settings",
      "--progress",
      "none",
      "--work-dir",
      `${dir}/work`,
      "--retries",
      "0",
      ...(options.args ?? []),
    ],
    env: {
      NO_COLOR: "1",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
      ASSISTED_MEMINFO_FILE: meminfoFile,
      ...options.env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** A mock whose live rootfs is a sparse file of `rootfsBytes` (only ever HEAD'd). */
async function withMock(
  dir: string,
  rootfsBytes: number,
  fn: (mock: MockInfraEnv) => Promise<void>,
  options: MockOptions = {},
) {
  const rootfs = `${dir}/rootfs.img`;
  await Deno.writeFile(rootfs, new Uint8Array());
  await Deno.truncate(rootfs, rootfsBytes);
  const mock = await startMock({ rootfs, ...options });
  try {
    await fn(mock);
  } finally {
    await mock.close();
  }
}

const meminfo = (totalKiB: number, availableKiB: number) =>
  `MemTotal:       ${totalKiB} kB\nMemFree:        1000 kB\nMemAvailable:   ${availableKiB} kB\n`;

/** Requests for the artifacts' bodies (the kernel, the initrd, the rootfs). */
function artifactGets(mock: MockInfraEnv) {
  return mock.requests.filter((r) =>
    r.method === "GET" &&
    /boot-artifacts|pxe-initrd/.test(r.path)
  );
}

Deno.test("preflight: a live rootfs larger than MemTotal is refused with exit 18 before any download; --no-preflight boots", async () => {
  await withTemp(async (dir) => {
    await withMock(dir, 2 * GiB, async (mock) => {
      // 1 GiB of memory, 900 MiB of it available: the kernel and initrd fit, the 2 GiB rootfs does not.
      const r = await boot(mock, dir, { meminfo: meminfo(1048576, 921600) });
      assert.equal(r.code, ExitCode.Memory, r.stderr);
      assert.equal(ExitCode.Memory, 18);
      const last = r.stderr.trim().split("\n").at(-1)!;
      assert.match(
        last,
        /^assisted-bootloader: error: This machine has 1024\.0 MiB of memory and the new kernel needs at least 20\d\d\.\d MiB: the kernel and initrd \(\d+\.\d MiB\) and the live rootfs \(2048\.0 MiB\) it loads into RAM \(--no-preflight skips this check\)$/,
      );
      assert.equal(r.stdout, "");
      assert.ok(!r.stderr.includes("    at "), "no stack trace");
      assert.deepEqual(artifactGets(mock), [], "no body was fetched");
      const heads = mock.requests.filter((q) => q.method === "HEAD")
        .map((q) => q.path.replace(/\?.*/, ""));
      assert.deepEqual(
        heads.sort(),
        [
          "/api/assisted-images/boot-artifacts/kernel",
          "/api/assisted-images/boot-artifacts/rootfs",
          `/api/assisted-images/images/${mock.infraEnvId}/pxe-initrd`,
        ].sort(),
      );
      assert.ok(
        mock.requests.filter((q) => q.method === "HEAD").every((q) =>
          q.headers.authorization === undefined
        ),
        "no Authorization with a HEAD",
      );
      assert.deepEqual(
        [...Deno.readDirSync(`${dir}/work`)].map((e) => e.name).filter((n) =>
          !n.startsWith(".")
        ),
        [],
        "nothing in the work directory",
      );

      for (
        const skip of [
          { args: ["--no-preflight"] },
          { env: { ASSISTED_NO_PREFLIGHT: "1" } },
        ]
      ) {
        const ok = await boot(mock, dir, {
          meminfo: meminfo(1048576, 921600),
          ...skip,
        });
        assert.equal(ok.code, 0, ok.stderr);
        const json = JSON.parse(ok.stdout);
        assert.equal(json.action, "kexec");
        assert.ok(json.kernel.sha256 && json.initrd.sha256);
        assert.ok(!ok.stderr.includes("preflight"), ok.stderr);
      }
    });
  });
});

Deno.test("preflight: the kernel and initrd larger than MemAvailable are refused (exit 18); enough memory boots and says what it counted", async () => {
  await withTemp(async (dir) => {
    await withMock(dir, 64 * 1024 * 1024, async (mock) => {
      // 1 KiB available: less than the mock's kernel (4 KiB) and initrd.
      const r = await boot(mock, dir, { meminfo: meminfo(16777216, 1) });
      assert.equal(r.code, ExitCode.Memory, r.stderr);
      assert.match(
        r.stderr,
        /error: This machine has 0\.0 MiB of memory available and the boot needs at least \d+\.\d MiB before the new kernel starts: /,
      );
      assert.deepEqual(artifactGets(mock), []);

      const ok = await boot(mock, dir, { meminfo: meminfo(16777216, 8388608) });
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(
        ok.stderr,
        /preflight: kernel [\d.]+ \w?i?B, initrd [\d.]+ \w?i?B, live rootfs 64\.0 MiB; memory 16\.0 GiB, 8\.0 GiB available/,
      );
    });
  });
});

Deno.test("preflight: a HEAD that fails or gives no length, or no meminfo, never blocks a boot that would have worked", async () => {
  await withTemp(async (dir) => {
    const faults = createFaults();
    await withMock(dir, 2 * GiB, async (mock) => {
      faults.add({
        match: { method: "HEAD", path: "/boot-artifacts/rootfs" },
        fault: { kind: "status", status: 500, body: "busy" },
      });
      faults.add({
        match: { method: "HEAD", path: "/boot-artifacts/kernel" },
        fault: { kind: "status", status: 405 },
      });
      // 1 GiB: the 2 GiB rootfs would not fit, but its size cannot be known.
      const r = await boot(mock, dir, { meminfo: meminfo(1048576, 921600) });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        /warn: preflight: the size of http:\/\/127\.0\.0\.1:\d+\/api\/assisted-images\/boot-artifacts\/rootfs\?\S+ is unknown \(HEAD answered 500\)/,
      );
      assert.match(
        r.stderr,
        /warn: preflight: the size of \S+\/boot-artifacts\/kernel\?\S+ is unknown \(HEAD answered 405\)/,
      );
      assert.match(r.stderr, /preflight: kernel unknown, initrd /);
      assert.equal(JSON.parse(r.stdout).action, "kexec");

      const none = await boot(mock, dir, {
        env: { ASSISTED_MEMINFO_FILE: `${dir}/no-such-meminfo` },
      });
      assert.equal(none.code, 0, none.stderr);
      assert.match(
        none.stderr,
        /warn: preflight: cannot read \S+no-such-meminfo .*\n.*warn: preflight: the memory size is unknown, not checked/,
      );
    }, { faults });
  });
});
