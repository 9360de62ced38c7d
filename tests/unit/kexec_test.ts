/**
 * The kexec binding through injected libc fakes (arguments, syscall numbers,
 * errno mapping, hand-off), plus harmless real calls: dlopen, a failing
 * `open`, and `kexec_file_load` with fd -1 (EBADF, or EPERM when not root).
 *
 * SAFETY: no test here calls `kexec_file_load` with a real file or `reboot`.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { checkCanKexec } from "../../lib/kexec/can_kexec.ts";
import { handoffMode, kexecExecute } from "../../lib/kexec/handoff.ts";
import {
  AT_EMPTY_PATH,
  Errno,
  fdInfo,
  KEXEC_FILE_LOAD,
  KEXEC_FILE_NO_INITRAMFS,
  kexecFileLoad,
  type KexecImage,
  type LibcSymbols,
  LINUX_REBOOT_CMD_KEXEC,
  LINUX_REBOOT_CMD_RESTART,
  O_NOFOLLOW,
  openLibc,
  STATX_SIZE,
} from "../../lib/kexec/libc.ts";
import { kexecError } from "../../lib/kexec/errors.ts";
import { kexecLoad } from "../../lib/kexec/load.ts";
import type { FileIdentity } from "../../lib/stage/work_dir.ts";
import {
  captureLog,
  fakeProgram,
  mkdirMode,
  withPath,
  withTemp,
} from "../test_util.ts";
import { configureLog } from "../../lib/log.ts";

interface Call {
  name: string;
  args: unknown[];
}

/** A deterministic identity for a fake path (device 8:1, the inode from the name). */
function identity(path: string, size = 1000): FileIdentity {
  let ino = 7;
  for (const c of path) ino = (ino * 31 + c.charCodeAt(0)) % 1_000_000;
  return { dev: 0x801, ino, size, mtimeMs: 1_700_000_000_123 };
}

/** `verified` for kexecLoad, as load would give it for these paths. */
function verified(kernel: string, initrd?: string): KexecImage["verified"] {
  return {
    kernel: identity(kernel),
    ...(initrd ? { initrd: identity(initrd) } : {}),
  };
}

/** A `struct statx` as the kernel fills it (little-endian). */
function statxBytes(
  info: FileIdentity & { mode?: number; devMajor?: number; devMinor?: number },
): Uint8Array {
  const buf = new Uint8Array(STATX_SIZE);
  const view = new DataView(buf.buffer);
  view.setUint16(28, info.mode ?? 0o100600, true);
  view.setBigUint64(32, BigInt(info.ino), true);
  view.setBigUint64(40, BigInt(info.size), true);
  view.setBigInt64(112, BigInt(Math.floor(info.mtimeMs / 1000)), true);
  view.setUint32(120, (info.mtimeMs % 1000) * 1_000_000 + 999_999, true);
  view.setUint32(136, info.devMajor ?? info.dev >> 8, true);
  view.setUint32(140, info.devMinor ?? info.dev & 0xff, true);
  return buf;
}

function fakeLibc(
  behaviour: {
    syscall?: bigint;
    errno?: number;
    openFails?: string;
    openErrno?: number;
    /** What statx says about a path (default: a regular file, {@linkcode identity}). */
    files?: Record<string, FileIdentity & { mode?: number }>;
  } = {},
): LibcSymbols & { calls: Call[] } {
  const calls: Call[] = [];
  let nextFd = 10;
  let errno = 0;
  const paths = new Map<number, string>();
  return {
    calls,
    open(path, flags) {
      const name = new TextDecoder().decode(path);
      calls.push({ name: "open", args: [name, flags] });
      if (behaviour.openFails && name.startsWith(behaviour.openFails)) {
        errno = behaviour.openErrno ?? Errno.ENOENT;
        return -1;
      }
      paths.set(nextFd, name.replace(/\0$/, ""));
      return nextFd++;
    },
    close(fd) {
      calls.push({ name: "close", args: [fd] });
      return 0;
    },
    statx(dirfd, path, flags, mask, buf) {
      calls.push({ name: "statx", args: [dirfd, path.slice(), flags, mask] });
      const name = paths.get(dirfd);
      if (name === undefined) {
        errno = Errno.EBADF;
        return -1;
      }
      buf.set(statxBytes(behaviour.files?.[name] ?? identity(name)));
      return 0;
    },
    syscall(nr, a1, a2, a3, a4, a5) {
      calls.push({ name: "syscall", args: [nr, a1, a2, a3, a4.slice(), a5] });
      if ((behaviour.syscall ?? 0n) !== 0n) errno = behaviour.errno ?? 0;
      return behaviour.syscall ?? 0n;
    },
    reboot(cmd) {
      calls.push({ name: "reboot", args: [cmd] });
      errno = Errno.EPERM;
      return -1;
    },
    sync() {
      calls.push({ name: "sync", args: [] });
    },
    errno: () => errno,
    strerror: (n) => `fake strerror ${n}`,
  };
}

