/**
 * assisted-bootloader: boot this machine into an Assisted Installer InfraEnv.
 *
 * The boot sequence: configuration → refuse early if kexec cannot work →
 * resolve the iPXE script into a plan → (print it) → stage: download, verify
 * and assemble → (print the result) → kexec load → hand off.
 *
 * @module
 */

import { fetchCaCert } from "./lib/ca_cert_url.ts";
import { systemCertificates } from "./lib/ca_store.ts";
import { type Config, parseConfig } from "./lib/config/mod.ts";
import { BootError, errorText, ExitCode } from "./lib/errors.ts";
import type { HttpClient } from "./lib/http.ts";
import { createClient } from "./lib/http_client.ts";
import { hostPlatform, readHostSettings } from "./lib/host_settings.ts";
import { createScriptClient } from "./lib/infraenv.ts";
import { checkCanKexec } from "./lib/can_kexec.ts";
import { type HandoffMode, handoffMode, kexecExecute } from "./lib/handoff.ts";
import { kexecLoad } from "./lib/kexec_load.ts";
import { configureLog, log, redact, safeJson } from "./lib/log.ts";
import { checkPins } from "./lib/pins.ts";
import type { KexecPlan } from "./lib/plan.ts";
import { preflight } from "./lib/preflight.ts";
import { resolvePlan } from "./lib/resolve_plan.ts";
import { sleep } from "./lib/retry.ts";
import { stage } from "./lib/stage.ts";
import { lockWorkDir } from "./lib/work_dir.ts";

function printJson(value: unknown): void {
  console.log(safeJson(value));
}

/** Runs the bootloader with `args`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseConfig(args);
  if (parsed.kind !== "run") {
    console.log(parsed.text);
    return ExitCode.Ok;
  }
  const config = parsed.config;
  configureLog({ level: config.verbose ? "debug" : "info" });
  try {
    return await boot(config);
  } catch (err) {
    if (!(err instanceof LocalBoot)) throw err;
    log.info(
      `the service says this host is installed: boot from the local disk (${err.message})`,
    );
    if (config.mode !== "kexec") {
      printJson({ action: "local-boot", reason: err.message });
    }
    return ExitCode.Ok;
  }
}

/** The boot sequence proper: refuse early, resolve, stage, load, execute. */
async function boot(config: Config): Promise<number> {
  // Refuse before any download when the kernel could not be loaded or started.
  let handoff: HandoffMode = "none";
  if (config.mode === "kexec") {
    checkCanKexec();
    handoff = handoffMode({
      loadOnly: config.loadOnly,
      forceReboot: config.forceReboot,
    });
  }
  // One instance per work directory: held from before the script is fetched
  // until the kernel is loaded and started (or the process exits).
  using lock = config.mode === "print-plan"
    ? undefined
    : await lockWorkDir(config.workDir, { cache: !config.noCache });
  const client = await httpClient(config);
  const settings = {
    ...(config.hostSettings
      ? readHostSettings(config.mac)
      : config.mac
      ? { "net0/mac": config.mac }
      : {}),
    ...config.settings,
  };
  const platform = config.hostSettings ? hostPlatform() : undefined;
  const resolve = async (): Promise<KexecPlan> => {
    const scripts = createScriptClient(config.source, {
      mac: settings["net0/mac"],
      client,
      retries: config.retries,
      timeoutMs: config.timeoutMs,
    });
    log.info(`fetching the iPXE script ${redact(scripts.firstUrl)}`);
    const plan = await resolvePlan(scripts, {
      settings,
      appendKargs: config.appendKargs,
      deleteKargs: config.deleteKargs,
      console: { mode: config.console, hostCmdline: config.hostCmdline },
      platform,
      sleep: config.mode === "print-plan" ? undefined : (ms) => sleep(ms),
      print: (line) => log.info(`script: ${line}`),
    });
    if (plan.action === "local-boot") throw new LocalBoot(plan.reason);
    // A pin that names nothing the script boots is a mistake, in every mode.
    checkPins(plan, config);
    log.info(
      `plan: kernel ${
        redact(plan.kernel.url)
      }, ${plan.initrds.length} initrd(s)`,
    );
    return plan;
  };

  const plan = await resolve();
  if (config.mode === "print-plan") {
    printJson(plan);
    return ExitCode.Ok;
  }
  // Refuse what this machine cannot hold before a byte of it is downloaded.
  if (config.preflight) {
    await preflight(plan, {
      workDir: config.workDir,
      client,
      timeoutMs: config.timeoutMs,
      meminfoFile: config.meminfoFile,
    });
  }

  const image = await stage(plan, {
    workDir: config.workDir,
    lock,
    cache: !config.noCache,
    client,
    retries: config.retries,
    timeoutMs: config.timeoutMs,
    minSpeed: config.minSpeed,
    minSpeedTimeMs: config.minSpeedTimeMs,
    kernelSha256: config.kernelSha256,
    initrdSha256: config.initrdSha256,
    artifactSha256: config.artifactSha256,
    localFiles: config.source.kind === "ipxe-url" &&
      new URL(config.source.url).protocol === "file:",
    progress: config.progress,
    refetchPlan: resolve,
  });
  if (config.mode === "no-kexec") {
    printJson({
      ...image.plan,
      kernel: { ...image.plan.kernel, ...image.kernel },
      initrd: image.initrd,
    });
    return ExitCode.Ok;
  }

  kexecLoad(image);
  if (handoff === "none") {
    log.info(
      "kernel loaded; run `systemctl kexec` (or reboot with kexec) to start it",
    );
    return ExitCode.Ok;
  }
  await kexecExecute(handoff);
  return ExitCode.Ok;
}

/**
 * The HTTP client of the run: Deno's roots, the system store (read once, in
 * every mode), `--ca-cert` files and the `--ca-cert-url` CA once its digest
 * matched; `--insecure` as asked.
 */
async function httpClient(
  config: Config,
): Promise<HttpClient | undefined> {
  const systemCerts = systemCertificates();
  let caCerts: string[] = [];
  if (config.caCertUrl) {
    // Fetched with TLS verified even under --insecure (or over plain http):
    // its digest decides whether it is trusted.
    const verifying = createClient({
      caCertFiles: config.caCerts,
      systemCerts,
    });
    try {
      caCerts = await fetchCaCert(
        config.caCertUrl.url,
        config.caCertUrl.sha256,
        {
          client: verifying,
          retries: config.retries,
          timeoutMs: config.timeoutMs,
        },
      );
    } finally {
      verifying?.close();
    }
  }
  return createClient({
    caCertFiles: config.caCerts,
    caCerts,
    systemCerts,
    insecure: config.insecure,
  });
}

/** Thrown inside plan resolution when the service answers "boot from local disk". */
class LocalBoot extends Error {}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    if (err instanceof BootError) {
      log.error(err.message);
      Deno.exit(err.exitCode);
    }
    log.error(`internal error: ${errorText(err)}`);
    if (Deno.env.get("ASSISTED_DEBUG")) console.error(err);
    Deno.exit(ExitCode.Internal);
  }
}
