/**
 * The kexec-tools fallback of `kexecLoad` through injected fakes: when
 * `kexec_file_load` fails with ENOSYS or ENOEXEC, `kexec -l -c` runs on the
 * same files and command line (no shell), only where lockdown allows it; the
 * lockdown messages; the lockdown state and where `kexec` is found (a
 * `kexec` another user can change is never run).
 *
 * SAFETY: every test injects libc and the program runner: nothing here calls
 * `kexec_file_load` or runs the real `kexec`.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  Errno,
  type KexecImage,
  type LibcSymbols,
} from "../../lib/kexec/libc.ts";
import { type KexecFallback, kexecLoad } from "../../lib/kexec/load.ts";
import {
  KEXEC_DIRS,
  kexecToolsArgs,
  kexecToolsLoad,
  lockdownState,
  runProgram,
  type RunResult,
} from "../../lib/kexec/tools.ts";
import type { FileIdentity } from "../../lib/stage/work_dir.ts";
import {
  captureLog,
  fakeProgram,
  mkdirMode,
  withPath,
  withTemp,
} from "../test_util.ts";

/** What `load` verified: the identity statx reports for every file of the fake libc. */
const IDENTITY: FileIdentity = {
  dev: 0x801,
  ino: 4242,
  size: 1000,
  mtimeMs: 1_700_000_000_000,
};

/**
 * A libc whose kexec_file_load fails with `errno` (0: succeeds); `open` gives
 * descriptors 10, 11…, each the verified file (statx).
 */
function libcFailing(errno: number): LibcSymbols & { syscalls: number } {
  let last = 0;
  let fd = 10;
  const libc = {
    syscalls: 0,
    open: () => fd++,
    close: () => 0,
    statx: (
      _fd: number,
      _path: Uint8Array,
      _flags: number,
      _mask: number,
      buf: Uint8Array,
    ) => {
      const view = new DataView(buf.buffer, buf.byteOffset);
      view.setUint16(28, 0o100600, true);
      view.setBigUint64(32, BigInt(IDENTITY.ino), true);
      view.setBigUint64(40, BigInt(IDENTITY.size), true);
      view.setBigInt64(112, BigInt(IDENTITY.mtimeMs / 1000), true);
      view.setUint32(136, IDENTITY.dev >> 8, true);
      view.setUint32(140, IDENTITY.dev & 0xff, true);
      return 0;
    },
    syscall: () => {
      libc.syscalls++;
      last = errno;
      return errno === 0 ? 0n : -1n;
    },
    reboot: () => -1,
    sync: () => {},
    errno: () => last,
    strerror: (n: number) =>
      ({
        [Errno.ENOSYS]: "Function not implemented",
        [Errno.ENOEXEC]: "Exec format error",
        [Errno.EPERM]: "Operation not permitted",
        [Errno.EKEYREJECTED]: "Key was rejected by service",
        [Errno.EBUSY]: "Device or resource busy",
        [Errno.EINVAL]: "Invalid argument",
      })[n] ?? `errno ${n}`,
  };
  return libc;
}

/** A fallback that records how it was run and answers `result`. */
function fakeTools(
  result: RunResult | Error = { code: 0, output: "" },
  options: Partial<KexecFallback> = {},
): KexecFallback & { runs: { program: string; args: string[] }[] } {
  const runs: { program: string; args: string[] }[] = [];
  return {
    runs,
    program: "/usr/sbin/kexec",
    lockdown: "none",
    run: (program, args) => {
      runs.push({ program, args });
      if (result instanceof Error) throw result;
      return result;
    },
    ...options,
  };
}

const CMDLINE =
  'console=ttyS0 coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8" $(reboot) ; `id` ü';
const IMAGE: KexecImage = {
  kernel: { path: "/var/lib/assisted-bootloader/kernel" },
  initrd: { path: "/var/lib/assisted-bootloader/initrd.img" },
  cmdline: CMDLINE,
  verified: { kernel: IDENTITY, initrd: IDENTITY },
};

function load(errno: number, fallback: KexecFallback | false, image = IMAGE) {
  return kexecLoad(image, {
    libc: libcFailing(errno),
    arch: "x86_64",
    fallback,
  });
}

function fails(
  fn: () => unknown,
  code: number,
  pattern: RegExp,
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, code, err.message);
    assert.match(err.message, pattern);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
}