const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

Deno.test("kexecLoad: fds, cmdline with NUL, length, flags 0 and x86_64 number", () => {
  const libc = fakeLibc();
  kexecLoad({
    kernel: { path: "/w/kernel" },
    initrd: { path: "/w/initrd" },
    cmdline: "console=ttyS0 ü",
    verified: verified("/w/kernel", "/w/initrd"),
  }, { libc, arch: "x86_64" });
  const names = libc.calls.map((c) => c.name);
  assert.deepEqual(names, [
    "open",
    "statx",
    "open",
    "statx",
    "syscall",
    "close",
    "close",
  ]);
  // Never through a link, never blocking on a FIFO.
  const flags0 = O_CLOEXEC | O_NONBLOCK | 0o400000;
  assert.deepEqual(libc.calls[0].args, ["/w/kernel\0", flags0]);
  assert.deepEqual(libc.calls[2].args, ["/w/initrd\0", flags0]);
  // fstat of the very descriptors: statx(fd, "", AT_EMPTY_PATH, …).
  assert.deepEqual(libc.calls[1].args.slice(0, 3), [
    10,
    new Uint8Array([0]),
    AT_EMPTY_PATH,
  ]);
  assert.equal(libc.calls[3].args[0], 11);
  const [nr, kfd, ifd, len, cmdline, flags] = libc.calls[4].args as [
    bigint,
    bigint,
    bigint,
    bigint,
    Uint8Array,
    bigint,
  ];
  assert.equal(nr, 320n);
  assert.equal(kfd, 10n);
  assert.equal(ifd, 11n);
  const expected = new TextEncoder().encode("console=ttyS0 ü\0");
  assert.deepEqual(cmdline, expected);
  assert.equal(len, BigInt(expected.length)); // counts the NUL (and UTF-8 bytes)
  assert.equal(flags, 0n);
  assert.deepEqual(libc.calls.slice(5).map((c) => c.args[0]), [10, 11]);
});

Deno.test("kexecLoad: no initrd → KEXEC_FILE_NO_INITRAMFS, fd -1; numbers per arch", () => {
  for (const [arch, nr] of Object.entries(KEXEC_FILE_LOAD)) {
    const libc = fakeLibc();
    kexecLoad(
      { kernel: { path: "/k" }, cmdline: "", verified: verified("/k") },
      {
        libc,
        arch,
      },
    );
    assert.equal(
      libc.calls[0].args[1],
      O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW[arch],
    );
    const call = libc.calls.find((c) => c.name === "syscall")!;
    assert.equal(call.args[0], BigInt(nr));
    assert.equal(call.args[2], -1n);
    assert.equal(call.args[3], 1n); // just the NUL
    assert.equal(call.args[5], BigInt(KEXEC_FILE_NO_INITRAMFS));
    assert.equal(libc.calls.filter((c) => c.name === "close").length, 1);
  }
  assert.deepEqual(KEXEC_FILE_LOAD, {
    x86_64: 320,
    aarch64: 294,
    s390x: 381,
    ppc64le: 382,
  });
});

