/**
 * The memory preflight's pure parts: `/proc/meminfo` and `/proc/self/mounts`
 * as the kernel writes them, the live rootfs of a command line as the kernel
 * splits it, and the arithmetic of the two checks.
 */

import assert from "node:assert/strict";
import {
  inRam,
  liveRootfsUrl,
  memoryShortfall,
  parseMeminfo,
} from "../../lib/stage/preflight.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

Deno.test("parseMeminfo: MemTotal and MemAvailable in bytes; without MemTotal, nothing", () => {
  const text = `MemTotal:        8039272 kB
MemFree:          211816 kB
MemAvailable:    5023456 kB
Buffers:          123456 kB
`;
  assert.deepEqual(parseMeminfo(text), {
    total: 8039272 * 1024,
    available: 5023456 * 1024,
  });
  // Before Linux 3.14 there is no MemAvailable.
  assert.deepEqual(parseMeminfo("MemTotal: 1024 kB\nMemFree: 10 kB\n"), {
    total: 1024 * 1024,
  });
  assert.equal(parseMeminfo("MemFree: 10 kB\n"), undefined);
  assert.equal(parseMeminfo(""), undefined);
  assert.equal(parseMeminfo("MemTotal: lots\n"), undefined);
});

Deno.test("liveRootfsUrl: the last coreos.live.rootfs_url among the kernel's parameters, http or https only", () => {
  const template =
    'initrd=initrd coreos.live.rootfs_url=https://img.example.com/boot-artifacts/rootfs?arch=x86_64&version=4.18 random.trust_cpu=on ignition.firstboot console=tty1 coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"';
  assert.equal(
    liveRootfsUrl(template),
    "https://img.example.com/boot-artifacts/rootfs?arch=x86_64&version=4.18",
  );
  assert.equal(
    liveRootfsUrl(
      "coreos.live.rootfs_url=http://a/1 x coreos.live.rootfs_url=http://b/2",
    ),
    "http://b/2",
  );
  // Quoted as the kernel unquotes it.
  assert.equal(
    liveRootfsUrl('"coreos.live.rootfs_url=http://a/r oot"'),
    "http://a/r oot",
  );
  // Inside another argument's quoted value, after `--` (init's), or another scheme: none.
  assert.equal(
    liveRootfsUrl('p="coreos.live.rootfs_url=http://a/r" q'),
    undefined,
  );
  assert.equal(
    liveRootfsUrl("a -- coreos.live.rootfs_url=http://a/r"),
    undefined,
  );
  assert.equal(liveRootfsUrl("coreos.live.rootfs_url=tftp://a/r"), undefined);
  assert.equal(liveRootfsUrl("coreos.live.rootfs_url"), undefined);
  assert.equal(liveRootfsUrl(""), undefined);
});

Deno.test("inRam: the mount with the longest mount point holding the path, the last listed among equals", () => {
  const initramfs =
    "rootfs / rootfs rw,size=4029k 0 0\nproc /proc proc rw 0 0\n";
  assert.equal(inRam("/var/lib/assisted-bootloader", initramfs), true);
  const disk = [
    "rootfs / rootfs rw 0 0",
    "/dev/sda1 / ext4 rw,relatime 0 0",
    "tmpfs /run tmpfs rw,nosuid 0 0",
    "tmpfs /tmp tmpfs rw 0 0",
    "/dev/sdb1 /run/media/disk\\040one xfs rw 0 0",
  ].join("\n");
  assert.equal(inRam("/var/lib/assisted-bootloader", disk), false);
  assert.equal(inRam("/tmp/ab", disk), true);
  assert.equal(inRam("/tmp", disk), true);
  assert.equal(inRam("/run/ab", disk), true);
  assert.equal(inRam("/running/ab", disk), false, "a prefix is not a parent");
  assert.equal(inRam("/run/media/disk one/ab", disk), false);
  assert.equal(inRam("/x", "none / ramfs rw 0 0\n"), true);
  assert.equal(inRam("/x", ""), false);
});

Deno.test("memoryShortfall: the files and kexec's copy against MemAvailable (twice in RAM), with the rootfs against MemTotal", () => {
  const sizes = { kernel: 100 * MiB, initrds: [150 * MiB, 50 * MiB] };
  const meminfo = { total: 4 * GiB, available: 500 * MiB };
  // 300 MiB: kexec's copy fits in 500 MiB; with the files in RAM too, 600 MiB does not.
  assert.equal(
    memoryShortfall(sizes, meminfo, { workDirInRam: false }),
    undefined,
  );
  const twice = memoryShortfall(sizes, meminfo, { workDirInRam: true });
  assert.equal(
    twice,
    "This machine has 500.0 MiB of memory available and the boot needs at least 600.0 MiB before the new kernel starts: the kernel and initrd (300.0 MiB) twice, as files in the work directory, which is in RAM, and as kexec's copy (--no-preflight skips this check)",
  );
  assert.match(
    memoryShortfall(sizes, { total: 4 * GiB, available: 299 * MiB }, {
      workDirInRam: false,
    })!,
    /299\.0 MiB of memory available .* at least 300\.0 MiB .*: kexec's copy of the kernel and initrd \(300\.0 MiB\)/,
  );
  // Exactly enough is enough.
  assert.equal(
    memoryShortfall(sizes, { total: 300 * MiB, available: 600 * MiB }, {
      workDirInRam: true,
    }),
    undefined,
  );

  // The new kernel holds the kernel, the initrd and the live rootfs in MemTotal.
  const live = { ...sizes, rootfs: 900 * MiB };
  assert.equal(
    memoryShortfall(live, { total: 1200 * MiB, available: 1 * GiB }, {
      workDirInRam: false,
    }),
    undefined,
  );
  assert.equal(
    memoryShortfall(live, { total: 1199 * MiB, available: 1 * GiB }, {
      workDirInRam: false,
    }),
    "This machine has 1199.0 MiB of memory and the new kernel needs at least 1200.0 MiB: the kernel and initrd (300.0 MiB) and the live rootfs (900.0 MiB) it loads into RAM (--no-preflight skips this check)",
  );
  // Without MemAvailable only MemTotal is checked.
  assert.equal(
    memoryShortfall(sizes, { total: 300 * MiB }, { workDirInRam: true }),
    undefined,
  );
  assert.match(
    memoryShortfall(sizes, { total: 299 * MiB }, { workDirInRam: true })!,
    /new kernel needs at least 300\.0 MiB: the kernel and initrd \(300\.0 MiB\) \(/,
  );
});

Deno.test("memoryShortfall: unknown sizes count as 0 (a lower bound), so what is known can still refuse", () => {
  const meminfo = { total: 1 * GiB, available: 512 * MiB };
  assert.equal(
    memoryShortfall(
      { initrds: [undefined], rootfs: undefined },
      meminfo,
      { workDirInRam: true },
    ),
    undefined,
  );
  assert.match(
    memoryShortfall(
      { kernel: undefined, initrds: [undefined], rootfs: 2 * GiB },
      meminfo,
      { workDirInRam: true },
    )!,
    /needs at least 2048\.0 MiB: the kernel and initrd \(0\.0 MiB\) and the live rootfs \(2048\.0 MiB\)/,
  );
  assert.match(
    memoryShortfall(
      { kernel: 300 * MiB, initrds: [undefined] },
      meminfo,
      { workDirInRam: true },
    )!,
    /512\.0 MiB of memory available .* at least 600\.0 MiB/,
  );
});
