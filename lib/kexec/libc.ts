/**
 * The libc binding of kexec: `open`, `statx`, `kexec_file_load` (through
 * `syscall`), `reboot(LINUX_REBOOT_CMD_KEXEC)` and `sync` through
 * `Deno.dlopen`. This is the only module that knows syscall numbers, open
 * flags, the `statx` layout and the reboot magic.
 *
 * Every libc call goes through a {@linkcode LibcSymbols} object, so tests
 * inject fakes and never load a kernel or reboot the machine running them.
 * Using it: `kexec_load.ts` (load the verified files, with the kexec-tools
 * fallback), `handoff.ts` (start the loaded kernel), `can_kexec.ts` (refuse
 * a run that could never kexec), `kexec_errors.ts` (what an errno means).
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { log } from "../log.ts";
import type { FileIdentity } from "../stage/work_dir.ts";

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
      `Cannot open libc.so.6 for kexec: ${errorText(err)}`,
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

/** What {@linkcode kexecLoad} hands to the kernel. */
export interface KexecImage {
  /** Kernel file (bzImage, arm64 Image). */
  kernel: { path: string };
  /** Assembled initrd file, if any. */
  initrd?: { path: string };
  /** Kernel command line (without the trailing NUL). */
  cmdline: string;
  /**
   * The files that were verified (from `stage`): the descriptors handed to
   * the kernel must be these very files.
   */
  verified: { kernel: FileIdentity; initrd?: FileIdentity };
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

function cString(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** The verified files, open; `close` closes them. */
export interface VerifiedFiles {
  /** The kernel's descriptor. */
  kernelFd: number;
  /** The initrd's descriptor, -1 without one. */
  initrdFd: number;
  /** Closes both. */
  close(): void;
}

/**
 * Opens the kernel and initrd of `image` with `O_NOFOLLOW | O_NONBLOCK` (a
 * symbolic link is refused, a FIFO cannot block) and checks with `fstat`
 * (`statx` on the fd) that each descriptor is a regular file with the
 * device, inode, size and modification time of the verified file (Disk
 * otherwise); nothing stays open when it throws.
 */
export function openVerified(
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

/** Options for {@linkcode kexecFileLoad}. */
export interface KexecFileLoadOptions {
  /** Architecture: picks the syscall number (one of {@linkcode KEXEC_FILE_LOAD}). */
  arch: string;
  /** The libc to call. */
  libc: LibcSymbols;
}

/**
 * One `kexec_file_load` call on the verified descriptors with the command
 * line of `image`; `undefined` on success, else the errno.
 */
export function kexecFileLoad(
  files: VerifiedFiles,
  image: KexecImage,
  options: KexecFileLoadOptions,
): number | undefined {
  const { arch, libc } = options;
  const nr = KEXEC_FILE_LOAD[arch];
  if (nr === undefined) {
    throw new BootError(
      `kexec_file_load is not known on ${arch}`,
      ExitCode.Refused,
    );
  }
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

/**
 * `sync`, then `reboot(LINUX_REBOOT_CMD_KEXEC)`, which starts the loaded
 * kernel, or with `firmware` `reboot(LINUX_REBOOT_CMD_RESTART)`, a reboot
 * through the firmware. Neither returns on success: returns what it
 * returned, the errno and the command's name.
 */
export function syncAndReboot(
  libc: LibcSymbols,
  options: { firmware?: boolean } = {},
): { ret: number; errno: number; command: string } {
  libc.sync();
  const ret = libc.reboot(
    options.firmware ? LINUX_REBOOT_CMD_RESTART : LINUX_REBOOT_CMD_KEXEC,
  );
  return {
    ret,
    errno: libc.errno(),
    command: options.firmware
      ? "LINUX_REBOOT_CMD_RESTART"
      : "LINUX_REBOOT_CMD_KEXEC",
  };
}
