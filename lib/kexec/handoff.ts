/**
 * The hand-off: how the loaded kernel is started (`systemctl kexec` under
 * systemd, `sync` + `reboot(LINUX_REBOOT_CMD_KEXEC)` as PID 1 or with
 * `--force-reboot`, nothing with `--load-only`), chosen before any download
 * so that a run that could not start the kernel is refused early; or a
 * reboot through the firmware the same way (`firmware`).
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { type LibcSymbols, openLibc, syncAndReboot } from "./libc.ts";
import { trustedProgram } from "../programs.ts";

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
  /**
   * Runs a program (its absolute path) and returns its exit code (default:
   * `Deno.Command`).
   */
  run?: (command: string, args: string[]) => Promise<number>;
  /**
   * The `systemctl` program: a name looked up on `PATH`, or an absolute
   * path; either way refused when another user can change it
   * (`programs.ts`). Default `systemctl`.
   */
  systemctl?: string;
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
 * `none`: does nothing. Failures are {@linkcode BootError} Handoff (17),
 * and so is a `systemctl` that is missing or that another user can change
 * (`programs.ts`: never run).
 */
export async function kexecExecute(
  mode: HandoffMode,
  options: KexecExecuteOptions = {},
): Promise<void> {
  if (mode === "none") return;
  const verb = options.firmware ? "reboot" : "kexec";
  if (mode === "systemctl") {
    const run = options.run ?? runCommand;
    const name = options.systemctl ?? "systemctl";
    let code: number;
    try {
      const program = trustedProgram(name);
      if (program === undefined) throw new Error(`no ${name} on PATH`);
      code = await run(program, [verb]);
    } catch (err) {
      throw new BootError(
        `Cannot run systemctl ${verb}: ${errorText(err)}`,
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
  const { ret, errno, command } = syncAndReboot(libc, {
    firmware: options.firmware,
  });
  throw new BootError(
    `reboot(${command}) returned ${ret}: ${libc.strerror(errno)}`,
    ExitCode.Handoff,
  );
}