Deno.test("fallback: ENOSYS and ENOEXEC load the same files and command line with kexec -l -c, and say so", async () => {
  for (const errno of [Errno.ENOSYS, Errno.ENOEXEC]) {
    const tools = fakeTools();
    const [loader, lines] = await captureLog(() =>
      Promise.resolve(load(errno, tools))
    );
    assert.equal(loader, "kexec_load");
    // One argument each, the command line byte for byte: no shell ever sees
    // it. The files are the verified descriptors, reopened through /proc,
    // never the names (which could lead elsewhere by now).
    assert.deepEqual(tools.runs, [{
      program: "/usr/sbin/kexec",
      args: [
        "-l",
        "-c",
        `/proc/${Deno.pid}/fd/10`,
        `--initrd=/proc/${Deno.pid}/fd/11`,
        `--command-line=${CMDLINE}`,
      ],
    }]);
    assert.ok(
      lines.some((l) =>
        /warn: kexec_file_load failed: .*\((Function not implemented|Exec format error)\): loading the same files with \/usr\/sbin\/kexec -l \(kexec_load\) instead/
          .test(l)
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) =>
        l.endsWith(
          "kernel loaded with kexec-tools (/usr/sbin/kexec -l, kexec_load)",
        )
      ),
      lines.join("\n"),
    );
  }
  // Without an initrd: no --initrd at all.
  assert.deepEqual(
    kexecToolsArgs({ kernel: { path: "/k" }, cmdline: "" }),
    ["-l", "-c", "/k", "--command-line="],
  );
});

Deno.test("fallback: kexec_file_load succeeding, or failing otherwise, never runs kexec", async () => {
  const tools = fakeTools();
  const [loader, lines] = await captureLog(() =>
    Promise.resolve(load(0, tools))
  );
  assert.equal(loader, "kexec_file_load");
  assert.ok(
    lines.some((l) => l.endsWith("kernel loaded with kexec_file_load")),
  );
  for (
    const [errno, code] of [
      [Errno.EBUSY, ExitCode.KexecBusy],
      [Errno.EINVAL, ExitCode.KexecUnsupported],
      [Errno.EPERM, ExitCode.KexecPermission],
      [Errno.ENOMEM, ExitCode.KexecMemory],
    ]
  ) {
    fails(() => load(errno, tools), code, /^kexec_file_load failed: /);
  }
  assert.equal(tools.runs.length, 0);
  // An injected libc without a fallback: none (tests never reach the real kexec).
  fails(
    () => kexecLoad(IMAGE, { libc: libcFailing(Errno.ENOSYS), arch: "x86_64" }),
    ExitCode.KexecUnsupported,
    /^kexec_file_load failed: .*\(Function not implemented\)$/,
  );
});

Deno.test("fallback: not installed, or failing too: the kexec_file_load exit code, both reasons", () => {
  fails(
    () => load(Errno.ENOSYS, fakeTools(undefined, { program: null })),
    ExitCode.KexecUnsupported,
    /\(Function not implemented\); install kexec-tools for the kexec_load fallback$/,
  );
  const failing = fakeTools({
    code: 255,
    output: "Cannot determine the file type of /k\nkexec: load failed\n",
  });
  fails(
    () => load(Errno.ENOEXEC, failing),
    ExitCode.KexecFormat,
    /\(Exec format error\); the fallback failed too: \/usr\/sbin\/kexec exited with code 255: kexec: load failed$/,
  );
  assert.equal(failing.runs.length, 1);
  fails(
    () => load(Errno.ENOSYS, fakeTools(new Error("ENOENT: no such file"))),
    ExitCode.KexecUnsupported,
    /the fallback failed too: cannot run \/usr\/sbin\/kexec: ENOENT: no such file$/,
  );
});

