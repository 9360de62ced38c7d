/**
 * Consoles that follow the machine (`--console`). The assisted template
 * hard-codes `console=tty1 console=ttyS1,115200n8`; on a machine whose
 * console is `ttyS0` (most cloud VMs) or `ttyAMA0` (arm64) the discovery boot
 * would then be invisible. The running kernel's `console=` arguments are the
 * ones somebody chose for this machine, so `host` puts them in the plan.
 *
 * Pure: the host's command line is an argument.
 *
 * @module
 */

import {
  initArgsStart,
  type KernelArg,
  parseKernelCmdline,
  rewriteCmdline,
} from "./kargs.ts";

/**
 * `keep`: the consoles the script wrote; `host`: the running kernel's
 * `console=` arguments replace the plan's top-level ones; `host-persistent`:
 * also those inside `coreos.inst.persistent-kargs` (what the installed system
 * keeps).
 */
export type ConsoleMode = "keep" | "host" | "host-persistent";

/** Every {@linkcode ConsoleMode}, in the order the help lists them. */
export const CONSOLE_MODES: readonly ConsoleMode[] = [
  "keep",
  "host",
  "host-persistent",
];

/** The karg whose quoted value holds the installed system's kargs. */
export const PERSISTENT_KARGS = "coreos.inst.persistent-kargs";

/** True when `value` names a {@linkcode ConsoleMode}. */
export function isConsoleMode(value: string): value is ConsoleMode {
  return (CONSOLE_MODES as readonly string[]).includes(value);
}

function isConsole(arg: KernelArg): boolean {
  return arg.param === "console";
}

/**
 * The `console=` arguments among a command line's kernel parameters (not
 * inside another argument's quoted value, not after `--`), as
 * `console=VALUE`, in order. Empty values, and values a quoted list could not
 * hold (whitespace or a quote), are left out.
 *
 * @example
 * ```ts
 * consoleArgs('BOOT_IMAGE=/vmlinuz console=tty0 console=ttyS0,115200n8 quiet');
 * // ["console=tty0", "console=ttyS0,115200n8"]
 * ```
 */
export function consoleArgs(cmdline: string): string[] {
  const args = parseKernelCmdline(cmdline);
  return args.slice(0, initArgsStart(args))
    .filter((a) => isConsole(a) && a.value && !/[\s"]/.test(a.value))
    .map((a) => `console=${a.value}`);
}

/** Replaces the top-level consoles of `cmdline` with `consoles`; unchanged when they are the same. */
function replaceConsoles(cmdline: string, consoles: string[]): string {
  const args = parseKernelCmdline(cmdline);
  const current = args.slice(0, initArgsStart(args)).filter(isConsole).map(
    (a) => `console=${a.value ?? ""}`,
  );
  if (current.join(" ") === consoles.join(" ")) return cmdline;
  return rewriteCmdline(cmdline, { remove: isConsole, replaceWith: consoles });
}

/** What {@linkcode chooseConsoles} did. */
export interface ConsoleChoice {
  /** The command line with the consoles chosen. */
  cmdline: string;
  /** The host's consoles, as put in (empty: the plan's were kept). */
  consoles: string[];
  /** The plan's top-level `console=` arguments before the change. */
  before: string[];
}

/**
 * Puts the host's consoles in a plan's command line. In `host` mode the
 * plan's top-level `console=` arguments are replaced, at the place of the
 * first one (appended when it has none); `host-persistent` does the same
 * inside `coreos.inst.persistent-kargs="…"`. When the host has no `console=`,
 * or in `keep` mode, the command line is returned as it is.
 *
 * @example
 * ```ts
 * chooseConsoles('a console=tty1 console=ttyS1,115200n8 b', {
 *   mode: "host",
 *   hostCmdline: "root=/dev/vda console=ttyS0",
 * }).cmdline; // "a console=ttyS0 b"
 * ```
 */
export function chooseConsoles(
  cmdline: string,
  options: { mode: ConsoleMode; hostCmdline: string },
): ConsoleChoice {
  const before = consoleArgs(cmdline);
  const consoles = options.mode === "keep"
    ? []
    : consoleArgs(options.hostCmdline);
  if (consoles.length === 0) return { cmdline, consoles, before };
  let out = replaceConsoles(cmdline, consoles);
  if (options.mode === "host-persistent") {
    const args = parseKernelCmdline(out);
    // From the last one back, so that earlier offsets stay valid.
    for (const arg of args.slice(0, initArgsStart(args)).reverse()) {
      if (arg.param !== PERSISTENT_KARGS || arg.value === undefined) continue;
      const inner = replaceConsoles(arg.value, consoles);
      // A value holding a quote cannot be written back inside quotes.
      if (inner === arg.value || inner.includes('"')) continue;
      out = `${out.slice(0, arg.start)}${PERSISTENT_KARGS}="${inner}"${
        out.slice(arg.end)
      }`;
    }
  }
  return { cmdline: out, consoles, before };
}
