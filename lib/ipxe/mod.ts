/**
 * The iPXE script interpreter (plan mode): runs an InfraEnv's (or any) iPXE
 * script like iPXE would and returns the kernel, initrds and command line it
 * would boot, without downloading them. Pure: the only I/O is through the
 * `fetch`, `sleep` and `print` callbacks.
 *
 * @example
 * ```ts
 * const plan = await runScriptSource("#!ipxe\nkernel http://h/vmlinuz a=1\nboot\n", {
 *   url: "http://h/boot.ipxe",
 *   fetch: () => Promise.reject(new Error("no network")),
 * });
 * if (plan.action === "kexec") plan.kernel.url; // "http://h/vmlinuz"
 * ```
 *
 * @module
 */

import type { BootPlan } from "../plan.ts";
import { toBinary } from "./bytes.ts";
import { createCommands } from "./commands.ts";
import { IpxeError } from "./error.ts";
import { Engine, type EngineOptions, type Image } from "./interpreter.ts";
import { hasScriptMagic } from "./tokenize.ts";
import { imageNameFromUri } from "./uri.ts";

export { IpxeError } from "./error.ts";
export type { ScriptFetcher } from "./interpreter.ts";
export type { BootPlan, KexecPlan, LocalBootPlan } from "../plan.ts";
export { resolveUri } from "./uri.ts";

/** Options of {@linkcode runScript} and {@linkcode runScriptSource}. */
export type RunOptions = EngineOptions;

function start(options: RunOptions): Engine {
  const buildarch = options.buildarch ??
    (Deno.build.arch === "aarch64" ? "arm64" : "x86_64");
  return new Engine({ ...options, buildarch }, createCommands(buildarch));
}

function rootImage(url: string, body: string): Image {
  const binUrl = toBinary(url);
  if (!hasScriptMagic(body)) {
    throw new IpxeError(
      `Script ${url} is not an iPXE script (it does not start with "#!ipxe")`,
    );
  }
  return {
    name: imageNameFromUri(binUrl),
    url: binUrl,
    cmdline: null,
    kind: "script",
    body,
    autofree: false,
  };
}

/**
 * Fetches `url` as the first script and runs it. Returns the plan of the
 * first kernel it boots, or a local boot (`sanboot` of the local disk, `exit`
 * from this script); throws {@linkcode IpxeError} when the script fails, ends
 * without booting, or hits a cap.
 */
export async function runScript(
  url: string,
  options: RunOptions,
): Promise<BootPlan> {
  const maxBytes = options.maxScriptBytes ?? 1 << 20;
  let fetched: { url: string; body: Uint8Array };
  try {
    fetched = await options.fetch(url, { maxBytes });
  } catch (e) {
    throw new IpxeError(
      `Script ${url}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  if (fetched.body.length > maxBytes) {
    throw new IpxeError(
      `Script ${fetched.url} is larger than ${maxBytes} bytes`,
    );
  }
  return await runScriptSource(fetched.body, { ...options, url: fetched.url });
}

/** Runs `source` as the first script, with `url` as its own URL (the base of its relative URLs). */
export async function runScriptSource(
  source: Uint8Array | string,
  options: RunOptions & { url: string },
): Promise<BootPlan> {
  const body = toBinary(source);
  const maxBytes = options.maxScriptBytes ?? 1 << 20;
  if (body.length > maxBytes) {
    throw new IpxeError(
      `Script ${options.url} is larger than ${maxBytes} bytes`,
    );
  }
  const root = rootImage(options.url, body);
  return await start(options).run(root);
}
