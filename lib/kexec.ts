/**
 * The kexec binding: `kexec_file_load`, `reboot(LINUX_REBOOT_CMD_KEXEC)` and
 * `sync` through `Deno.dlopen` of libc. This is the only module that knows
 * syscall numbers.
 *
 * Every libc call goes through a {@linkcode LibcSymbols} object, so tests
 * inject fakes and never load a kernel or reboot the machine running them.
 * When `kexec_file_load` cannot take the kernel (ENOSYS, ENOEXEC), the load
 * falls back to kexec-tools (`kexec_tools.ts`), where lockdown allows it.
 *
 * @module
 */

import { BootError, ExitCode, type ExitCodeValue } from "./errors.ts";
import {
  findKexec,
  kexecToolsLoad,
  type Lockdown,
  lockdownState,
  type ProgramRunner,
} from "./kexec_tools.ts";
import { log } from "./log.ts";
import type { FileIdentity } from "./work_dir.ts";

/**
 * `kexec_file_load` syscall numbers by `Deno.build.arch` / `uname -m` name
 * (x86_64: arch/x86/entry/syscalls/syscall_64.tbl; aarch64 uses the generic
 * table, include/uapi/asm-generic/unistd.h).
 */
export const KEXEC_FILE_LOAD: Readonly<Record<string, number>> = {
  x86_64: 320,
  aarch64: 294,
  s390x: 381,
  ppc64le: 382,
};

/** `KEXEC_FILE_NO_INITRAMFS`: load without an initrd. */
export const KEXEC_FILE_NO_INITRAMFS = 4;
/** `LINUX_REBOOT_CMD_KEXEC`: start the loaded kernel (the same on every architecture). */
export const LINUX_REBOOT_CMD_KEXEC = 0x45584543;
/** `LINUX_REBOOT_CMD_RESTART`: reboot through the firmware. */
export const LINUX_REBOOT_CMD_RESTART = 0x01234567;

const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
/** `O_NOFOLLOW` differs between architectures (asm-generic vs arm64/powerpc). */
export const O_NOFOLLOW: Readonly<Record<string, number>> = {
  x86_64: 0o400000,
  aarch64: 0o100000,
  s390x: 0o400000,
  ppc64le: 0o100000,
};
/** `statx` flag: `path` is empty, describe `dirfd` itself (an `fstat`). */
export const AT_EMPTY_PATH = 0x1000;
/** `statx` mask: type, mode, inode, size and times (what {@linkcode kexecLoad} checks). */
export const STATX_BASIC_STATS = 0x7ff;
/** Size of `struct statx` (the same on every architecture). */
export const STATX_SIZE = 256;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/** The libc functions the binding uses (the real ones, or fakes in tests). */
export interface LibcSymbols {
  /** `open(path, flags)`: `path` is NUL-terminated; returns a fd or -1. */
  open(path: Uint8Array, flags: number): number;
  /** `close(fd)`. */
  close(fd: number): number;
  /**
   * `statx(dirfd, path, flags, mask, buf)`: `path` is NUL-terminated, `buf`
   * is {@linkcode STATX_SIZE} bytes; returns 0, or -1 with errno set.
   */
  statx(
    dirfd: number,
    path: Uint8Array,
    flags: number,
    mask: number,
    buf: Uint8Array,
  ): number;
  /** `syscall(nr, a1…a5)`: `cmdline` is NUL-terminated; returns the result or -1. */
  syscall(
    nr: bigint,
    a1: bigint,
    a2: bigint,
    a3: bigint,
    a4: Uint8Array,
    a5: bigint,
  ): bigint;
  /** `reboot(cmd)`: returns only on failure (-1). */
  reboot(cmd: number): number;
  /** `sync()`. */
  sync(): void;
  /** The calling thread's `errno`, read right after a failed call. */
  errno(): number;
  /** `strerror(errno)`. */
  strerror(errno: number): string;
}

let realLibc: LibcSymbols | undefined;

/**
 * Opens libc with `Deno.dlopen` and returns its symbols (cached). Needs
 * `--allow-ffi`; throws a {@linkcode BootError} (KexecUnsupported) when libc
 * cannot be opened.
 */
