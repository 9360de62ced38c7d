/**
 * End to end, an installed host: the bootloader initramfs boots in QEMU with
 * a second virtual disk laid out like an installed RHCOS (GPT, an ext4
 * partition named `boot` with ostree's BLS entries, the `ignition.firstboot`
 * stamp); the mock InfraEnv answers the MAC request with the service's 404
 * "IPXE booting skipped"; the bootloader reads the disk without mounting it,
 * copies and verifies the default entry's kernel and initrd, and kexecs
 * them; the marker initrd prints the command line it got. And a host with a
 * disk but no installed system: a clear message, no kexec.
 *
 * Builds with `make initrd marker-initrd` first (skipped with `VM_TEST_NO_BUILD=1`).
 * Skipped, with a message, only when qemu-system-x86_64 is not installed.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the probe.
 */

import assert from "node:assert/strict";
import {
  coreosBootTree,
  makeExt4,
  makeGptDisk,
} from "../../dev/installed_disk.ts";
import { startMock } from "../../dev/mock_infraenv.ts";
import {
  type Accel,
  findQemu,
  probeAccel,
  startVm,
  type Vm,
} from "../../dev/qemu.ts";
import { withTemp } from "../test_util.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const KERNEL = `${BUILD}/vm/vmlinuz`;
const BOOT_INITRD = `${BUILD}/initrd/assisted-bootloader.initrd`;
const MARKER_INITRD = `${BUILD}/vm/marker.initrd`;
const GUEST_ADDRESS = "10.0.2.100";
/** QEMU's MAC for the first NIC: what the bootloader sends as `mac=`. */
const GUEST_MAC = "52:54:00:12:34:56";
/** Hard limit per VM: two kernels boot under TCG (about a minute on 2 cores). */
const VM_TIMEOUT_MS = 240_000;

const qemu = findQemu();
if (!qemu) {
  console.warn(
    "vm_local_boot_test: SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)",
  );
}

let prepared: Promise<Accel> | undefined;