Deno.test("kexecLoad: each errno gives its exit code; fds are closed", () => {
  const table: [number, number][] = [
    [Errno.EPERM, ExitCode.KexecPermission],
    [Errno.EKEYREJECTED, ExitCode.KexecSignature],
    [Errno.ENOKEY, ExitCode.KexecSignature],
    [Errno.ENOEXEC, ExitCode.KexecFormat],
    [Errno.EBUSY, ExitCode.KexecBusy],
    [Errno.ENOMEM, ExitCode.KexecMemory],
    [Errno.ENOSYS, ExitCode.KexecUnsupported],
    [Errno.EINVAL, ExitCode.KexecUnsupported],
    [Errno.EBADF, ExitCode.KexecOther],
    [5, ExitCode.KexecOther],
  ];
  for (const [errno, code] of table) {
    const libc = fakeLibc({ syscall: -1n, errno });
    assert.throws(
      () =>
        kexecLoad({
          kernel: { path: "/k" },
          initrd: { path: "/i" },
          cmdline: "x",
          verified: verified("/k", "/i"),
        }, { libc, arch: "aarch64" }),
      (err: unknown) => {
        assert.ok(err instanceof BootError);
        assert.equal(err.exitCode, code, `errno ${errno}`);
        assert.match(err.message, new RegExp(`fake strerror ${errno}`));
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
    assert.equal(libc.calls.filter((c) => c.name === "close").length, 2);
  }
  assert.match(kexecError(Errno.EPERM).message, /root.*lockdown/);
  assert.match(kexecError(Errno.EKEYREJECTED).message, /Secure Boot/);
  assert.match(kexecError(Errno.ENOEXEC).message, /not recognise/);
});

Deno.test("kexecLoad on aarch64: syscall 294 with the x86_64 argument layout, arm64's O_NOFOLLOW; the log names the number", async () => {
  const image = {
    kernel: { path: "/w/kernel.Image" },
    initrd: { path: "/w/initrd" },
    cmdline: "console=ttyAMA0 ignition.firstboot",
    verified: verified("/w/kernel.Image", "/w/initrd"),
  };
  const arm = fakeLibc();
  const [, lines] = await captureLog(() => {
    configureLog({ level: "debug" });
    kexecLoad(image, { libc: arm, arch: "aarch64" });
    return Promise.resolve();
  });
  configureLog({ level: "info" });
  const x86 = fakeLibc();
  kexecLoad(image, { libc: x86, arch: "x86_64" });
  const syscallOf = (libc: ReturnType<typeof fakeLibc>) =>
    libc.calls.find((c) => c.name === "syscall")!.args;
  const [armNr, ...armArgs] = syscallOf(arm);
  const [x86Nr, ...x86Args] = syscallOf(x86);
  assert.equal(armNr, 294n);
  assert.equal(x86Nr, 320n);
  // kernel fd, initrd fd, cmdline length with its NUL, cmdline, flags 0: the same on both.
  assert.deepEqual(armArgs, x86Args);
  // open(O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW): O_NOFOLLOW is
  // 0o100000 on arm64 (arch/arm64/include/uapi/asm/fcntl.h), 0o400000 on x86_64.
  const flagsOf = (libc: ReturnType<typeof fakeLibc>) =>
    libc.calls.filter((c) => c.name === "open").map((c) => c.args[1]);
  assert.deepEqual(flagsOf(arm), [0o2104000, 0o2104000]);
  assert.deepEqual(flagsOf(x86), [0o2404000, 0o2404000]);
  assert.equal(O_NOFOLLOW.aarch64, 0o100000);
  assert.ok(
    lines.some((l) =>
      /kexec_file_load\(.*\) \[syscall 294 on aarch64\]/.test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test("kexecLoad: an initrd that cannot be opened closes the kernel fd, no syscall", () => {
  const libc = fakeLibc({ openFails: "/missing" });
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/k" },
        initrd: { path: "/missing/initrd" },
        cmdline: "",
        verified: verified("/k", "/missing/initrd"),
      }, { libc, arch: "x86_64" }),
    /Cannot open the initrd \/missing\/initrd/,
  );
  assert.deepEqual(libc.calls.map((c) => c.name), [
    "open",
    "statx",
    "open",
    "close",
  ]);
});

Deno.test("kexecLoad: unknown architecture and NUL in cmdline are refused before libc", () => {
  const libc = fakeLibc();
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/k" },
        cmdline: "",
        verified: verified("/k"),
      }, {
        libc,
        arch: "riscv64",
      }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Refused,
  );
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/k" },
        cmdline: "a\0b",
        verified: verified("/k"),
      }, {
        libc,
        arch: "x86_64",
      }),
    /NUL/,
  );
  assert.equal(libc.calls.length, 0);
});