export function openLibc(): LibcSymbols {
  if (realLibc) return realLibc;
  let lib;
  try {
    lib = Deno.dlopen(
      "libc.so.6",
      {
        open: { parameters: ["buffer", "i32"], result: "i32" },
        close: { parameters: ["i32"], result: "i32" },
        statx: {
          parameters: ["i32", "buffer", "i32", "u32", "buffer"],
          result: "i32",
        },
        // glibc's syscall() is variadic but an assembly shim reading registers:
        // declaring the six integer/pointer arguments we pass is safe. On x86_64
        // and on Linux aarch64 (AAPCS64: variadic arguments go in x0-x7 like
        // named ones, unlike Apple's arm64) each lands in the register the shim
        // moves into the syscall's.
        syscall: {
          parameters: ["i64", "i64", "i64", "u64", "buffer", "u64"],
          result: "i64",
        },
        reboot: { parameters: ["i32"], result: "i32" },
        sync: { parameters: [], result: "void" },
        __errno_location: { parameters: [], result: "pointer" },
        strerror: { parameters: ["i32"], result: "pointer" },
      } as const,
    );
  } catch (err) {
    throw new BootError(
      `Cannot open libc.so.6 for kexec: ${
        err instanceof Error ? err.message : String(err)
      }`,
      ExitCode.KexecUnsupported,
      { cause: err },
    );
  }
  const s = lib.symbols;
  realLibc = {
    open: (path, flags) => s.open(path as Uint8Array<ArrayBuffer>, flags),
    close: (fd) => s.close(fd),
    statx: (dirfd, path, flags, mask, buf) =>
      s.statx(
        dirfd,
        path as Uint8Array<ArrayBuffer>,
        flags,
        mask,
        buf as Uint8Array<ArrayBuffer>,
      ),
    syscall: (nr, a1, a2, a3, a4, a5) =>
      s.syscall(nr, a1, a2, a3, a4 as Uint8Array<ArrayBuffer>, a5) as bigint,
    reboot: (cmd) => s.reboot(cmd),
    sync: () => s.sync(),
    errno: () => {
      const p = s.__errno_location();
      return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
    },
    strerror: (errno) => {
      const p = s.strerror(errno);
      return p ? Deno.UnsafePointerView.getCString(p) : `errno ${errno}`;
    },
  };
  return realLibc;
}

/** errno values (Linux, the same on every architecture we support). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ENOEXEC: 8,
  ENXIO: 6,
  EBADF: 9,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EINVAL: 22,
  ELOOP: 40,
  ENOSYS: 38,
  ENODATA: 61,
  EBADMSG: 74,
  ENOKEY: 126,
  EKEYREJECTED: 129,
} as const;

/**
 * Turns a failed `kexec_file_load` errno into a {@linkcode BootError} with a
 * one-sentence explanation and a distinct exit code.
 */
export function kexecError(errno: number, text = ""): BootError {
  const detail = text ? ` (${text})` : ` (errno ${errno})`;
  const make = (message: string, code: ExitCodeValue) =>
    new BootError(`kexec_file_load failed: ${message}${detail}`, code);
  switch (errno) {
    case Errno.EPERM:
      return make(
        "not permitted: run as root, and check that kernel lockdown or kexec_load_disabled does not forbid kexec",
        ExitCode.KexecPermission,
      );
    case Errno.EKEYREJECTED:
    case Errno.ENOKEY:
    case Errno.ENODATA:
    case Errno.EBADMSG:
      return make(
        "the kernel's signature was rejected: Secure Boot or kexec signature enforcement requires a kernel signed with a trusted key",
        ExitCode.KexecSignature,
      );
    case Errno.ENOEXEC:
      return make(
        "the running kernel does not recognise the image as a kernel for this machine",
        ExitCode.KexecFormat,
      );
    case Errno.EBUSY:
      return make(
        "a kexec image is already loaded or being loaded",
        ExitCode.KexecBusy,
      );
    case Errno.ENOMEM:
      return make(
        "not enough memory to place the kernel and initrd",
        ExitCode.KexecMemory,
      );
    case Errno.ENOSYS:
    case Errno.EINVAL:
      return make(
        "kexec_file_load is not supported by the running kernel, or it rejected the image or command line",
        ExitCode.KexecUnsupported,
      );
    case Errno.EBADF:
      return make("a file descriptor was invalid", ExitCode.KexecOther);
    default:
      return make("unexpected error", ExitCode.KexecOther);
  }
}

/** What {@linkcode kexecLoad} hands to the kernel. */
export interface KexecImage {
  /** Kernel file (bzImage, arm64 Image). */
  kernel: { path: string };
  /** Assembled initrd file, if any. */
  initrd?: { path: string };
  /** Kernel command line (without the trailing NUL). */
  cmdline: string;
  /**
   * The files that were verified (from `load`): the descriptors handed to
   * the kernel must be these very files.
   */
  verified: { kernel: FileIdentity; initrd?: FileIdentity };
}

