/**
 * What a failed `kexec_file_load` means: each errno becomes a one-sentence
 * explanation and its own exit code (docs/exit_codes.md).
 *
 * @module
 */

import { BootError, ExitCode, type ExitCodeValue } from "../errors.ts";
import { Errno } from "./libc.ts";

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

/** errno values of a refused signature (with lockdown on, the kernel needs a trusted one). */
export const SIGNATURE_ERRNOS = new Set<number>([
  Errno.EPERM,
  Errno.EKEYREJECTED,
  Errno.ENOKEY,
  Errno.ENODATA,
  Errno.EBADMSG,
]);
