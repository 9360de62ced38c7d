/**
 * Resolves a script source into a boot plan: fetch the first script, run it
 * (and whatever it chains) through the iPXE interpreter, apply the user's
 * kernel-argument edits. "Boot from the local disk" is a plan too
 * ({@linkcode LocalBootPlan}): the service's answer for an installed host
 * (a {@linkcode LocalBootAnswer} from the fetcher, to the first request or to
 * a chained one the script does not recover from), or a script that hands
 * the machine back to the firmware (`exit`, `sanboot`).
 *
 * @module
 */

import { chooseConsoles, type ConsoleMode } from "./consoles.ts";
import { LocalBootAnswer, type ScriptClient } from "./infraenv.ts";
import { IpxeError, runScriptSource } from "../ipxe/mod.ts";
import { escapeControls, log, redact } from "../log.ts";
import { type BootPlan, editCmdline, type LocalBootPlan } from "../plan.ts";

/** Largest script accepted, in bytes. */
export const MAX_SCRIPT_BYTES = 1024 * 1024;

/** Options for {@linkcode resolvePlan}. */
export interface ResolveOptions {
  /** iPXE settings (host settings and `--set` presets). */
  settings: Record<string, string>;
  /** `--append-karg` values. */
  appendKargs?: string[];
  /** `--delete-karg` values. */
  deleteKargs?: string[];
  /** `--console` and the running kernel's command line (default: keep the script's consoles). */
  console?: { mode: ConsoleMode; hostCmdline: string };
  /** How `sleep` waits (nothing in plan mode). */
  sleep?: (ms: number) => Promise<void>;
  /** Where `echo` output goes. */
  print?: (line: string) => void;
  /** iPXE `${buildarch}`. */
  buildarch?: string;
  /** iPXE `${platform}` (`efi` or `pcbios`). */
  platform?: string;
}

/** The iPXE `${buildarch}` name for a Deno architecture. */
export function ipxeArch(arch: string = Deno.build.arch): string {
  return arch === "aarch64" ? "arm64" : arch;
}

/** Runs the scripts of `client` and returns what to boot. */
export async function resolvePlan(
  client: ScriptClient,
  options: ResolveOptions,
): Promise<BootPlan> {
  let plan: BootPlan;
  try {
    const first = await client.fetch(client.firstUrl, {
      maxBytes: MAX_SCRIPT_BYTES,
    });
    plan = await runScriptSource(first.body, {
      url: first.url,
      fetch: client.fetch,
      settings: options.settings,
      buildarch: options.buildarch ?? ipxeArch(),
      platform: options.platform,
      sleep: options.sleep,
      print: options.print,
      maxScriptBytes: MAX_SCRIPT_BYTES,
    });
  } catch (err) {
    // Only the service's own answer, to the first request or as what made
    // the script fail, means "installed": every other error stays one.
    const answer = err instanceof LocalBootAnswer
      ? err
      : err instanceof IpxeError && err.cause instanceof LocalBootAnswer
      ? err.cause
      : undefined;
    if (!answer) throw err;
    plan = { action: "local-boot", reason: answer.reason };
  }
  if (plan.action === "local-boot") {
    const local: LocalBootPlan = {
      action: "local-boot",
      reason: escapeControls(redact(plan.reason)),
    };
    return local;
  }
  if (options.console && options.console.mode !== "keep") {
    const choice = chooseConsoles(plan.cmdline, options.console);
    log.info(
      choice.consoles.length === 0
        ? "this kernel's command line has no console=: the script's consoles are kept"
        : `consoles from this kernel's command line: ${
          choice.consoles.join(" ")
        } (the script had ${choice.before.join(" ") || "none"})`,
    );
    plan.cmdline = choice.cmdline;
  }
  plan.cmdline = editCmdline(plan.cmdline, {
    append: options.appendKargs,
    remove: options.deleteKargs,
  });
  return plan;
}