/** The kexec-tools fallback of {@linkcode kexecLoad} (tests inject every part). */
export interface KexecFallback {
  /** The `kexec` program, `null` when it is not installed (default: {@linkcode findKexec}). */
  program?: string | null;
  /** Runs it (default: `Deno.Command`, no shell). */
  run?: ProgramRunner;
  /** Kernel lockdown (default: {@linkcode lockdownState}). */
  lockdown?: Lockdown;
}

/** Options for {@linkcode kexecLoad}. */
export interface KexecLoadOptions {
  /** libc symbols (default: the real libc; tests inject fakes). */
  libc?: LibcSymbols;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
  /**
   * The fallback to kexec-tools, `false` for none. Default: the real one with
   * the real libc, none with an injected libc (a test never runs `kexec`).
   */
  fallback?: KexecFallback | false;
}

/** The `st_dev` number glibc (and so the runtime's `stat`) builds from a major and minor. */
function makedev(major: number, minor: number): number {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return Number(
    ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) |
      ((mi & 0xffffff00n) << 12n) | (mi & 0xffn),
  );
}

/** What an open descriptor is, read with `statx(fd, "", AT_EMPTY_PATH)`; undefined when it fails. */
export function fdInfo(
  libc: LibcSymbols,
  fd: number,
): (FileIdentity & { regular: boolean }) | undefined {
  const buf = new Uint8Array(STATX_SIZE);
  if (
    libc.statx(fd, new Uint8Array(1), AT_EMPTY_PATH, STATX_BASIC_STATS, buf) !==
      0
  ) {
    return undefined;
  }
  const view = new DataView(buf.buffer);
  return {
    regular: (view.getUint16(28, true) & S_IFMT) === S_IFREG,
    ino: Number(view.getBigUint64(32, true)),
    size: Number(view.getBigUint64(40, true)),
    // stx_mtime: seconds (s64) and nanoseconds (u32), truncated to whole
    // milliseconds as the runtime's stat reports them.
    mtimeMs: Number(view.getBigInt64(112, true)) * 1000 +
      Math.floor(view.getUint32(120, true) / 1_000_000),
    dev: makedev(view.getUint32(136, true), view.getUint32(140, true)),
  };
}

/** Which loader took the kernel. */
export type KexecLoader = "kexec_file_load" | "kexec_load";

function cString(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Loads the kernel, initrd and command line with `kexec_file_load`; when it
 * fails with ENOSYS or ENOEXEC, with kexec-tools' `kexec -l -c` (the
 * `kexec_load` call) on the same files and command line, if `kexec` is
 * installed and kernel lockdown is off. Logs and returns the loader that
 * took the kernel (start it with {@linkcode kexecExecute}); throws a
 * {@linkcode BootError} with a Kexec* exit code otherwise (the code of the
 * `kexec_file_load` failure when the fallback fails too).
 *
 * The files are opened with `O_NOFOLLOW | O_NONBLOCK` (a symbolic link is
 * refused, a FIFO cannot block), and each descriptor is checked with `fstat`
 * (`statx` on the fd) to be a regular file with the device, inode, size and
 * modification time of the verified file (`image.verified`) before anything
 * reads it: `kexec_file_load` reads exactly the descriptors that were
 * checked, and the fallback hands `kexec` those same descriptors as
 * `/proc/<pid>/fd/<n>` (which reopens the open file, not whatever is at its
 * name now), so no rename, link or other file put at the path after
 * verification can be loaded (a Disk error, exit 8, instead).
 */
export function kexecLoad(
  image: KexecImage,
  options: KexecLoadOptions = {},
): KexecLoader {
  const arch = options.arch ?? Deno.build.arch;
  const nr = KEXEC_FILE_LOAD[arch];
  if (nr === undefined) {
    throw new BootError(
      `kexec_file_load is not known on ${arch}`,
      ExitCode.Refused,
    );
  }
  if (image.cmdline.includes("\0")) {
    throw new BootError(
      "The kernel command line contains a NUL byte",
      ExitCode.Usage,
    );
  }
  if (image.initrd && !image.verified.initrd) {
    throw new BootError(
      `The initrd ${image.initrd.path} was never verified`,
      ExitCode.Disk,
    );
  }
  const libc = options.libc ?? openLibc();
  const fallback = options.fallback ?? (options.libc ? false : {});
  const files = openVerified(image, libc, arch);
  try {
    const errno = kexecFileLoad(files, image, { nr, arch, libc });
    if (errno === undefined) {
      log.info("kernel loaded with kexec_file_load");
      return "kexec_file_load";
    }
    return fallbackLoad(files, image, { errno, libc, fallback });
  } finally {
    files.close();
  }
}

