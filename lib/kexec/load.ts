/**
 * The load step: hands the verified kernel, initrd and command line to the
 * running kernel with `kexec_file_load` (`kexec.ts`, the binding) and, when
 * that call cannot take the kernel (ENOSYS, ENOEXEC), with kexec-tools
 * (`kexec_tools.ts`) on the same verified descriptors, where lockdown allows
 * it. Starting the loaded kernel is `handoff.ts`'s.
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import {
  Errno,
  KEXEC_FILE_LOAD,
  kexecFileLoad,
  type KexecImage,
  type LibcSymbols,
  openLibc,
  openVerified,
  type VerifiedFiles,
} from "./libc.ts";
import { kexecError, SIGNATURE_ERRNOS } from "./errors.ts";
import {
  KEXEC_DIRS,
  kexecToolsLoad,
  type Lockdown,
  lockdownState,
  type ProgramRunner,
} from "./tools.ts";
import { log } from "../log.ts";
import { trustedProgram, UntrustedProgramError } from "../programs.ts";

/** The kexec-tools fallback of {@linkcode kexecLoad} (tests inject every part). */
export interface KexecFallback {
  /**
   * The `kexec` program: a name looked up on `PATH` then in
   * {@linkcode KEXEC_DIRS}, or an absolute path; either way refused when
   * another user can change it (`programs.ts`). `null`: not installed.
   * Default `kexec`.
   */
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

/** Which loader took the kernel. */
export type KexecLoader = "kexec_file_load" | "kexec_load";

/**
 * Loads the kernel, initrd and command line with `kexec_file_load`; when it
 * fails with ENOSYS or ENOEXEC, with kexec-tools' `kexec -l -c` (the
 * `kexec_load` call) on the same files and command line, if `kexec` is
 * installed, no other user can change it and kernel lockdown is off. Logs
 * and returns the loader that took the kernel (start it with `handoff.ts`'s
 * `kexecExecute`); throws a {@linkcode BootError} with a Kexec* exit code
 * otherwise (the code of the `kexec_file_load` failure when the fallback
 * fails too or is refused).
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
  if (KEXEC_FILE_LOAD[arch] === undefined) {
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
    const errno = kexecFileLoad(files, image, { arch, libc });
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
  const program = fallbackProgram(fallback.program, err);
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

/**
 * The absolute path of the fallback's `kexec` (`programs.ts`), undefined
 * when it is not installed; one another user can change is refused, and a
 * lookup that fails otherwise is the fallback failing, both with the exit
 * code of the `kexec_file_load` error `err`.
 */
function fallbackProgram(
  program: string | null | undefined,
  err: BootError,
): string | undefined {
  if (program === null) return undefined;
  const name = program ?? "kexec";
  try {
    return trustedProgram(name, { dirs: KEXEC_DIRS });
  } catch (cause) {
    throw new BootError(
      cause instanceof UntrustedProgramError
        ? `${err.message}; the fallback is refused: ${cause.message}`
        : `${err.message}; the fallback failed too: cannot run ${name}: ${
          errorText(cause)
        }`,
      err.exitCode,
      { cause },
    );
  }
}