Deno.test("kexecLoad: a descriptor that is not the verified file is refused before the syscall (Disk), fds closed", () => {
  const swaps: [string, FileIdentity & { mode?: number }][] = [
    ["another inode (renamed over)", { ...identity("/w/kernel"), ino: 1 }],
    ["another size", { ...identity("/w/kernel"), size: 999 }],
    ["another device", { ...identity("/w/kernel"), dev: 0x802 }],
    [
      "the same inode given back to a new file (another mtime)",
      { ...identity("/w/kernel"), mtimeMs: 1_700_000_000_124 },
    ],
    ["a FIFO", { ...identity("/w/kernel"), mode: 0o010600 }],
    ["a directory", { ...identity("/w/kernel"), mode: 0o040700 }],
  ];
  for (const [what, file] of swaps) {
    const libc = fakeLibc({ files: { "/w/kernel": file } });
    assert.throws(
      () =>
        kexecLoad({
          kernel: { path: "/w/kernel" },
          initrd: { path: "/w/initrd" },
          cmdline: "",
          verified: verified("/w/kernel", "/w/initrd"),
        }, { libc, arch: "x86_64" }),
      (err: unknown) => {
        assert.ok(err instanceof BootError, what);
        assert.equal(err.exitCode, ExitCode.Disk, what);
        assert.match(
          err.message,
          /kernel \/w\/kernel is not the file that was verified/,
        );
        return true;
      },
      what,
    );
    assert.ok(!libc.calls.some((c) => c.name === "syscall"), what);
    assert.deepEqual(
      libc.calls.filter((c) => c.name === "close").map((c) => c.args[0]),
      [10],
      `${what}: the opened fd is closed`,
    );
  }
  // The initrd is checked the same way.
  const libc = fakeLibc({
    files: { "/w/initrd": { ...identity("/w/initrd"), ino: 5 } },
  });
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/w/kernel" },
        initrd: { path: "/w/initrd" },
        cmdline: "",
        verified: verified("/w/kernel", "/w/initrd"),
      }, { libc, arch: "x86_64" }),
    /initrd \/w\/initrd is not the file that was verified/,
  );
  assert.ok(!libc.calls.some((c) => c.name === "syscall"));
});

Deno.test("kexecLoad: a symbolic link at the path (ELOOP), an unverified initrd, a failing fstat: refused, no syscall", () => {
  const link = fakeLibc({ openFails: "/w/kernel", openErrno: Errno.ELOOP });
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/w/kernel" },
        cmdline: "",
        verified: verified("/w/kernel"),
      }, { libc: link, arch: "x86_64" }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Disk &&
      /symbolic link/.test(err.message),
  );
  const unverified = fakeLibc();
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/w/kernel" },
        initrd: { path: "/w/initrd" },
        cmdline: "",
        verified: verified("/w/kernel"),
      }, { libc: unverified, arch: "x86_64" }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Disk &&
      /never verified/.test(err.message),
  );
  assert.equal(unverified.calls.length, 0);
  const noStat = fakeLibc();
  noStat.statx = () => -1;
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/w/kernel" },
        cmdline: "",
        verified: verified("/w/kernel"),
      }, { libc: noStat, arch: "x86_64" }),
    /Cannot fstat the kernel/,
  );
  assert.ok(!noStat.calls.some((c) => c.name === "syscall"));
});

