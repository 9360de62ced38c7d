/**
 * Booting the installed system, on a fake machine (a sysfs-like tree, image
 * files as partitions, a mountinfo): which boot partition and entry is
 * chosen, what is skipped, what the command line becomes, and that what is
 * staged is verified and is exactly what `kexec_file_load` gets.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { coreosBootTree, makeExt4 } from "../../dev/installed_disk.ts";
import { fakeKernel, newcArchive } from "../../dev/mock_infraenv.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { kexecLoad } from "../../lib/kexec/load.ts";
import {
  findLocalBoot,
  type LocalKexecPlan,
} from "../../lib/local_boot/find.ts";
import { stageLocalBoot } from "../../lib/local_boot/stage.ts";
import { disksInUse, listPartitions } from "../../lib/local_boot/disks.ts";
import { lockWorkDir } from "../../lib/stage/work_dir.ts";
import { type FakeDisk, makeFakeMachine } from "../fake_machine.ts";
import { captureLog, filesLibc, withTemp } from "../test_util.ts";

const enc = new TextEncoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
/** A bzImage that accepts a command line of up to 2048 bytes. */
const KERNEL = fakeKernel(200_000);
new DataView(KERNEL.buffer).setUint32(0x238, 2048, true);
const OLD_KERNEL = fakeKernel(150_000);
const INITRD = await gzip(
  newcArchive([{ name: "init", data: enc.encode("#!/bin/sh\n") }]),
);
const OPTIONS =
  "ignition.platform.id=metal $ignition_firstboot ostree=/ostree/boot.1/rhcos/1/0 root=UUID=abc rw";

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const bootError = (code: number, message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BootError, String(err));
  assert.equal(err.exitCode, code, err.message);
  assert.match(err.message, message);
  return true;
};

/** A machine with `disks` under `dir`; returns the paths to pass. */
async function machine(
  dir: string,
  disks: FakeDisk[],
  mounted: string[] = [],
) {
  const root = `${dir}/machine`;
  await makeFakeMachine(root, disks, mounted);
  return {
    sysDir: `${root}/sys`,
    devDir: `${root}/dev`,
    procDir: `${root}/proc`,
  };
}

/** An installed RHCOS boot partition image: ostree-2 (new, default) and ostree-1 (old). */
async function installedBoot(
  dir: string,
  options: { firstboot?: string; grubenv?: Record<string, string> } = {},
  name = "boot.img",
): Promise<string> {
  const image = `${dir}/${name}`;
  await makeExt4(
    image,
    coreosBootTree([
      { n: 2, kernel: KERNEL, initrd: INITRD, options: OPTIONS },
      {
        n: 1,
        kernel: OLD_KERNEL,
        initrd: INITRD,
        options: "old=1 $ignition_firstboot",
      },
    ], options),
    { label: "boot" },
  );
  return image;
}

Deno.test("local boot: the default entry of the installed disk's boot partition, as GRUB would boot it", async () => {
  await withTemp(async (dir) => {
    const boot = await installedBoot(dir, { firstboot: "" });
    const paths = await machine(dir, [
      // The running system's disk: its own boot partition must be skipped.
      {
        name: "vda",
        major: 252,
        partitions: [{ partLabel: "boot", image: boot }, { partLabel: "root" }],
      },
      {
        name: "vdb",
        major: 252,
        minor: 16,
        partitions: [
          { partLabel: "BIOS-BOOT" },
          { partLabel: "EFI-SYSTEM" },
          { partLabel: "boot", image: boot },
          { partLabel: "root" },
        ],
      },
    ], ["252:2"]);
    assert.deepEqual([...await disksInUse(paths)], ["vda"]);
    assert.deepEqual(
      (await listPartitions(paths)).map((p) =>
        `${p.name}:${p.disk}:${p.partLabel}`
      ),
      [
        "vda1:vda:boot",
        "vda2:vda:root",
        "vdb1:vdb:BIOS-BOOT",
        "vdb2:vdb:EFI-SYSTEM",
        "vdb3:vdb:boot",
        "vdb4:vdb:root",
      ],
    );
    const [plan, logs] = await captureLog(() =>
      findLocalBoot("IPXE booting skipped", paths)
    );
    assert.deepEqual(plan, {
      action: "local-kexec",
      reason: "IPXE booting skipped",
      device: `${paths.devDir}/vdb3`,
      entry: "loader/entries/ostree-2-rhcos.conf",
      title: "rhcos (ostree:0)",
      kernel: "/ostree/rhcos-00000002/vmlinuz-6.1.0",
      initrds: ["/ostree/rhcos-00000002/initramfs-6.1.0.img"],
      cmdline:
        "BOOT_IMAGE=/ostree/rhcos-00000002/vmlinuz-6.1.0 ignition.platform.id=metal ignition.firstboot ostree=/ostree/boot.1/rhcos/1/0 root=UUID=abc rw",
      firstboot: true,
    });
    assert.ok(
      logs.some((l) =>
        /vda1: on vda, the disk the running system uses: skipped/.test(l)
      ),
      logs.join("\n"),
    );
  });
});

