/**
 * End to end on arm64, under TCG (`qemu-system-aarch64 -M virt -cpu max`):
 * the arm64 bootloader initramfs fetches the mock InfraEnv's script for
 * `arch=arm64`, downloads a gzip'd `Image` (Debian's arm64 kernel, served the
 * way RHCOS serves its `vmlinuz`), unpacks and verifies it, and really kexecs
 * it with `kexec_file_load` (syscall 294); the marker initrd's /init prints the
 * command line the second kernel received.
 *
 * The kernel QEMU boots is build/vm/aarch64/boot-Image, built from Debian's
 * linux-source with KEXEC_FILE (Debian's arm64 kernels lack it); the first
 * `make initrd ARCH=aarch64` takes several minutes for it, later ones reuse it.
 * Skipped, with a message, only when qemu-system-aarch64 is not installed and
 * `CI` is not `true` (in CI a missing QEMU fails the test).
 * `VM_TEST_NO_BUILD=1` skips the build, `VM_ECHO=1` copies the serial console to stderr.
 */

import assert from "node:assert/strict";
import { startMock } from "../../dev/mock_infraenv.ts";
import {
  findQemu,
  type LineMatch,
  QEMU_SYSTEM,
  startVm,
  type Vm,
} from "../../dev/qemu.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const VM_DIR = `${BUILD}/vm/aarch64`;
const BOOT_KERNEL = `${VM_DIR}/boot-Image`;
const SERVED_KERNEL = `${VM_DIR}/vmlinuz.gz`;
const BOOT_INITRD = `${BUILD}/initrd/aarch64/assisted-bootloader.initrd`;
const MARKER_INITRD = `${VM_DIR}/marker.initrd`;
const GUEST_ADDRESS = "10.0.2.100";
const CONSOLE = QEMU_SYSTEM.aarch64.console;
/** Hard limit for the VM (a run takes about a minute and a half on 2 busy cores). */
const VM_TIMEOUT_MS = 300_000;

const qemu = findQemu(QEMU_SYSTEM.aarch64.binary);
const inCi = Deno.env.get("CI") === "true";
if (!qemu && !inCi) {
  console.warn(
    "vm_arm64_test: SKIPPED: qemu-system-aarch64 is not installed (apt-get install qemu-system-arm netcat-openbsd)",
  );
}

function stage(name: string, ms: number): void {
  console.log(`vm_arm64: ${name}: ${(ms / 1000).toFixed(1)} s`);
}