Deno.test("handoffMode: load-only, force-reboot, PID 1, systemd", () => {
  assert.equal(
    handoffMode({ loadOnly: true, pid1: "systemd", isPid1: false }),
    "none",
  );
  assert.equal(handoffMode({ loadOnly: true, forceReboot: true }), "none");
  assert.equal(
    handoffMode({ forceReboot: true, pid1: "systemd", isPid1: false }),
    "reboot",
  );
  assert.equal(handoffMode({ pid1: "systemd", isPid1: false }), "systemctl");
  assert.equal(handoffMode({ pid1: "systemd", isPid1: true }), "reboot");
  assert.equal(
    handoffMode({ pid1: "init", isPid1: false, forceReboot: true }),
    "reboot",
  );
  assert.equal(
    handoffMode({ pid1: "init", isPid1: false, loadOnly: true }),
    "none",
  );
  for (const pid1 of ["init", "openrc-init", ""]) {
    assert.throws(
      () => handoffMode({ pid1, isPid1: false }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Refused &&
        /not systemd: pass --force-reboot .* or --load-only/.test(err.message),
    );
  }
});

/**
 * Runs `fn` with a fake systemctl of ours in a 0755 directory (the tests
 * inject the runner: it is never run).
 */
async function withSystemctl<T>(
  fn: (systemctl: string) => Promise<T>,
): Promise<T> {
  return await withTemp(async (tmp) => {
    await Deno.chmod(tmp, 0o755);
    return await fn(await fakeProgram(`${await Deno.realPath(tmp)}/systemctl`));
  });
}

Deno.test("kexecExecute: systemctl kexec, its failure, and sync before reboot(KEXEC)", async () => {
  const runs: string[][] = [];
  await withSystemctl(async (systemctl) => {
    await assert.rejects(
      kexecExecute("systemctl", {
        systemctl,
        run: (cmd, args) => {
          runs.push([cmd, ...args]);
          return Promise.resolve(0);
        },
        shutdownWaitMs: 20,
      }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Handoff &&
        /did not shut down within 0 s/.test(err.message),
      "an accepted systemctl kexec waits for the shutdown and never reports success itself",
    );
    assert.deepEqual(runs, [[systemctl, "kexec"]]);
    await assert.rejects(
      kexecExecute("systemctl", { systemctl, run: () => Promise.resolve(1) }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Handoff,
    );
  });
  const libc = fakeLibc();
  await assert.rejects(
    kexecExecute("reboot", { libc }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Handoff,
  );
  assert.deepEqual(libc.calls, [
    { name: "sync", args: [] },
    { name: "reboot", args: [LINUX_REBOOT_CMD_KEXEC] },
  ]);
  assert.equal(LINUX_REBOOT_CMD_KEXEC, 0x45584543);
  const untouched = fakeLibc();
  await kexecExecute("none", {
    libc: untouched,
    run: () => Promise.reject(new Error("ran")),
  });
  assert.equal(untouched.calls.length, 0);
});

Deno.test("kexecExecute with firmware: systemctl reboot, or sync and reboot(RESTART)", async () => {
  const runs: string[][] = [];
  await withSystemctl(async (systemctl) => {
    await assert.rejects(
      kexecExecute("systemctl", {
        firmware: true,
        systemctl,
        run: (cmd, args) => {
          runs.push([cmd, ...args]);
          return Promise.resolve(0);
        },
        shutdownWaitMs: 20,
      }),
      /systemctl reboot was accepted but the system did not shut down/,
    );
    assert.deepEqual(runs, [[systemctl, "reboot"]]);
  });
  const libc = fakeLibc();
  await assert.rejects(
    kexecExecute("reboot", { libc, firmware: true }),
    /reboot\(LINUX_REBOOT_CMD_RESTART\) returned/,
  );
  assert.deepEqual(libc.calls, [
    { name: "sync", args: [] },
    { name: "reboot", args: [LINUX_REBOOT_CMD_RESTART] },
  ]);
  assert.equal(LINUX_REBOOT_CMD_RESTART, 0x01234567);
});

Deno.test("checkCanKexec: not root, unsupported arch, kexec disabled", () => {
  const refused = (err: unknown) =>
    err instanceof BootError && err.exitCode === ExitCode.Refused;
  const ok = { uid: 0, arch: "x86_64", kexecLoadDisabled: "0\n" };
  checkCanKexec(ok);
  assert.throws(() => checkCanKexec({ ...ok, uid: 1000 }), refused);
  assert.throws(() => checkCanKexec({ ...ok, uid: null }), refused);
  assert.throws(() => checkCanKexec({ ...ok, arch: "riscv64" }), refused);
  assert.throws(
    () => checkCanKexec({ ...ok, kexecLoadDisabled: "1\n" }),
    refused,
  );
  assert.throws(
    () => checkCanKexec({ ...ok, kexecLoadDisabled: "" }),
    /no kexec support/,
  );
  assert.throws(() => checkCanKexec({ ...ok, uid: 1000 }), /root.*--no-kexec/);
});

const linux = Deno.build.os === "linux" &&
  KEXEC_FILE_LOAD[Deno.build.arch] !== undefined;
// libc is loaded once per process and stays loaded (openLibc caches it):
// loaded here, before the tests, so that the resource check of none of them
// counts it.
if (linux) openLibc();

Deno.test({
  name:
    "real libc: dlopen, a failing open with errno, kexec_file_load(-1) → EBADF/EPERM",
  ignore: !linux,
  fn() {
    const libc = openLibc();
    const fd = libc.open(
      new TextEncoder().encode("/nonexistent/assisted-bootloader\0"),
      0,
    );
    assert.equal(fd, -1);
    assert.equal(libc.errno(), Errno.ENOENT);
    assert.equal(libc.strerror(Errno.ENOENT), "No such file or directory");
    // kexecLoad with the real libc stops at open: no syscall is made.
    assert.throws(
      () =>
        kexecLoad({
          kernel: { path: "/nonexistent/kernel" },
          cmdline: "",
          verified: verified("/nonexistent/kernel"),
        }),
      /Cannot open the kernel \/nonexistent\/kernel: No such file or directory/,
    );
    // The one real syscall: fd -1 fails before anything is read or loaded.
    // (Never with a real file: see the next test for open + fstat.)
    const cmdline = new Uint8Array([0]);
    const ret = libc.syscall(
      BigInt(KEXEC_FILE_LOAD[Deno.build.arch]),
      -1n,
      -1n,
      1n,
      cmdline,
      BigInt(KEXEC_FILE_NO_INITRAMFS),
    );
    assert.equal(ret, -1n);
    const errno = libc.errno();
    // EBADF: kexec is there and we are root; EPERM: not root (or lockdown);
    // ENOSYS: a kernel built without kexec (this development VM).
    const expected: Record<number, [number, RegExp]> = {
      [Errno.EBADF]: [ExitCode.KexecOther, /Bad file descriptor/],
      [Errno.EPERM]: [ExitCode.KexecPermission, /Operation not permitted/],
      [Errno.ENOSYS]: [ExitCode.KexecUnsupported, /Function not implemented/],
    };
    assert.ok(expected[errno], `unexpected errno ${errno}`);
    const err = kexecError(errno, libc.strerror(errno));
    assert.equal(err.exitCode, expected[errno][0]);
    assert.match(err.message, expected[errno][1]);
  },
});

Deno.test({
  name:
    "real libc: open with O_NOFOLLOW|O_NONBLOCK refuses a link, does not block on a FIFO; statx reads what Deno.stat says",
  ignore: !linux,
  async fn() {
    const libc = openLibc();
    const flags = 0o2000000 | O_NONBLOCK | O_NOFOLLOW[Deno.build.arch];
    const cstr = (path: string) => new TextEncoder().encode(path + "\0");
    await withTemp(async (dir) => {
      await Deno.writeFile(`${dir}/file`, new Uint8Array(12345));
      await Deno.symlink(`${dir}/file`, `${dir}/link`);
      await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
      const fd = libc.open(cstr(`${dir}/file`), flags);
      assert.ok(fd >= 0);
      try {
        const info = fdInfo(libc, fd)!;
        const real = await Deno.stat(`${dir}/file`);
        assert.deepEqual(info, {
          regular: true,
          dev: real.dev,
          ino: real.ino,
          size: 12345,
          mtimeMs: real.mtime!.getTime(),
        });
      } finally {
        libc.close(fd);
      }
      assert.equal(libc.open(cstr(`${dir}/link`), flags), -1);
      assert.equal(libc.errno(), Errno.ELOOP);
      const fifo = libc.open(cstr(`${dir}/fifo`), flags);
      assert.ok(fifo >= 0, "a FIFO opens at once with O_NONBLOCK");
      try {
        assert.equal(fdInfo(libc, fifo)!.regular, false);
      } finally {
        libc.close(fifo);
      }
      // kexecLoad on the link stops at open: no syscall.
      assert.throws(
        () =>
          kexecLoad({
            kernel: { path: `${dir}/link` },
            cmdline: "",
            verified: {
              kernel: { dev: 0, ino: 0, size: 0, mtimeMs: 0 },
            },
          }),
        (err: unknown) =>
          err instanceof BootError && err.exitCode === ExitCode.Disk,
      );
    });
  },
});

Deno.test("kexecError: each errno explains itself in one sentence, with strerror or the number", () => {
  const table: [number, RegExp][] = [
    [Errno.EBUSY, /a kexec image is already loaded or being loaded/],
    [Errno.ENOMEM, /not enough memory to place the kernel and initrd/],
    [Errno.ENOSYS, /not supported by the running kernel, or it rejected/],
    [Errno.EINVAL, /not supported by the running kernel, or it rejected/],
    [Errno.EBADF, /a file descriptor was invalid/],
    [5, /unexpected error/],
  ];
  for (const [errno, explanation] of table) {
    const err = kexecError(errno, "text from strerror");
    assert.match(err.message, /^kexec_file_load failed: /);
    assert.match(err.message, explanation, `errno ${errno}`);
    assert.match(err.message, / \(text from strerror\)$/);
    assert.match(
      kexecError(errno).message,
      new RegExp(` \\(errno ${errno}\\)$`),
    );
  }
});

Deno.test("kexecLoad: an open failing for another reason than a link is KexecOther and says nothing of links; the unknown arch is named", () => {
  const libc = fakeLibc({ openFails: "/k", openErrno: Errno.EACCES });
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/k" },
        cmdline: "",
        verified: verified("/k"),
      }, {
        libc,
        arch: "x86_64",
      }),
    (err: unknown) => {
      assert.ok(err instanceof BootError);
      assert.equal(err.exitCode, ExitCode.KexecOther);
      assert.equal(
        err.message,
        `Cannot open the kernel /k: fake strerror ${Errno.EACCES}`,
      );
      return true;
    },
  );
  assert.throws(
    () =>
      kexecLoad({
        kernel: { path: "/k" },
        cmdline: "",
        verified: verified("/k"),
      }, {
        libc,
        arch: "riscv64",
      }),
    /^BootError: kexec_file_load is not known on riscv64$/,
  );
});

Deno.test("handoffMode: by default this process (not PID 1) asks PID 1's name from /proc/1/comm; the refusal names it", () => {
  assert.equal(handoffMode({ pid1: "systemd" }), "systemctl");
  let comm = "";
  try {
    comm = Deno.readTextFileSync("/proc/1/comm").trim();
  } catch {
    // no /proc: PID 1 is unknown
  }
  if (comm === "systemd") {
    assert.equal(handoffMode({ isPid1: false }), "systemctl");
  } else {
    assert.throws(
      () => handoffMode({ isPid1: false }),
      new RegExp(`PID 1 is ${comm ? `"${comm}"` : "unknown"}, not systemd`),
    );
  }
  assert.throws(
    () => handoffMode({ pid1: "openrc-init", isPid1: false }),
    /^BootError: PID 1 is "openrc-init", not systemd: /,
  );
  assert.throws(
    () => handoffMode({ pid1: "", isPid1: false }),
    /^BootError: PID 1 is unknown, not systemd: /,
  );
});

Deno.test("kexecExecute: a systemctl that cannot start, a failing systemctl and a returning reboot(2) are named", async () => {
  const handoff = (pattern: RegExp) => (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Handoff);
    assert.match(err.message, pattern);
    return true;
  };
  const notFound = new Error("systemctl: not found");
  await withSystemctl(async (systemctl) => {
    await assert.rejects(
      kexecExecute("systemctl", {
        systemctl,
        run: () => Promise.reject(notFound),
      }),
      (err: unknown) =>
        handoff(/^Cannot run systemctl kexec: systemctl: not found$/)(err) &&
        (err as BootError).cause === notFound,
    );
    await assert.rejects(
      kexecExecute("systemctl", { systemctl, run: () => Promise.resolve(3) }),
      handoff(/^systemctl kexec failed with exit code 3$/),
    );
  });
  await assert.rejects(
    kexecExecute("reboot", { libc: fakeLibc() }),
    handoff(
      new RegExp(
        `^reboot\\(LINUX_REBOOT_CMD_KEXEC\\) returned -1: fake strerror ${Errno.EPERM}$`,
      ),
    ),
  );
});