/** Options of {@linkcode fallbackLoad}. */
interface FallbackLoadOptions {
  /** Why `kexec_file_load` failed. */
  errno: number;
  /** The libc in use (for `strerror`). */
  libc: LibcSymbols;
  /** The fallback, or `false` for none. */
  fallback: KexecFallback | false;
}

/** After `kexec_file_load` failed: kexec-tools on the same open files, when that can help. */
function fallbackLoad(
  files: VerifiedFiles,
  image: KexecImage,
  options: FallbackLoadOptions,
): KexecLoader {
  const { errno, libc, fallback } = options;
  const err = kexecError(errno, libc.strerror(errno));
  const lockdown = fallback === false
    ? "unknown"
    : fallback.lockdown ?? lockdownState();
  const locked = lockdown === "integrity" || lockdown === "confidentiality";
  if (locked && SIGNATURE_ERRNOS.has(errno)) {
    throw new BootError(
      `kexec_file_load failed: kernel lockdown is on (${lockdown}), so the kernel must be signed by a key the running kernel trusts (Secure Boot: the distribution's key or an enrolled MOK), and this one is not (${
        libc.strerror(errno)
      })`,
      err.exitCode,
    );
  }
  if (errno !== Errno.ENOSYS && errno !== Errno.ENOEXEC) throw err;
  if (fallback === false) throw err;
  if (locked) {
    throw new BootError(
      `${err.message}; kexec-tools cannot help: kernel lockdown (${lockdown}) forbids kexec_load, only a kernel signed by a key the running kernel trusts can be loaded`,
      err.exitCode,
    );
  }
  const program = fallback.program === undefined
    ? findKexec()
    : fallback.program;
  if (!program) {
    throw new BootError(
      `${err.message}; install kexec-tools for the kexec_load fallback`,
      err.exitCode,
    );
  }
  log.warn(
    `${err.message}: loading the same files with ${program} -l (kexec_load) instead`,
  );
  // The verified descriptors, reopened through /proc: never the names again.
  const procFd = (fd: number) => ({ path: `/proc/${Deno.pid}/fd/${fd}` });
  const failure = kexecToolsLoad(program, {
    kernel: procFd(files.kernelFd),
    ...(files.initrdFd >= 0 ? { initrd: procFd(files.initrdFd) } : {}),
    cmdline: image.cmdline,
  }, fallback.run);
  if (failure !== undefined) {
    throw new BootError(
      `${err.message}; the fallback failed too: ${failure}`,
      err.exitCode,
    );
  }
  log.info(`kernel loaded with kexec-tools (${program} -l, kexec_load)`);
  return "kexec_load";
}

/** errno values of a refused signature (with lockdown on, the kernel needs a trusted one). */
const SIGNATURE_ERRNOS = new Set<number>([
  Errno.EPERM,
  Errno.EKEYREJECTED,
  Errno.ENOKEY,
  Errno.ENODATA,
  Errno.EBADMSG,
]);

/** The verified files, open; `close` closes them. */
interface VerifiedFiles {
  /** The kernel's descriptor. */
  kernelFd: number;
  /** The initrd's descriptor, -1 without one. */
  initrdFd: number;
  /** Closes both. */
  close(): void;
}

/**
 * Opens the kernel and initrd of `image` and checks each descriptor is the
 * verified file (Disk otherwise); nothing stays open when it throws.
 */
