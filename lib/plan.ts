/**
 * The boot plan: what the iPXE script decided, before anything is downloaded.
 *
 * Parsers (the iPXE interpreter) turn scripts into a plan; `stage` turns a plan
 * into verified files on disk; `execute` hands those files to the kernel. The
 * plan is also what `--print-plan` prints, so its JSON shape is a contract.
 *
 * @module
 */

import { kargPattern, matchesKarg, rewriteCmdline } from "./resolve/kargs.ts";

/** How iPXE wraps an image in a cpio newc header (`initrd URL /path mode=… mkdir=…`). */
export interface CpioWrap {
  /** Path of the file inside the initramfs (the image's command line up to the first space). */
  path: string;
  /** File mode bits as a number (`0o644` unless `mode=` says otherwise). */
  mode: number;
  /** Number of parent directory entries to emit (`mkdir=N`, -1 for all); 0 when absent. */
  mkdir: number;
}

/** The kernel the plan boots. */
export interface PlannedKernel {
  /** Absolute URL of the kernel image. */
  url: string;
  /** iPXE image name (basename of the URL path, or `--name`). */
  name: string;
}

/** One image handed to Linux as part of the initrd region, in registration order. */
export interface PlannedInitrd {
  /** Absolute URL of the image. */
  url: string;
  /** iPXE image name (basename of the URL path, or `--name`). */
  name: string;
  /** Present only for images iPXE would wrap in a cpio header. */
  cpio?: CpioWrap;
}

/** Boot a kernel with kexec. */
export interface KexecPlan {
  /** Discriminator. */
  action: "kexec";
  /** The selected kernel. */
  kernel: PlannedKernel;
  /** Every registered image but the kernel and running scripts, in order. */
  initrds: PlannedInitrd[];
  /** The kernel command line exactly as iPXE would pass it (after karg edits). */
  cmdline: string;
  /** Every script URL that ran, in order. */
  scripts: string[];
}

/**
 * Boot from the local disk instead: the service said this host is installed
 * (its 404 to the MAC-specific script request), or the script handed the
 * machine back to the firmware (`exit` from the first script, `sanboot`).
 */
export interface LocalBootPlan {
  /** Discriminator. */
  action: "local-boot";
  /** Why, in one line: the service's message, or the script line (redacted). */
  reason: string;
}

/** What the bootloader decided to do. */
export type BootPlan = KexecPlan | LocalBootPlan;

/** Options for {@linkcode editCmdline}. */
export interface EditCmdlineOptions {
  /** Arguments appended to the kernel's parameters, in order. */
  append?: string[];
  /** Arguments removed: an exact `key=value` match, or every argument with that key when no `=` is given. */
  remove?: string[];
}

/**
 * Applies `--append-karg` / `--delete-karg` to a command line, argument by
 * argument as the kernel splits it (see `kargs.ts`): a deletion removes whole
 * arguments whose key (and value, when given) match, quoted or not, and
 * nothing inside another argument's quoted value; every other byte stays.
 * Appended arguments are joined with one space and go before a `--`.
 *
 * @example
 * ```ts
 * editCmdline('a=1 b p="b c" c=2', { remove: ["b"], append: ["d"] }); // 'a=1 p="b c" c=2 d'
 * ```
 */
export function editCmdline(
  cmdline: string,
  options: EditCmdlineOptions = {},
): string {
  const patterns = (options.remove ?? []).map(kargPattern);
  return rewriteCmdline(cmdline, {
    remove: (arg) => patterns.some((p) => matchesKarg(arg, p)),
    append: options.append,
  });
}
