/**
 * The arm64 path from the mock InfraEnv to the syscall, with an injected libc:
 * the script rendered for `arch=arm64` → a served gzip'd `Image` (as RHCOS
 * serves its `vmlinuz`) → stage() unpacks and verifies it → kexecLoad() opens
 * the unpacked Image and calls syscall 294.
 *
 * SAFETY: kexec_file_load is never really called (fake libc).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { createScriptClient } from "../../lib/resolve/infraenv.ts";
import {
  type LibcSymbols,
  O_NOFOLLOW,
  openLibc,
} from "../../lib/kexec/libc.ts";
import { kexecLoad } from "../../lib/kexec/load.ts";
import { stage } from "../../lib/stage/stage.ts";
import type { KexecPlan } from "../../lib/plan.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import { fakeKernel, startMock } from "../../dev/mock_infraenv.ts";
import { captureLog, withTemp } from "../test_util.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** An arm64 `Image` like Debian's and RHCOS's: an EFI stub (`MZ`) with the arm64 magic at 0x38. */
function fakeArm64Image(size = 300_000): Uint8Array {
  const image = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
  image.set([0x4d, 0x5a], 0);
  image.set(new TextEncoder().encode("ARM\x64"), 0x38);
  return image;
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// libc is loaded once per process and stays loaded (openLibc caches it):
// loaded here, before the tests, so that their resource check does not count it.
openLibc();

/**
 * The real libc (open, statx, close: harmless) with a fake `syscall` that
 * records its arguments and reads the bytes behind each descriptor through
 * /proc/self/fd. kexec_file_load itself is never called.
 */
function recordingLibc() {
  const real = openLibc();
  const files = new Map<number, Uint8Array>();
  const syscalls: bigint[][] = [];
  const flags: number[] = [];
  const libc: LibcSymbols = {
    ...real,
    open(path, f) {
      flags.push(f);
      return real.open(path, f);
    },
    syscall(nr, a1, a2, a3, _cmdline, a5) {
      syscalls.push([nr, a1, a2, a3, a5]);
      for (const fd of [a1, a2]) {
        files.set(Number(fd), Deno.readFileSync(`/proc/self/fd/${fd}`));
      }
      return 0n;
    },
    reboot: () => -1,
    sync() {},
  };
  return { libc, files, syscalls, flags };
}

async function armPlan(
  mock: Awaited<ReturnType<typeof startMock>>,
): Promise<KexecPlan> {
  const scripts = createScriptClient({
    kind: "infraenv",
    apiUrl: mock.apiUrl,
    infraEnvId: mock.infraEnvId,
    auth: { kind: "token", token: mock.accessToken },
  }, { retries: 0 });
  const plan = await resolvePlan(scripts, {
    settings: {},
    buildarch: "arm64",
  });
  assert.equal(plan.action, "kexec");
  return plan as KexecPlan;
}

Deno.test("arm64: the served gzip'd Image reaches kexec_file_load (294) unpacked, the initrd as served", async () => {
  const image = fakeArm64Image();
  const served = await gzip(image);
  const mock = await startMock({ arch: "arm64", kernel: served });
  try {
    await withTemp(async (dir) => {
      const plan = await armPlan(mock);
      assert.match(plan.kernel.url, /[?&]arch=arm64(&|$)/);
      const [loaded, lines] = await captureLog(() =>
        stage(plan, {
          workDir: `${dir}/work`,
          progress: "none",
          retries: 0,
          cache: false,
          arch: "aarch64",
        })
      );
      assert.equal(loaded.kernel.format, "gzip");
      assert.equal(loaded.kernel.download!.sha256, sha(served));
      assert.ok(
        lines.some((l) => /unpacked gzip to an arm64 Image/.test(l)),
        lines.join("\n"),
      );
      const rec = recordingLibc();
      kexecLoad(loaded, { libc: rec.libc, arch: "aarch64" });
      assert.equal(rec.syscalls.length, 1);
      const [nr, kernelFd, initrdFd, cmdlineLength, flags] = rec.syscalls[0];
      assert.equal(nr, 294n);
      assert.equal(flags, 0n);
      assert.equal(
        cmdlineLength,
        BigInt(new TextEncoder().encode(plan.cmdline).length + 1),
      );
      // O_RDONLY | O_CLOEXEC | O_NONBLOCK | arm64's O_NOFOLLOW.
      const arm = 0o2000000 | 0o4000 | O_NOFOLLOW.aarch64;
      assert.deepEqual(rec.flags, [arm, arm]);
      assert.equal(
        sha(rec.files.get(Number(kernelFd))!),
        sha(image),
        "kexec gets the unpacked Image, not the gzip the server sent",
      );
      const initrdBytes = rec.files.get(Number(initrdFd))!;
      assert.equal(sha(initrdBytes), loaded.initrd!.sha256);
      const servedInitrd = mock.requests.find((r) =>
        r.method === "GET" && r.path.includes("/pxe-initrd")
      );
      assert.ok(servedInitrd?.path.includes("arch=arm64"));
    });
  } finally {
    await mock.close();
  }
});

Deno.test("arm64: an x86_64 bzImage served for arch=arm64 is refused before kexec", async () => {
  const mock = await startMock({ arch: "arm64", kernel: fakeKernel(8192) });
  try {
    await withTemp(async (dir) => {
      const plan = await armPlan(mock);
      await assert.rejects(
        captureLog(() =>
          stage(plan, {
            workDir: `${dir}/work`,
            progress: "none",
            retries: 0,
            cache: false,
            arch: "aarch64",
          })
        ),
        (err: unknown) => {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Verify);
          assert.match(
            err.message,
            /is a bzimage file, not an arm64 Image, gzip'd Image or zboot vmlinuz/,
          );
          return true;
        },
      );
    });
  } finally {
    await mock.close();
  }
});