Deno.test("fallback: under lockdown kexec is never run, and the message says the kernel must be signed", () => {
  for (const lockdown of ["integrity", "confidentiality"] as const) {
    const tools = fakeTools(undefined, { lockdown });
    fails(
      () => load(Errno.ENOSYS, tools),
      ExitCode.KexecUnsupported,
      new RegExp(
        `kexec-tools cannot help: kernel lockdown \\(${lockdown}\\) forbids kexec_load, only a kernel signed by a key the running kernel trusts can be loaded$`,
      ),
    );
    // An unsigned kernel under lockdown: EPERM (or a signature errno): say what is needed.
    for (
      const [errno, code] of [
        [Errno.EPERM, ExitCode.KexecPermission],
        [Errno.EKEYREJECTED, ExitCode.KexecSignature],
        [Errno.ENOKEY, ExitCode.KexecSignature],
        [Errno.ENODATA, ExitCode.KexecSignature],
        [Errno.EBADMSG, ExitCode.KexecSignature],
      ]
    ) {
      fails(
        () => load(errno, tools),
        code,
        new RegExp(
          `^kexec_file_load failed: kernel lockdown is on \\(${lockdown}\\), so the kernel must be signed by a key the running kernel trusts`,
        ),
      );
    }
    assert.equal(tools.runs.length, 0);
  }
  // Lockdown unknown (securityfs not mounted): the kernel has the last word, so try.
  const unknown = fakeTools(undefined, { lockdown: "unknown" });
  assert.equal(load(Errno.ENOSYS, unknown), "kexec_load");
  assert.equal(unknown.runs.length, 1);
});

Deno.test("lockdownState: the bracketed mode; no file under a mounted securityfs is none; not mounted is unknown", () => {
  assert.equal(
    lockdownState({ lockdown: "[none] integrity confidentiality\n" }),
    "none",
  );
  assert.equal(
    lockdownState({ lockdown: "none [integrity] confidentiality\n" }),
    "integrity",
  );
  assert.equal(
    lockdownState({ lockdown: "none integrity [confidentiality]\n" }),
    "confidentiality",
  );
  assert.equal(lockdownState({ lockdown: "garbage" }), "unknown");
  const mounted =
    "proc /proc proc rw 0 0\nsecurityfs /sys/kernel/security securityfs rw,nosuid 0 0\n";
  assert.equal(lockdownState({ lockdown: undefined, mounts: mounted }), "none");
  assert.equal(
    lockdownState({ lockdown: undefined, mounts: "proc /proc proc rw 0 0\n" }),
    "unknown",
  );
});

Deno.test("fallback: a file that is not the verified one never reaches kexec either", () => {
  const tools = fakeTools();
  const libc = libcFailing(Errno.ENOSYS);
  const image = {
    ...IMAGE,
    verified: { kernel: { ...IDENTITY, ino: 1 }, initrd: IDENTITY },
  };
  fails(
    () => kexecLoad(image, { libc, arch: "x86_64", fallback: tools }),
    ExitCode.Disk,
    /kernel .* is not the file that was verified/,
  );
  assert.equal(libc.syscalls, 0);
  assert.equal(tools.runs.length, 0);
});

Deno.test("runProgram: no shell, stdin empty, the exit code and stderr then stdout", () => {
  assert.deepEqual(
    runProgram("sh", [
      "-c",
      'cat; echo "$1"; echo err >&2; exit 3',
      "sh",
      "a b",
    ]),
    { code: 3, output: "err\na b\n" },
  );
  assert.deepEqual(runProgram("true", []), { code: 0, output: "" });
});

Deno.test("kexecToolsLoad: the reason is the program's last line of output, trimmed, or the exit code alone", () => {
  const image = { kernel: { path: "/k" }, cmdline: "" };
  const answer = (code: number, output: string) => () => ({ code, output });
  assert.equal(kexecToolsLoad("kx", image, answer(0, "noise")), undefined);
  assert.equal(
    kexecToolsLoad(
      "kx",
      image,
      answer(1, "first\n  second\n   last line  \n\n"),
    ),
    "kx exited with code 1: last line",
  );
  assert.equal(
    kexecToolsLoad("kx", image, answer(2, " \n\n")),
    "kx exited with code 2",
  );
  assert.equal(
    kexecToolsLoad("kx", image, () => {
      throw "not an Error";
    }),
    "cannot run kx: not an Error",
  );
});

