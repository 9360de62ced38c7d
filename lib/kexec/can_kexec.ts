/**
 * The pre-flight refusal: a run that could never kexec (not root, an
 * architecture without `kexec_file_load`, a kernel without kexec, kexec
 * disabled) is refused before anything is downloaded.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import { KEXEC_FILE_LOAD } from "./libc.ts";

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
