/**
 * End to end: the bootloader initramfs boots in QEMU, fetches the mock
 * InfraEnv's iPXE script, downloads and verifies the kernel and initrds, and
 * really kexecs; the second kernel's /init (the marker initrd) reports what it
 * received on the serial console.
 *
 * Builds with `make initrd marker-initrd` first (skipped with `VM_TEST_NO_BUILD=1`).
 * Skipped, with a message, only when qemu-system-x86_64 is not installed.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the probe.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startMock } from "../../dev/mock_infraenv.ts";
import { argText, parseKernelCmdline } from "../../lib/resolve/kargs.ts";
import {
  type Accel,
  findQemu,
  type LineMatch,
  probeAccel,
  startVm,
  type Vm,
} from "../../dev/qemu.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const KERNEL = `${BUILD}/vm/vmlinuz`;
const BOOT_INITRD = `${BUILD}/initrd/assisted-bootloader.initrd`;
const MARKER_INITRD = `${BUILD}/vm/marker.initrd`;
const GUEST_ADDRESS = "10.0.2.100";
/** Hard limit per VM (a TCG run takes about 25 s on 2 cores). */
const VM_TIMEOUT_MS = 150_000;

const qemu = findQemu();
if (!qemu) {
  console.warn(
    "vm_kexec_test: SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)",
  );
}

interface Prepared {
  accel: Accel;
}

let prepared: Promise<Prepared> | undefined;