Deno.test("kexecExecute: systemctl is found on PATH and run by that path; none there, or one another user can change, is exit 17 and never run", async () => {
  const handoff = (message: string) => (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Handoff);
    assert.equal(err.message, message);
    return true;
  };
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const mkdir = (name: string, mode: number) =>
      mkdirMode(`${dir}/${name}`, mode);
    const [good, open, empty] = [
      await mkdir("good", 0o755),
      await mkdir("open", 0o777),
      await mkdir("empty", 0o755),
    ];
    // The fakes record that they ran (the real runner runs them).
    const marker = `${dir}/ran`;
    const script = `echo "$0 $*" >> '${marker}'`;
    await fakeProgram(`${good}/systemctl`, { script });
    await fakeProgram(`${open}/systemctl`, { script });
    const wide = await fakeProgram(`${good}/wide`, { script, mode: 0o757 });
    const ran = () => Deno.readTextFile(marker).catch(() => "");
    // Ours, in a 0755 directory: run (by the default runner), by its path.
    await withPath(`.:${good}:${open}`, () =>
      assert.rejects(
        kexecExecute("systemctl", { shutdownWaitMs: 20 }),
        handoff(
          "systemctl kexec was accepted but the system did not shut down within 0 s",
        ),
      ));
    assert.equal(await ran(), `${good}/systemctl kexec\n`);
    await Deno.remove(marker);
    const runs: string[] = [];
    const run = (cmd: string) => {
      runs.push(cmd);
      return Promise.resolve(0);
    };
    // Any runner gets the path found, never the name.
    await withPath(`.:${good}`, () =>
      assert.rejects(
        kexecExecute("systemctl", { run, shutdownWaitMs: 20 }),
        /did not shut down/,
      ));
    assert.deepEqual(runs.splice(0), [`${good}/systemctl`]);
    // Found first in a directory others may write: refused, not the next one.
    await withPath(`${open}:${good}`, () =>
      assert.rejects(
        kexecExecute("systemctl", { run, shutdownWaitMs: 20 }),
        handoff(
          `Cannot run systemctl kexec: systemctl (${open}/systemctl) is reached through ${open}, writable by other users without the sticky bit (mode 0777): whoever can change it decides what this machine boots (chmod go-w ${open})`,
        ),
      ));
    // Given by its path: checked all the same.
    await assert.rejects(
      kexecExecute("systemctl", {
        systemctl: wide,
        run,
        firmware: true,
        shutdownWaitMs: 20,
      }),
      handoff(
        `Cannot run systemctl reboot: ${wide} is writable by other users (mode 0757): whoever can change it decides what this machine boots (chmod go-w ${wide})`,
      ),
    );
    // None on PATH (a relative entry holding one does not count).
    const cwd = Deno.cwd();
    Deno.chdir(good);
    try {
      await withPath(`.:systemctl:${empty}`, () =>
        assert.rejects(
          kexecExecute("systemctl", { run, shutdownWaitMs: 20 }),
          handoff("Cannot run systemctl kexec: no systemctl on PATH"),
        ));
    } finally {
      Deno.chdir(cwd);
    }
    assert.deepEqual(runs, []);
    assert.equal(await ran(), "");
  });
});