/** Builds the kernel and both initrds, and probes the accelerator, once per run. */
function prepare(): Promise<Accel> {
  prepared ??= (async () => {
    if (Deno.env.get("VM_TEST_NO_BUILD") !== "1") {
      const out = await new Deno.Command("make", {
        args: ["-s", "-C", ROOT, "initrd", "marker-initrd"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(
        out.success,
        `make initrd marker-initrd failed:\n${
          new TextDecoder().decode(out.stderr)
        }`,
      );
    }
    return await probeAccel(KERNEL, { cacheFile: `${BUILD}/vm/accel.json` });
  })();
  return prepared;
}

/** Boots the bootloader initramfs against `infraEnvId` on the mock, with `disk` attached. */
async function bootWithDisk(
  label: string,
  options: { disk: string; hostPort: number; infraEnvId: string },
  body: (vm: Vm) => Promise<void>,
): Promise<void> {
  const serialLog = `${BUILD}/vm/${label}.serial.log`;
  const vm = startVm({
    kernel: KERNEL,
    initrd: BOOT_INITRD,
    append: [
      "console=ttyS0",
      "panic=-1",
      `assisted.api_url=http://${GUEST_ADDRESS}/api`,
      `assisted.infra_env_id=${options.infraEnvId}`,
      "assisted.on_failure=poweroff",
      "assisted.verbose=1",
      "assisted.progress=lines",
    ].join(" "),
    disk: options.disk,
    accel: await prepare(),
    memoryMiB: 768,
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

/** A disk like an installed RHCOS's: BIOS-BOOT, EFI-SYSTEM, boot (ext4, `tree`), root. */
async function installedDisk(
  dir: string,
  tree: Parameters<typeof makeExt4>[1],
): Promise<string> {
  await makeExt4(`${dir}/boot.img`, tree, { label: "boot" });
  await makeGptDisk(`${dir}/disk.img`, [
    { name: "BIOS-BOOT", sizeMiB: 1 },
    { name: "EFI-SYSTEM", sizeMiB: 2 },
    { name: "boot", image: `${dir}/boot.img` },
    { name: "root", sizeMiB: 4 },
  ]);
  return `${dir}/disk.img`;
}

Deno.test({
  name:
    "vm: an installed host kexecs its disk's default entry, $ignition_firstboot expanded from the stamp",
  ignore: !qemu,
  async fn() {
    await prepare();
    const id = crypto.randomUUID().slice(0, 8);
    const kernel = await Deno.readFile(KERNEL);
    const initrd = await Deno.readFile(MARKER_INITRD);
    await withTemp(async (dir) => {
      // Two deployments: ostree-2 is the default (GRUB's first), ostree-1 the rollback.
      const disk = await installedDisk(
        dir,
        coreosBootTree([
          {
            n: 2,
            kernel,
            initrd,
            options:
              `console=ttyS0 panic=-1 assisted_marker=installed-${id} $ignition_firstboot ostree=/ostree/boot.1/rhcos/2/0 rw`,
          },
          {
            n: 1,
            kernel,
            initrd,
            options:
              `console=ttyS0 panic=-1 assisted_marker=rollback-${id} $ignition_firstboot`,
          },
        ], {
          firstboot:
            "set ignition_network_kcmdline='ip=10.0.2.15::10.0.2.2:255.255.255.0:node0:eth0:none rd.neednet=1'\n",
        }),
      );
      const mock = await startMock({
        authMode: "none",
        sameOrigin: true,
        publicBaseUrl: `http://${GUEST_ADDRESS}`,
        installedMacs: [GUEST_MAC],
      });
      try {
        await bootWithDisk("local-boot", {
          disk,
          hostPort: Number(new URL(mock.baseUrl).port),
          infraEnvId: mock.infraEnvId,
        }, async (vm) => {
          const first = await vm.waitFor(
            /assisted-initrd: starting the bootloader/,
          );
          await vm.waitFor(
            /IPXE booting skipped\. InfraEnv .* is already installed/,
            {
              from: first.index,
            },
          );
          await vm.waitFor(
            /local boot: \/dev\/vda3 loader\/entries\/ostree-2-rhcos\.conf \(first boot: ignition\.firstboot\)/,
            { from: first.index },
          );
          await vm.waitFor(/kexec_file_load\(/, { from: first.index });
          const line = await vm.waitFor(/assisted-marker: cmdline: (.*)/, {
            from: first.index,
          });
          const exit = await vm.exited;
          assert.equal(
            exit.killed,
            false,
            "the VM did not power off by itself",
          );
          const args = line.match[1].trim().split(" ");
          for (
            const want of [
              "BOOT_IMAGE=/ostree/rhcos-00000002/vmlinuz-6.1.0",
              `assisted_marker=installed-${id}`,
              "ignition.firstboot",
              "ip=10.0.2.15::10.0.2.2:255.255.255.0:node0:eth0:none",
              "rd.neednet=1",
              "ostree=/ostree/boot.1/rhcos/2/0",
            ]
          ) {
            assert.ok(
              args.includes(want),
              `${want} missing from ${line.match[1]}`,
            );
          }
          assert.ok(
            !line.match[1].includes(`rollback-${id}`),
            "the rollback entry booted",
          );
          await vm.waitFor(
            /assisted-marker: file \/init present \(marker initrd\)/,
            { from: first.index },
          );
          assert.ok(
            mock.requests.some((r) =>
              r.path.includes(`mac=${encodeURIComponent(GUEST_MAC)}`)
            ),
            "the MAC request was made",
          );
        });
      } finally {
        await mock.close();
      }
    });
  },
});

Deno.test({
  name:
    "vm: an installed host with no installed system on its disk: a clear message, no kexec",
  ignore: !qemu,
  async fn() {
    await prepare();
    await withTemp(async (dir) => {
      // The partitions are there, the boot partition holds no entries.
      const disk = await installedDisk(dir, { "grub2/grubenv": "" });
      const mock = await startMock({
        authMode: "none",
        sameOrigin: true,
        publicBaseUrl: `http://${GUEST_ADDRESS}`,
        installedMacs: [GUEST_MAC],
      });
      try {
        await bootWithDisk("local-boot-none", {
          disk,
          hostPort: Number(new URL(mock.baseUrl).port),
          infraEnvId: mock.infraEnvId,
        }, async (vm) => {
          const first = await vm.waitFor(
            /assisted-initrd: starting the bootloader/,
          );
          await vm.waitFor(/\/dev\/vda3: a boot partition without entries/, {
            from: first.index,
          });
          await vm.waitFor(
            /no installed system found on the local disks/,
            { from: first.index },
          );
          await vm.waitFor(
            /assisted-initrd: error: the bootloader finished without starting a kernel/,
            { from: first.index },
          );
          const exit = await vm.exited;
          assert.equal(
            exit.killed,
            false,
            "the VM did not power off by itself",
          );
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
    });
  },
});