async function build(): Promise<void> {
  if (Deno.env.get("VM_TEST_NO_BUILD") === "1") return;
  const t0 = performance.now();
  const out = await new Deno.Command("make", {
    args: ["-s", "-C", ROOT, "ARCH=aarch64", "initrd", "marker-initrd"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  assert.ok(
    out.success,
    `make ARCH=aarch64 initrd marker-initrd failed:\n${text}`,
  );
  stage(
    "build (make ARCH=aarch64 initrd marker-initrd)",
    performance.now() - t0,
  );
}

/** Waits for `pattern` after line `from` and prints the stage time. */
async function reach(
  vm: Vm,
  name: string,
  pattern: RegExp,
  from = 0,
): Promise<LineMatch> {
  const hit = await vm.waitFor(pattern, { from });
  stage(name, hit.atMs);
  return hit;
}

Deno.test({
  name:
    "vm arm64: the bootloader unpacks the served gzip'd Image, kexecs it with kexec_file_load and the marker prints its cmdline",
  ignore: !qemu && !inCi,
  async fn() {
    assert.ok(
      qemu,
      "qemu-system-aarch64 is not installed (Debian package: qemu-system-arm)",
    );
    await build();
    const head = (await Deno.readFile(SERVED_KERNEL)).subarray(0, 2);
    assert.deepEqual([...head], [0x1f, 0x8b], "the served kernel is not gzip");
    const id = crypto.randomUUID().slice(0, 8);
    const marker = `arm64test-${id}`;
    const appended = `assisted_appended=${id}`;
    const mock = await startMock({
      authMode: "none",
      sameOrigin: true,
      publicBaseUrl: `http://${GUEST_ADDRESS}`,
      arch: "arm64",
      kernel: SERVED_KERNEL,
      initrd: MARKER_INITRD,
      extraKargs: [
        `console=${CONSOLE}`,
        "panic=-1",
        `assisted_marker=${marker}`,
      ],
    });
    const serialLog = `${VM_DIR}/arm64.serial.log`;
    const vm = startVm({
      arch: "aarch64",
      kernel: BOOT_KERNEL,
      initrd: BOOT_INITRD,
      append: [
        `console=${CONSOLE}`,
        "panic=-1",
        `assisted.ipxe_url=${mock.ipxeScriptUrl}`,
        "assisted.on_failure=poweroff",
        "assisted.verbose=1",
        "assisted.progress=lines",
        `assisted.append_karg=${appended}`,
      ].join(" "),
      accel: "tcg",
      memoryMiB: 1024,
      forwards: [{
        guestAddress: GUEST_ADDRESS,
        guestPort: 80,
        hostPort: Number(new URL(mock.baseUrl).port),
      }],
      serialLog,
      timeoutMs: VM_TIMEOUT_MS,
    });
    try {
      const firstKernel = await reach(
        vm,
        "first kernel (built with KEXEC_FILE) started",
        /Linux version (\S+)/,
      );
      assert.match(firstKernel.match[1], /-assisted-kexec$/);
      const first = await reach(
        vm,
        "boot to the bootloader",
        /assisted-initrd: starting the bootloader/,
      );
      await reach(
        vm,
        "iPXE script fetched",
        /script: |fetching the iPXE script/,
        first.index,
      );
      await reach(
        vm,
        "gzip'd Image unpacked",
        /kernel: unpacked gzip to an arm64 Image \(\d+ bytes\)/,
        first.index,
      );
      await reach(
        vm,
        "download + verify",
        /initrd: \d+ image\(s\) assembled/,
        first.index,
      );
      const load = await reach(
        vm,
        "kexec_file_load called",
        /kexec_file_load\(.*\) \[syscall (\d+) on aarch64\]/,
        first.index,
      );
      assert.equal(load.match[1], "294");
      const second = await reach(
        vm,
        "kexec: second kernel started",
        /Linux version (\S+)/,
        first.index,
      );
      assert.match(second.match[1], /-arm64$/, "the served Debian kernel runs");
      const markerLine = await reach(
        vm,
        "marker printed",
        /assisted-marker: marker=(\S+)/,
        second.index,
      );
      assert.equal(markerLine.match[1], marker);
      const exit = await vm.exited;
      stage("VM powered off", exit.atMs);
      const cmdline = (await vm.waitFor(/assisted-marker: cmdline: (.*)/, {
        from: second.index,
      })).match[1].split(" ");
      assert.ok(cmdline.includes(`assisted_marker=${marker}`), `${cmdline}`);
      assert.ok(cmdline.includes(appended), `${cmdline}`);
      assert.ok(cmdline.includes(`console=${CONSOLE}`), `${cmdline}`);
      assert.equal(exit.killed, false, "the VM did not power off by itself");
      const kernelGets = mock.requests.filter((r) =>
        r.method === "GET" && r.path.includes("/boot-artifacts/kernel")
      );
      assert.ok(kernelGets.length >= 1, "the kernel was never downloaded");
      assert.ok(
        kernelGets.every((r) => r.path.includes("arch=arm64")),
        "the kernel URL does not name arch=arm64",
      );
    } catch (err) {
      const tail = vm.lines().slice(-60).join("\n");
      throw new Error(
        `${
          err instanceof Error ? err.message : err
        }\n--- last serial lines (${serialLog}) ---\n${tail}`,
      );
    } finally {
      await vm.kill();
      await mock.close();
    }
  },
});