Deno.test("local boot: grubenv's saved_entry wins; no stamp, no ignition.firstboot; the fs label alone is enough", async () => {
  await withTemp(async (dir) => {
    const boot = await installedBoot(dir, {
      grubenv: { saved_entry: "ostree-1-rhcos", boot_success: "1" },
    });
    const paths = await machine(dir, [{
      name: "sda",
      major: 8,
      // An MBR partition (no PARTNAME) whose file system is labelled boot.
      partitions: [{}, { image: boot }],
    }]);
    const [plan] = await captureLog(() => findLocalBoot("r", paths));
    assert.equal(plan?.device, `${paths.devDir}/sda2`);
    assert.equal(plan?.entry, "loader/entries/ostree-1-rhcos.conf");
    assert.equal(plan?.kernel, "/ostree/rhcos-00000001/vmlinuz-6.1.0");
    assert.equal(
      plan?.cmdline,
      "BOOT_IMAGE=/ostree/rhcos-00000001/vmlinuz-6.1.0 old=1",
    );
    assert.equal(plan?.firstboot, false);
  });
});

Deno.test("local boot: nothing installed, only the running disk, or an unreadable partition: undefined, and why", async () => {
  await withTemp(async (dir) => {
    const boot = await installedBoot(dir);
    const empty = `${dir}/empty.img`;
    await makeExt4(empty, { "grub2/grubenv": "" }, { label: "boot" });
    const paths = await machine(dir, [
      {
        name: "vda",
        major: 252,
        partitions: [{ partLabel: "boot", image: boot }],
      },
      // A boot partition without entries, and one that is not ext4 at all.
      {
        name: "nvme0n1",
        major: 259,
        partitions: [{ partLabel: "boot", image: empty }, {
          partLabel: "boot",
        }],
      },
    ], ["252:0"]);
    const [plan, logs] = await captureLog(() => findLocalBoot("r", paths));
    assert.equal(plan, undefined);
    const text = logs.join("\n");
    assert.match(text, /nvme0n1p1: a boot partition without entries/);
    assert.match(text, /nvme0n1p2: cannot read it \(no ext2\/3\/4 file system/);
    assert.match(
      text,
      /no installed system found on the local disks \(3 partition\(s\), 1 boot partition\(s\) not in use; in use: vda\)/,
    );
    // Nothing at all: no /sys/class/block.
    const [none] = await captureLog(() =>
      findLocalBoot("r", {
        sysDir: `${dir}/nowhere`,
        procDir: `${dir}/nowhere`,
      })
    );
    assert.equal(none, undefined);
  });
});

Deno.test("local boot: of two installed disks the first boots, the other is named", async () => {
  await withTemp(async (dir) => {
    const a = await installedBoot(dir, {}, "a.img");
    const b = await installedBoot(dir, {}, "b.img");
    const paths = await machine(dir, [
      {
        name: "sdb",
        major: 8,
        minor: 16,
        partitions: [{ partLabel: "boot", image: b }],
      },
      { name: "sda", major: 8, partitions: [{ partLabel: "boot", image: a }] },
    ]);
    const [plan, logs] = await captureLog(() => findLocalBoot("r", paths));
    assert.equal(plan?.device, `${paths.devDir}/sda1`);
    assert.ok(
      logs.some((l) => l.includes("sdb1 holds an installed system too")),
      logs.join("\n"),
    );
  });
});

Deno.test("local boot: staging copies, verifies and assembles; kexec_file_load gets exactly those files", async () => {
  await withTemp(async (dir) => {
    const boot = await installedBoot(dir, { firstboot: "" });
    const paths = await machine(dir, [{
      name: "vdb",
      major: 252,
      minor: 16,
      partitions: [{ partLabel: "boot", image: boot }],
    }]);
    const [plan] = await captureLog(() => findLocalBoot("r", paths));
    const work = `${dir}/work`;
    using lock = await lockWorkDir(work);
    const [staged] = await captureLog(() =>
      stageLocalBoot(plan!, { lock, arch: "x86_64" })
    );
    assert.equal(staged.kernel.path, `${work}/kernel`);
    assert.equal(staged.kernel.sha256, sha(KERNEL));
    assert.equal(staged.kernel.format, "bzimage");
    assert.equal(staged.initrd?.parts[0].sha256, sha(INITRD));
    assert.equal(staged.initrd?.parts[0].path, plan!.initrds[0]);
    assert.deepEqual(
      [...Deno.readDirSync(work)].map((e) => e.name).sort(),
      [".lock", "initrd", "kernel"],
      "the parts are gone once assembled",
    );
    const { libc, opened } = filesLibc();
    let cmdline = "";
    libc.syscall = (_nr, _k, _i, _len, text) => {
      cmdline = new TextDecoder().decode(text).replace(/\0$/, "");
      return 0n;
    };
    kexecLoad(staged, { libc, arch: "x86_64" });
    assert.equal(sha(opened[0]), sha(KERNEL));
    assert.equal(sha(opened[1]), staged.initrd!.sha256);
    assert.equal(cmdline, plan!.cmdline);
    assert.match(cmdline, / ignition\.firstboot /);
    // Replaced after staging: never loaded.
    await Deno.writeFile(`${work}/kernel.new`, KERNEL);
    await Deno.rename(`${work}/kernel.new`, `${work}/kernel`);
    assert.throws(
      () => kexecLoad(staged, { libc: filesLibc().libc, arch: "x86_64" }),
      bootError(ExitCode.Disk, /not the file that was verified/),
    );
  });
});

Deno.test("local boot: a file that is not a kernel or an initrd, a missing one, a command line too long: exit 6, nothing left", async () => {
  await withTemp(async (dir) => {
    const html = enc.encode("<!DOCTYPE html><html>not a kernel</html>");
    const cases: [
      string,
      Partial<LocalKexecPlan>,
      Record<string, Uint8Array | string>,
      RegExp,
    ][] = [
      [
        "html kernel",
        {},
        { "k": html },
        /Kernel .*:\/k is an HTML page, not a kernel/,
      ],
      [
        "truncated kernel",
        {},
        { "k": KERNEL.slice(0, 100_000) },
        /is truncated/,
      ],
      [
        "text initrd",
        {},
        { "i": "just text\n" },
        /Initrd .*:\/i is of an unknown format/,
      ],
      [
        "missing initrd",
        { initrds: ["/nope"] },
        {},
        /:\/nope cannot be read: .*no such file/,
      ],
      [
        "long cmdline",
        { cmdline: "x".repeat(5000) },
        {},
        /command line is 5000 bytes; this kernel accepts at most 2048/,
      ],
    ];
    for (const [what, change, files, message] of cases) {
      const image = `${dir}/fs.img`;
      await makeExt4(image, { k: KERNEL, i: INITRD, ...files }, {
        label: "boot",
      });
      const work = `${dir}/work-${what.replaceAll(" ", "-")}`;
      using lock = await lockWorkDir(work);
      const plan: LocalKexecPlan = {
        action: "local-kexec",
        reason: "r",
        device: image,
        entry: "loader/entries/x.conf",
        kernel: "/k",
        initrds: ["/i"],
        cmdline: "a=1",
        firstboot: false,
        ...change,
      };
      await assert.rejects(
        captureLog(() => stageLocalBoot(plan, { lock, arch: "x86_64" })),
        bootError(ExitCode.Verify, message),
        what,
      );
      assert.deepEqual(
        [...Deno.readDirSync(work)].map((e) => e.name),
        [".lock"],
        `${what}: nothing left`,
      );
    }
  });
});
