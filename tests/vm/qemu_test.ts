/**
 * Tests of the VM harness without a real guest: the QEMU arguments it builds,
 * and a fake `qemu-system-x86_64` (a shell script) that writes to the serial
 * log and starts a helper in its own session like QEMU's guestfwd does.
 */

import assert from "node:assert/strict";
import {
  guestArch,
  probeAccel,
  QEMU_SYSTEM,
  qemuArgs,
  startVm,
} from "../../dev/qemu.ts";

Deno.test("qemuArgs: restricted user networking forwarded to 127.0.0.1 only, disk never written", () => {
  const args = qemuArgs({
    kernel: "k",
    initrd: "i",
    append: "console=ttyS0",
    disk: "d,1.raw",
    forwards: [{ guestAddress: "10.0.2.100", guestPort: 80, hostPort: 8080 }],
  }, { file: "/tmp/serial.log" });
  const netdev = args[args.indexOf("-netdev") + 1];
  assert.equal(
    netdev,
    "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:nc -N 127.0.0.1 8080",
  );
  assert.equal(
    args[args.indexOf("-drive") + 1],
    "file=d,,1.raw,format=raw,if=virtio,snapshot=on",
  );
  assert.deepEqual(
    args.slice(args.indexOf("-kernel"), args.indexOf("-kernel") + 6),
    [
      "-kernel",
      "k",
      "-initrd",
      "i",
      "-append",
      "console=ttyS0",
    ],
  );
  // ttyS0 and ttyS1 both exist and share the log.
  assert.equal(args.filter((a) => a === "chardev:con").length, 2);
  assert.ok(args.includes("file,id=con,path=/tmp/serial.log,mux=on"));
  assert.deepEqual(
    args.slice(args.indexOf("-accel"), args.indexOf("-accel") + 4),
    ["-accel", "tcg", "-cpu", "max"],
  );
  const none = qemuArgs({ kernel: "k", accel: "kvm" }, "stdio");
  assert.ok(none.includes("none") && none[none.indexOf("-nic") + 1] === "none");
  assert.deepEqual(
    none.slice(none.indexOf("-accel"), none.indexOf("-accel") + 4),
    ["-accel", "kvm", "-cpu", "host"],
  );
});

Deno.test("qemuArgs: an IPv6-only network has no IPv4 and no guestfwd (slirp maps [fec0::2] to the host's [::1])", () => {
  const args = qemuArgs({
    kernel: "k",
    ipv6Only: true,
    forwards: [{ guestAddress: "10.0.2.100", guestPort: 80, hostPort: 8080 }],
  }, { file: "/tmp/serial.log" });
  assert.equal(
    args[args.indexOf("-netdev") + 1],
    "user,id=n0,ipv4=off,ipv6=on,restrict=off",
  );
  assert.equal(args[args.indexOf("-device") + 1], "virtio-net-pci,netdev=n0");
  assert.ok(!args.includes("-nic"));
});

Deno.test("qemuArgs: an aarch64 guest boots the virt machine with one UART; arm64 is an alias; no KVM across architectures", async () => {
  const args = qemuArgs({
    arch: "aarch64",
    kernel: "Image",
    append: `console=${QEMU_SYSTEM.aarch64.console}`,
    forwards: [{ guestAddress: "10.0.2.100", guestPort: 80, hostPort: 8080 }],
  }, { file: "/tmp/serial.log" });
  assert.deepEqual(args.slice(0, 6), [
    "-machine",
    "virt",
    "-accel",
    "tcg",
    "-cpu",
    "max,pauth-impdef=on",
  ]);
  assert.equal(args.filter((a) => a === "chardev:con").length, 1);
  assert.equal(args[args.indexOf("-device") + 1], "virtio-net-pci,netdev=n0");
  assert.equal(QEMU_SYSTEM.aarch64.console, "ttyAMA0");
  assert.equal(QEMU_SYSTEM.aarch64.binary, "qemu-system-aarch64");
  const x86 = qemuArgs({ kernel: "k" }, { file: "/tmp/serial.log" });
  assert.ok(!x86.includes("-machine"));
  assert.equal(guestArch("arm64"), "aarch64");
  assert.equal(guestArch("amd64"), "x86_64");
  assert.equal(guestArch("riscv64"), null);
  // A guest of another architecture than the host's never probes KVM (no QEMU is run).
  const other = Deno.build.arch === "aarch64" ? "x86_64" : "aarch64";
  assert.equal(
    await probeAccel("/nonexistent", { arch: other, qemu: "/nonexistent" }),
    "tcg",
  );
});