Deno.test("fallback: without an initrd only the kernel is passed; without a program given, the kexec on PATH is run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fallback_path_" });
  const saved = Deno.env.get("PATH");
  try {
    // Never run: the fallback's runner is the fake.
    await Deno.writeTextFile(`${dir}/kexec`, "#!/bin/sh\nexit 99\n", {
      mode: 0o755,
    });
    Deno.env.set("PATH", dir);
    const tools = fakeTools({ code: 0, output: "" }, { program: undefined });
    const image: KexecImage = {
      kernel: IMAGE.kernel,
      cmdline: "c",
      verified: { kernel: IDENTITY },
    };
    await captureLog(() => Promise.resolve(load(Errno.ENOSYS, tools, image)));
    assert.deepEqual(tools.runs, [{
      program: `${dir}/kexec`,
      args: ["-l", "-c", `/proc/${Deno.pid}/fd/10`, "--command-line=c"],
    }]);
  } finally {
    if (saved === undefined) Deno.env.delete("PATH");
    else Deno.env.set("PATH", saved);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fallback: kexec is looked for on PATH, then in /usr/sbin and /sbin", async () => {
  assert.deepEqual(KEXEC_DIRS, ["/usr/sbin", "/sbin"]);
  // With none on PATH: this host's kexec-tools there, if any (never run: the
  // runner is the fake).
  const installed = KEXEC_DIRS.map((dir) => `${dir}/kexec`).find((path) => {
    try {
      const info = Deno.statSync(path);
      return info.isFile && (info.mode! & 0o111) !== 0;
    } catch {
      return false;
    }
  });
  await withTemp(async (empty) => {
    const tools = fakeTools(undefined, { program: undefined });
    await withPath(empty, () => {
      if (installed) {
        return captureLog(() => Promise.resolve(load(Errno.ENOSYS, tools)));
      }
      fails(
        () => load(Errno.ENOSYS, tools),
        ExitCode.KexecUnsupported,
        /; install kexec-tools for the kexec_load fallback$/,
      );
    });
    assert.deepEqual(
      tools.runs.map((r) => r.program),
      installed ? [installed] : [],
    );
  });
});

Deno.test("fallback: a kexec another user can change is never run, found on PATH or given: the kexec_file_load exit code, naming it and why", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const mkdir = (name: string, mode: number) =>
      mkdirMode(`${dir}/${name}`, mode);
    const good = await mkdir("good", 0o755);
    const open = await mkdir("open", 0o777);
    await fakeProgram(`${good}/kexec`);
    await fakeProgram(`${open}/kexec`);
    const wide = await fakeProgram(`${good}/wide`, { mode: 0o775 });
    const openWhy =
      `is reached through ${open}, writable by other users without the sticky bit (mode 0777): whoever can change it decides what this machine boots (chmod go-w ${open})`;
    // Found first on PATH in a directory others may write: not the next one.
    const found = fakeTools(undefined, { program: undefined });
    await withPath(`${open}:${good}`, () =>
      fails(
        () => load(Errno.ENOSYS, found),
        ExitCode.KexecUnsupported,
        new RegExp(
          `\\(Function not implemented\\); the fallback is refused: kexec \\(${open}/kexec\\) ${
            RegExp.escape(openWhy)
          }$`,
        ),
      ));
    // Given by its path: walked all the same.
    const given = fakeTools(undefined, { program: `${open}/kexec` });
    fails(
      () => load(Errno.ENOEXEC, given),
      ExitCode.KexecFormat,
      new RegExp(
        `\\(Exec format error\\); the fallback is refused: ${
          RegExp.escape(`${open}/kexec ${openWhy}`)
        }$`,
      ),
    );
    const writable = fakeTools(undefined, { program: wide });
    fails(
      () => load(Errno.ENOSYS, writable),
      ExitCode.KexecUnsupported,
      new RegExp(
        `; the fallback is refused: ${
          RegExp.escape(
            `${wide} is writable by other users (mode 0775): whoever can change it decides what this machine boots (chmod go-w ${wide})`,
          )
        }$`,
      ),
    );
    assert.deepEqual([found.runs, given.runs, writable.runs], [[], [], []]);
    // A lookup that cannot go on otherwise: the fallback failed.
    fails(
      () =>
        load(
          Errno.ENOSYS,
          fakeTools(undefined, { program: `${good}/kexec/kexec` }),
        ),
      ExitCode.KexecUnsupported,
      new RegExp(
        `; the fallback failed too: cannot run ${
          RegExp.escape(good)
        }/kexec/kexec: Not a directory`,
      ),
    );
    // Ours in a 0755 directory: run, by the path checked.
    const ok = fakeTools(undefined, { program: undefined });
    await withPath(
      `${good}:${open}`,
      () => captureLog(() => Promise.resolve(load(Errno.ENOSYS, ok))),
    );
    assert.deepEqual(ok.runs.map((r) => r.program), [`${good}/kexec`]);
  });
});