Deno.test("checkCanKexec: by default the process's uid and the running kernel's kexec_load_disabled decide; the refusal lists the known architectures", () => {
  let uid: number | null = null;
  try {
    uid = Deno.uid();
  } catch {
    // no uid on this platform
  }
  let sysctl: string | undefined;
  try {
    sysctl = Deno.readTextFileSync("/proc/sys/kernel/kexec_load_disabled");
  } catch {
    // no such sysctl
  }
  const arch = "x86_64";
  // The uid alone (the sysctl given).
  if (uid === 0) checkCanKexec({ arch, kexecLoadDisabled: "0" });
  else {
    assert.throws(
      () => checkCanKexec({ arch, kexecLoadDisabled: "0" }),
      /Kexec needs root/,
    );
  }
  // The sysctl alone (uid 0 given).
  if (sysctl === undefined) {
    assert.throws(() => checkCanKexec({ arch, uid: 0 }), /no kexec support/);
  } else if (sysctl.trim() === "1") {
    assert.throws(() => checkCanKexec({ arch, uid: 0 }), /is disabled/);
  } else {
    checkCanKexec({ arch, uid: 0 });
  }
  assert.throws(
    () => checkCanKexec({ arch: "mips", uid: 0, kexecLoadDisabled: "0" }),
    new RegExp(
      `^BootError: Unsupported architecture mips: kexec_file_load is known on ${
        Object.keys(KEXEC_FILE_LOAD).join(", ")
      }$`,
    ),
  );
  assert.ok(Object.keys(KEXEC_FILE_LOAD).length > 1);
  assert.throws(
    () => checkCanKexec({ arch, uid: 0, kexecLoadDisabled: "1\n" }),
    /^BootError: Kexec is disabled on this machine \(kernel\.kexec_load_disabled = 1\)$/,
  );
});

Deno.test({
  name: "real libc: close releases the descriptor",
  ignore: !linux,
  async fn() {
    const libc = openLibc();
    await withTemp(async (dir) => {
      await Deno.writeTextFile(`${dir}/f`, "x");
      const fd = libc.open(new TextEncoder().encode(`${dir}/f\0`), 0);
      assert.ok(fd >= 0);
      assert.equal(Deno.readLinkSync(`/proc/self/fd/${fd}`), `${dir}/f`);
      assert.equal(libc.close(fd), 0);
      assert.throws(() => Deno.readLinkSync(`/proc/self/fd/${fd}`));
    });
  },
});

Deno.test("kexecFileLoad: an architecture without a known syscall number is refused before any call", () => {
  const libc = fakeLibc();
  const files = { kernelFd: 10, initrdFd: -1, close() {} };
  assert.throws(
    () =>
      kexecFileLoad(files, {
        kernel: { path: "/k" },
        cmdline: "",
        verified: verified("/k"),
      }, { arch: "riscv64", libc }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Refused &&
      err.message === "kexec_file_load is not known on riscv64",
  );
  assert.deepEqual(libc.calls.filter((c) => c.name === "syscall"), []);
});