function openVerified(
  image: KexecImage,
  libc: LibcSymbols,
  arch: string,
): VerifiedFiles {
  const fds: number[] = [];
  const close = () => {
    for (const fd of fds.splice(0)) libc.close(fd);
  };
  const open = (path: string, what: string, identity: FileIdentity) => {
    const fd = libc.open(
      cString(path),
      O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW[arch],
    );
    if (fd < 0) {
      const errno = libc.errno();
      throw new BootError(
        `Cannot open the ${what} ${path}: ${libc.strerror(errno)}${
          errno === Errno.ELOOP
            ? " (a symbolic link: not the file that was verified)"
            : ""
        }`,
        errno === Errno.ELOOP ? ExitCode.Disk : ExitCode.KexecOther,
      );
    }
    fds.push(fd);
    const info = fdInfo(libc, fd);
    if (!info) {
      const errno = libc.errno();
      throw new BootError(
        `Cannot fstat the ${what} ${path}: ${libc.strerror(errno)}`,
        ExitCode.KexecOther,
      );
    }
    if (
      !info.regular || info.dev !== identity.dev ||
      info.ino !== identity.ino || info.size !== identity.size ||
      info.mtimeMs !== identity.mtimeMs
    ) {
      throw new BootError(
        `The ${what} ${path} is not the file that was verified (it was replaced after verification): refusing to load it`,
        ExitCode.Disk,
      );
    }
    return fd;
  };
  try {
    const kernelFd = open(image.kernel.path, "kernel", image.verified.kernel);
    const initrdFd = image.initrd
      ? open(image.initrd.path, "initrd", image.verified.initrd!)
      : -1;
    return { kernelFd, initrdFd, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** One `kexec_file_load` call on the verified descriptors; the errno when it failed. */
function kexecFileLoad(
  files: VerifiedFiles,
  image: KexecImage,
  options: { nr: number; arch: string; libc: LibcSymbols },
): number | undefined {
  const { nr, arch, libc } = options;
  const cmdline = cString(image.cmdline);
  const flags = image.initrd ? 0 : KEXEC_FILE_NO_INITRAMFS;
  log.debug(
    `kexec_file_load(kernel fd ${files.kernelFd}, initrd fd ${files.initrdFd}, ${cmdline.length} bytes of cmdline, flags ${flags}) [syscall ${nr} on ${arch}]`,
  );
  const ret = libc.syscall(
    BigInt(nr),
    BigInt(files.kernelFd),
    BigInt(files.initrdFd),
    BigInt(cmdline.length),
    cmdline,
    BigInt(flags),
  );
  return ret === 0n ? undefined : libc.errno();
}

/** How the loaded kernel is started. */
export type HandoffMode = "none" | "systemctl" | "reboot";

/** Options for {@linkcode handoffMode}. */
export interface HandoffOptions {
  /** `--load-only`: load and exit 0. */
  loadOnly?: boolean;
  /** `--force-reboot`: `sync` + `reboot(KEXEC)` even under systemd. */
  forceReboot?: boolean;
  /** Name of PID 1 (`/proc/1/comm`; read when not given). */
  pid1?: string;
  /** Whether this process is PID 1 (default: `Deno.pid === 1`). */
  isPid1?: boolean;
}

/**
 * Chooses the hand-off: `none` for `--load-only`; `reboot` (sync +
 * `reboot(KEXEC)`) with `--force-reboot` or when the bootloader is PID 1;
 * `systemctl` (`systemctl kexec`, a clean shutdown) when PID 1 is systemd.
 * Under another init nothing would stop its services cleanly, so the choice
 * is the user's: a {@linkcode BootError} Refused (7) says how to make it.
 */
export function handoffMode(options: HandoffOptions = {}): HandoffMode {
  if (options.loadOnly) return "none";
  if (options.forceReboot) return "reboot";
  if (options.isPid1 ?? Deno.pid === 1) return "reboot";
  let pid1 = options.pid1;
  if (pid1 === undefined) {
    try {
      pid1 = Deno.readTextFileSync("/proc/1/comm").trim();
    } catch {
      pid1 = "";
    }
  }
  if (pid1 === "systemd") return "systemctl";
  throw new BootError(
    `PID 1 is ${
      pid1 ? `"${pid1}"` : "unknown"
    }, not systemd: pass --force-reboot to start the new kernel with reboot(2) right after loading it, or --load-only to start it yourself`,
    ExitCode.Refused,
  );
}

/** Options for {@linkcode kexecExecute}. */
export interface KexecExecuteOptions {
  /** libc symbols (default: the real libc; tests inject fakes). */
  libc?: LibcSymbols;
  /** Runs a command and returns its exit code (default: `Deno.Command`). */
  run?: (command: string, args: string[]) => Promise<number>;
  /**
   * After `systemctl kexec` succeeded, how long to wait for systemd to stop
   * this process before calling the hand-off failed (default 10 minutes).
   */
  shutdownWaitMs?: number;
  /**
   * Reboot through the firmware instead of starting the loaded kernel
   * (`systemctl reboot`, `reboot(LINUX_REBOOT_CMD_RESTART)`).
   */
  firmware?: boolean;
}

async function runCommand(command: string, args: string[]): Promise<number> {
  const { code } = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return code;
}

/**
 * Starts the loaded kernel (or, with `firmware`, reboots through the
 * firmware: `systemctl reboot`, `reboot(LINUX_REBOOT_CMD_RESTART)`).
 * `systemctl`: runs `systemctl kexec` and waits
 * for systemd to stop this process on its way down (never returns: a system
 * that does not go down is a Handoff failure); `reboot`: `sync`
 * then `reboot(LINUX_REBOOT_CMD_KEXEC)`, which does not return on success;
 * `none`: does nothing. Failures are {@linkcode BootError} Handoff (17).
 */
export async function kexecExecute(
  mode: HandoffMode,
  options: KexecExecuteOptions = {},
): Promise<void> {
  if (mode === "none") return;
  const verb = options.firmware ? "reboot" : "kexec";
  if (mode === "systemctl") {
    const run = options.run ?? runCommand;
    let code: number;
    try {
      code = await run("systemctl", [verb]);
    } catch (err) {
      throw new BootError(
        `Cannot run systemctl ${verb}: ${
          err instanceof Error ? err.message : String(err)
        }`,
        ExitCode.Handoff,
        { cause: err },
      );
    }
    if (code !== 0) {
      throw new BootError(
        `systemctl ${verb} failed with exit code ${code}`,
        ExitCode.Handoff,
      );
    }
    // systemctl returns once the job is queued; systemd then stops every unit,
    // this one included. Returning now would let the unit record success
    // before the new kernel actually started.
    const waitMs = options.shutdownWaitMs ?? 10 * 60_000;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    throw new BootError(
      `systemctl ${verb} was accepted but the system did not shut down within ${
        Math.round(waitMs / 1000)
      } s`,
      ExitCode.Handoff,
    );
  }
  const libc = options.libc ?? openLibc();
  libc.sync();
  const cmd = options.firmware ? "RESTART" : "KEXEC";
  const ret = libc.reboot(
    options.firmware ? LINUX_REBOOT_CMD_RESTART : LINUX_REBOOT_CMD_KEXEC,
  );
  const errno = libc.errno();
  throw new BootError(
    `reboot(LINUX_REBOOT_CMD_${cmd}) returned ${ret}: ${libc.strerror(errno)}`,
    ExitCode.Handoff,
  );
}

/** Options for {@linkcode checkCanKexec}. */
export interface CheckCanKexecOptions {
  /** Effective user id (default `Deno.uid()`). */
  uid?: number | null;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
  /** Content of `/proc/sys/kernel/kexec_load_disabled` (read when not given; "" = the file is missing). */
  kexecLoadDisabled?: string;
}

/**
 * Refuses, before any download, a run that could never kexec: not root,
 * an architecture without `kexec_file_load`, a kernel built without kexec, or
 * kexec disabled by `kexec_load_disabled`. Called only when the run will kexec
 * (not for `--no-kexec`/`--print-plan`).
 * Throws a {@linkcode BootError} with exit code Refused (7).
 */
export function checkCanKexec(options: CheckCanKexecOptions = {}): void {
  const arch = options.arch ?? Deno.build.arch;
  if (KEXEC_FILE_LOAD[arch] === undefined) {
    throw new BootError(
      `Unsupported architecture ${arch}: kexec_file_load is known on ${
        Object.keys(KEXEC_FILE_LOAD).join(", ")
      }`,
      ExitCode.Refused,
    );
  }
  const uid = options.uid !== undefined ? options.uid : safeUid();
  if (uid !== 0) {
    throw new BootError(
      "Kexec needs root: run as root, or use --no-kexec or --print-plan",
      ExitCode.Refused,
    );
  }
  let disabled = options.kexecLoadDisabled;
  if (disabled === undefined) {
    try {
      disabled = Deno.readTextFileSync("/proc/sys/kernel/kexec_load_disabled");
    } catch {
      // No such sysctl while /proc/sys/kernel is there: no kexec in this kernel.
      disabled = existsSync("/proc/sys/kernel") ? "" : "0";
    }
  }
  if (disabled === "") {
    throw new BootError(
      "The running kernel has no kexec support (no /proc/sys/kernel/kexec_load_disabled)",
      ExitCode.Refused,
    );
  }
  if (disabled.trim() === "1") {
    throw new BootError(
      "Kexec is disabled on this machine (kernel.kexec_load_disabled = 1)",
      ExitCode.Refused,
    );
  }
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function safeUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}