/** Builds the kernel, both initrds and probes the accelerator, once per run. */
function prepare(): Promise<Prepared> {
  prepared ??= (async () => {
    const t0 = performance.now();
    if (Deno.env.get("VM_TEST_NO_BUILD") !== "1") {
      const out = await new Deno.Command("make", {
        args: ["-s", "-C", ROOT, "initrd", "marker-initrd"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) +
        new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `make initrd marker-initrd failed:\n${text}`);
    }
    stage("build (make initrd marker-initrd)", performance.now() - t0);
    const t1 = performance.now();
    const accel = await probeAccel(KERNEL, {
      cacheFile: `${BUILD}/vm/accel.json`,
    });
    stage(`accelerator probe: ${accel}`, performance.now() - t1);
    return { accel };
  })();
  return prepared;
}

function stage(name: string, ms: number): void {
  console.log(`vm_kexec: ${name}: ${(ms / 1000).toFixed(1)} s`);
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The guest's console: the initramfs hands it to the discovery kernel (`--console host`). */
const GUEST_CONSOLE = "console=ttyS0,115200n8";

function bootCmdline(ipxeUrl: string, extra: string[] = []): string {
  return [
    GUEST_CONSOLE,
    "panic=-1",
    `assisted.ipxe_url=${ipxeUrl}`,
    "assisted.on_failure=poweroff",
    "assisted.verbose=1",
    "assisted.progress=lines",
    ...extra,
  ].join(" ");
}

/** Waits for `pattern` and prints the stage time. */
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

async function withVm(
  label: string,
  options: { append: string; hostPort: number; accel: Accel },
  body: (vm: Vm) => Promise<void>,
): Promise<void> {
  const serialLog = `${BUILD}/vm/${label}.serial.log`;
  const vm = startVm({
    kernel: KERNEL,
    initrd: BOOT_INITRD,
    append: options.append,
    accel: options.accel,
    forwards: [{
      guestAddress: GUEST_ADDRESS,
      guestPort: 80,
      hostPort: options.hostPort,
    }],
    serialLog,
    timeoutMs: VM_TIMEOUT_MS,
  });
  try {
    await body(vm);
  } catch (err) {
    const tail = vm.lines().slice(-60).join("\n");
    throw new Error(
      `${
        err instanceof Error ? err.message : err
      }\n--- last serial lines (${serialLog}) ---\n${tail}`,
    );
  } finally {
    await vm.kill();
  }
}

Deno.test({
  name:
    "vm: the bootloader kexecs the served kernel with its kargs and both initrds",
  ignore: !qemu,
  async fn() {
    const { accel } = await prepare();
    const id = crypto.randomUUID().slice(0, 8);
    const marker = `vmtest-${id}`;
    const appended = `assisted_appended=${id}`;
    const quoted = `assisted_quoted=a b ${id}`;
    const wrapped = new TextEncoder().encode(`wrapped initrd ${id}\n`);
    const mock = await startMock({
      authMode: "none",
      sameOrigin: true,
      publicBaseUrl: `http://${GUEST_ADDRESS}`,
      kernel: KERNEL,
      initrd: MARKER_INITRD,
      // No console= of our own: the template's tty1 and ttyS1 are all the
      // script has, and only the one chosen from the guest shows anything.
      extraKargs: ["panic=-1", `assisted_marker=${marker}`],
      extraInitrds: [{
        name: "wrapped.txt",
        body: wrapped,
        wrapAs: "/assisted-wrapped.txt",
      }],
    });
    try {
      const append = bootCmdline(mock.ipxeScriptUrl, [
        `assisted.append_karg=${appended}`,
        `"assisted.append_karg=${quoted}"`,
        "assisted.delete_karg=rd.luks.options",
      ]);
      await withVm("kexec", {
        append,
        hostPort: Number(new URL(mock.baseUrl).port),
        accel,
      }, async (vm) => {
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
          "download + verify",
          /initrd: \d+ image\(s\) assembled/,
          first.index,
        );
        await reach(
          vm,
          "kexec_file_load called",
          /kexec_file_load\(/,
          first.index,
        );
        await reach(
          vm,
          "kexec: second kernel started",
          /Linux version/,
          first.index,
        );
        const markerLine = await reach(
          vm,
          "marker printed",
          /assisted-marker: marker=(\S+)/,
          first.index,
        );
        const exit = await vm.exited;
        stage("VM powered off", exit.atMs);
        assert.equal(markerLine.match[1], marker);
        const cmdline = (await vm.waitFor(/assisted-marker: cmdline: (.*)/, {
          from: first.index,
        })).match[1];
        assert.ok(
          cmdline.split(" ").includes(`assisted_marker=${marker}`),
          `marker missing from ${cmdline}`,
        );
        assert.ok(
          cmdline.split(" ").includes(appended),
          `--append-karg value missing from ${cmdline}`,
        );
        // As the marker kernel read it: the console chosen from the guest's
        // own command line replaced the template's, the quoted kargs (the
        // service's and an appended one) arrived whole, the deletion took
        // exactly its argument.
        const args = parseKernelCmdline(cmdline);
        assert.deepEqual(
          args.filter((a) => a.param === "console").map(argText),
          [GUEST_CONSOLE],
          cmdline,
        );
        assert.ok(
          cmdline.includes(
            ' coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"',
          ),
          cmdline,
        );
        assert.equal(
          args.find((a) => a.param === "assisted_quoted")?.value,
          `a b ${id}`,
          cmdline,
        );
        assert.ok(!cmdline.includes("rd.luks.options"), cmdline);
        assert.match(cmdline, / random\.trust_cpu=on ignition\.firstboot /);
        const consoles = await vm.waitFor(/assisted-marker: consoles: (.*)/, {
          from: first.index,
        });
        assert.equal(consoles.match[1].trim(), "ttyS0");
        // The wrapped initrd: its bytes at the path of `initrd URL /path`.
        await vm.waitFor(
          new RegExp(
            `assisted-marker: file /assisted-wrapped\\.txt size ${wrapped.length} sha256 ${
              sha256(wrapped)
            }`,
          ),
          { from: first.index },
        );
        // The marker initrd (the base of pxe-initrd) is the one whose /init ran.
        await vm.waitFor(
          /assisted-marker: file \/init present \(marker initrd\)/,
          { from: first.index },
        );
        assert.equal(exit.killed, false, "the VM did not power off by itself");
        const served = mock.requests.filter((r) =>
          r.path.includes("/boot-artifacts/kernel") && r.method === "GET"
        );
        assert.ok(
          served.length >= 1,
          "the kernel was never downloaded from the mock",
        );
      });
    } finally {
      await mock.close();
    }
  },
});

Deno.test({
  name:
    "vm: an HTML page served as the kernel is refused and kexec is never called",
  ignore: !qemu,
  async fn() {
    const { accel } = await prepare();
    const html = new TextEncoder().encode(
      "<!DOCTYPE html>\n<html><head><title>Login</title></head><body>Please sign in</body></html>\n",
    );
    const mock = await startMock({
      authMode: "none",
      sameOrigin: true,
      publicBaseUrl: `http://${GUEST_ADDRESS}`,
      kernel: html,
      initrd: MARKER_INITRD,
      extraKargs: ["console=ttyS0", "panic=-1"],
    });
    try {
      const append = bootCmdline(mock.ipxeScriptUrl);
      await withVm("html", {
        append,
        hostPort: Number(new URL(mock.baseUrl).port),
        accel,
      }, async (vm) => {
        const first = await reach(
          vm,
          "boot to the bootloader",
          /assisted-initrd: starting the bootloader/,
        );
        await reach(
          vm,
          "refusal",
          /Kernel \S+ is an HTML page, not a kernel/,
          first.index,
        );
        await reach(
          vm,
          "initramfs failure path",
          /assisted-initrd: error: the bootloader failed with exit code 6/,
        );
        const exit = await vm.exited;
        stage("VM powered off", exit.atMs);
        assert.equal(exit.killed, false, "the VM did not power off by itself");
        const after = vm.lines().slice(first.index);
        assert.ok(
          !after.some((l) => /kexec_file_load\(/.test(l)),
          "kexec_file_load was called",
        );
        assert.ok(
          !after.some((l) => /Linux version/.test(l)),
          "a second kernel started",
        );
      });
    } finally {
      await mock.close();
    }
  },
});