/** A fake QEMU: writes lines to the `-chardev file` path, starts a helper in a new session, then runs `tail`. */
async function fakeQemu(dir: string, tail: string): Promise<string> {
  const path = `${dir}/fake-qemu`;
  await Deno.writeTextFile(
    path,
    `#!/bin/bash
for a in "$@"; do case $a in file,id=con,path=*) log=\${a#file,id=con,path=}; log=\${log%,mux=on} ;; esac; done
setsid sleep 300 </dev/null >/dev/null 2>&1 &
echo $! > "${dir}/helper.pid"
echo "first line" >> "$log"
printf 'second line\\r\\n' >> "$log"
${tail}
`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** Stops the fake's helper if a failed assertion left it running, and removes `dir`. */
async function cleanup(dir: string): Promise<void> {
  const pid = Number(
    await Deno.readTextFile(`${dir}/helper.pid`).catch(() => "0"),
  );
  if (pid > 0 && alive(pid)) Deno.kill(pid, "SIGKILL");
  await Deno.remove(dir, { recursive: true });
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \([^)]*\) Z/.test(stat);
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

Deno.test("startVm: lines, exit, and the helper QEMU started is stopped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const qemu = await fakeQemu(
      dir,
      'sleep 0.3; echo "last words" >> "$log"; exit 3',
    );
    const vm = startVm({
      kernel: "k",
      serialLog: `${dir}/serial.log`,
      timeoutMs: 20_000,
      qemu,
    });
    const first = await vm.waitFor(/first (\w+)/, { timeoutMs: 10_000 });
    assert.equal(first.match[1], "line");
    const second = await vm.waitFor("second line", { from: first.index + 1 });
    assert.equal(second.line, "second line");
    const exit = await vm.exited;
    assert.equal(exit.code, 3);
    assert.equal(exit.killed, false);
    assert.ok(vm.lines().includes("last words"));
    await assert.rejects(vm.waitFor(/never printed/), /exited before printing/);
    const helper = Number(await Deno.readTextFile(`${dir}/helper.pid`));
    assert.ok(await waitGone(helper, 5000), "the helper outlived the VM");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("startVm: the hard timeout kills a hung VM and its helper; waitFor times out", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const qemu = await fakeQemu(dir, "sleep 300");
    const vm = startVm({
      kernel: "k",
      serialLog: `${dir}/serial.log`,
      timeoutMs: 1500,
      qemu,
    });
    await assert.rejects(
      vm.waitFor(/never/, { timeoutMs: 200 }),
      /within 200 ms/,
    );
    const exit = await vm.exited;
    assert.equal(exit.killed, true);
    assert.ok(exit.atMs < 10_000);
    const helper = Number(await Deno.readTextFile(`${dir}/helper.pid`));
    assert.ok(await waitGone(helper, 5000), "the helper outlived the VM");
  } finally {
    await cleanup(dir);
  }
});

Deno.test("startVm: kill() stops the VM and disposal is idempotent", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const qemu = await fakeQemu(dir, "sleep 300");
    let pid = 0;
    {
      await using vm = startVm({
        kernel: "k",
        serialLog: `${dir}/serial.log`,
        timeoutMs: 60_000,
        qemu,
      });
      pid = vm.pid;
      await vm.waitFor("first line", { timeoutMs: 10_000 });
      const exit = await vm.kill();
      assert.equal(exit.killed, true);
    }
    assert.ok(await waitGone(pid, 5000));
    const helper = Number(await Deno.readTextFile(`${dir}/helper.pid`));
    assert.ok(await waitGone(helper, 5000), "the helper outlived the VM");
  } finally {
    await cleanup(dir);
  }
});
