/**
 * Error type and exit codes shared by every module.
 *
 * Every failure the user can cause or meet in the field is a {@linkcode BootError}
 * carrying an exit code; `main.ts` prints its message on one line and exits with
 * that code. Anything else is a bug and exits with {@linkcode ExitCode.Internal}.
 *
 * @module
 */

import { redact } from "./log.ts";

/** Exit codes of the bootloader (docs/exit_codes.md is generated from these comments). */
export const ExitCode = {
  /** Success: booted, plan printed, local boot decided, `--no-kexec` or `--load-only` done. */
  Ok: 0,
  /** Unexpected internal error (a bug: please report it). */
  Internal: 1,
  /**
   * Bad command line, environment or configuration file, or a file an option names that cannot be
   * read or that another user can change; `--insecure` without a curl that runs, or with one
   * another user can change.
   */
  Usage: 2,
  /** The iPXE script failed or booted nothing. */
  Script: 3,
  /** The InfraEnv API or SSO refused or failed (auth, HTTP errors on the script). */
  Api: 4,
  /**
   * An artifact could not be downloaded (network, HTTP status, size, scheme, slower than the
   * minimum rate), or the `--ca-cert-url` certificate.
   */
  Download: 5,
  /**
   * An artifact failed verification (digest pin, length, format check: e.g. an HTML page served
   * as a kernel, a kernel shorter than its header says), or the `--ca-cert-url` certificate did
   * (sha256 other than `--ca-cert-sha256`, not PEM), or a file of the installed system's boot
   * entry is missing, unreadable or fails the same checks.
   */
  Verify: 6,
  /**
   * Refused to start: not root (without `--print-plan`/`--no-kexec`), unsupported architecture,
   * a kernel built without kexec, `kernel.kexec_load_disabled=1`, or PID 1 is neither systemd nor
   * the bootloader and neither `--force-reboot` nor `--load-only` was given.
   */
  Refused: 7,
  /**
   * The work directory cannot be used: permissions, disk full, not owned by
   * this user or writable by others, a directory where a file goes, or a
   * verified file replaced under the bootloader.
   */
  Disk: 8,
  /** Another instance holds the work directory (its lock file). */
  Locked: 9,
  /**
   * kexec_file_load: EPERM (not root, or kernel lockdown: then the kernel must be signed by a key
   * the running kernel trusts).
   */
  KexecPermission: 10,
  /** kexec_file_load: EKEYREJECTED/ENOKEY/ENODATA/EBADMSG (Secure Boot wants a signed kernel). */
  KexecSignature: 11,
  /**
   * kexec_file_load: ENOEXEC (not a kernel for this machine), and the kexec-tools fallback was not
   * possible (not installed, a `kexec` another user can change, lockdown) or failed too.
   */
  KexecFormat: 12,
  /** kexec_file_load: EBUSY (a kexec image is already loaded or in use). */
  KexecBusy: 13,
  /** kexec_file_load: ENOMEM (not enough memory for kernel + initrd). */
  KexecMemory: 14,
  /**
   * kexec_file_load: ENOSYS/EINVAL (unsupported by this kernel, or it rejected the image or command
   * line); for ENOSYS, the kexec-tools fallback was not possible or failed too.
   */
  KexecUnsupported: 15,
  /** kexec_file_load failed with another errno. */
  KexecOther: 16,
  /**
   * The hand-off failed after a successful load: `systemctl kexec` missing, one another user can
   * change, failing or not shutting the system down; `reboot(2)` returning.
   */
  Handoff: 17,
  /**
   * Refused before any download: this machine's memory cannot hold what is about to boot. The
   * kernel and initrd (twice when the work directory is in RAM: the files and kexec's copy) exceed
   * MemAvailable, or with the live rootfs of `coreos.live.rootfs_url` they exceed MemTotal (sizes
   * from a HEAD of each; `--no-preflight` skips the check).
   */
  Memory: 18,
  /**
   * Stopped by SIGINT (128 + 2): the downloads aborted, the files of the run (partial
   * downloads, an assembled initrd) removed, the lock released.
   */
  Interrupted: 130,
  /**
   * Stopped by SIGTERM (128 + 15; systemd stopping the unit): as for SIGINT, the files of the
   * run removed and the lock released.
   */
  Terminated: 143,
} as const;

/** One of the values of {@linkcode ExitCode}. */
export type ExitCodeValue = typeof ExitCode[keyof typeof ExitCode];

/** A failure with a one-line, user-facing message and an exit code. */
export class BootError extends Error {
  /** Process exit code for this failure. */
  readonly exitCode: ExitCodeValue;

  /** Creates an error; `message` is one sentence, sentence case, no trailing period. */
  constructor(
    message: string,
    exitCode: ExitCodeValue,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "BootError";
    this.exitCode = exitCode;
  }
}

/**
 * A short description of any thrown value, for one log line: its message,
 * the message of its `cause` when that is an error the message does not
 * already tell, only the first line, and redacted.
 */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const said = err.cause instanceof Error ? err.cause.message : "";
    const cause = said && !err.message.includes(said.split("\n")[0])
      ? `: ${said}`
      : "";
    return redact(`${err.message}${cause}`.split("\n")[0]);
  }
  return redact(String(err));
}
