/**
 * assisted-bootloader: boot this machine into an Assisted Installer InfraEnv.
 *
 * The boot sequence: configuration → refuse early if kexec cannot work →
 * resolve the iPXE script into a plan → (print it) → refuse what the memory
 * cannot hold → stage: download, verify and assemble → (print the result) →
 * kexec load → hand off. A local boot
 * (the host is installed) finds the installed system's default boot entry
 * on the local disks instead, and copies and verifies its files.
 *
 * @module
 */

import { BusyBudget } from "./lib/http/busy.ts";
import { fetchCaCert } from "./lib/http/ca_cert_url.ts";
import { systemCertificates } from "./lib/http/ca_store.ts";
import { type Config, parseConfig } from "./lib/config/mod.ts";
import { BootError, errorText, ExitCode } from "./lib/errors.ts";
import type { HttpClient } from "./lib/http/request.ts";
import { createClient } from "./lib/http/client.ts";
import { hostPlatform, readHostSettings } from "./lib/resolve/host_settings.ts";
import { createScriptClient } from "./lib/resolve/infraenv.ts";
import { checkCanKexec } from "./lib/kexec/can_kexec.ts";
import {
  type HandoffMode,
  handoffMode,
  kexecExecute,
} from "./lib/kexec/handoff.ts";
import type { KexecImage } from "./lib/kexec/libc.ts";
import { kexecLoad } from "./lib/kexec/load.ts";
import { type DiskPaths, findLocalBoot } from "./lib/local_boot/find.ts";
import { stageLocalBoot } from "./lib/local_boot/stage.ts";
import { configureLog, log, redactUrl, safeJson } from "./lib/log.ts";
import { checkPins } from "./lib/stage/pins.ts";
import type { BootPlan, KexecPlan, LocalBootPlan } from "./lib/plan.ts";
import { preflight } from "./lib/stage/preflight.ts";
import { resolvePlan } from "./lib/resolve/resolve_plan.ts";
import { sleep } from "./lib/http/retry.ts";
import {
  discardStagedSync,
  stage,
  type StagedImage,
} from "./lib/stage/stage.ts";
import { lockWorkDir, type WorkDirLock } from "./lib/stage/work_dir.ts";
import { type StopWatch, watchStopSignals } from "./lib/stop.ts";

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
  return await boot(config);
}

/**
 * The boot sequence, stopped cleanly by SIGTERM or SIGINT until the hand-off
 * (`stop.ts`): the files of the run removed, the lock released, exit 143 or
 * 130, whatever step the run was at.
 */
async function boot(config: Config): Promise<number> {
  let locked: WorkDirLock | undefined;
  using stop = watchStopSignals({
    cleanup: () => {
      if (!locked) return;
      discardStagedSync(locked.dir);
      locked.release();
    },
  });
  try {
    return await bootSteps(config, {
      stop,
      onLock: (lock) => locked = lock,
    });
  } catch (err) {
    // The abort's error is not the story: the stop is (one line, its code).
    stop.finish();
    throw err;
  }
}

/** What the steps of one run share. */
interface Run {
  config: Config;
  /** One budget for the whole run: every request waits for busy servers from it. */
  busy: BusyBudget;
  client?: HttpClient;
  /** The iPXE settings the scripts see (`net0/mac`, the host's, `--set`). */
  settings: Record<string, string>;
  stop: StopWatch;
}

/** The boot sequence proper: refuse early, resolve, stage, load, execute. */
async function bootSteps(
  config: Config,
  context: { stop: StopWatch; onLock: (lock: WorkDirLock) => void },
): Promise<number> {
  const { stop } = context;
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
  if (lock) context.onLock(lock);
  const busy = new BusyBudget(config.busyTimeoutMs);
  const run: Run = {
    config,
    busy,
    client: await httpClient(config, busy),
    settings: scriptSettings(config),
    stop,
  };

  const plan = await resolve(run);
  if (plan.action === "local-boot") {
    return await bootLocal(plan, config, { handoff, lock, stop });
  }
  if (config.mode === "print-plan") {
    printJson(plan);
    return ExitCode.Ok;
  }
  // Refuse what this machine cannot hold before a byte of it is downloaded.
  if (config.preflight) {
    await preflight(plan, {
      workDir: config.workDir,
      client: run.client,
      timeoutMs: config.timeoutMs,
      busy,
      meminfoFile: config.meminfoFile,
    });
  }
  const image = await stageKexec(plan, { run, lock });
  if (config.mode === "no-kexec") {
    printJson({
      ...image.plan,
      kernel: { ...image.plan.kernel, ...image.kernel },
      initrd: image.initrd,
    });
    return ExitCode.Ok;
  }
  return await loadAndExecute(image, { handoff, stop });
}

/** The settings a script sees: the host's (or only `--mac`), then `--set`. */
function scriptSettings(config: Config): Record<string, string> {
  return {
    ...(config.hostSettings
      ? readHostSettings(config.mac)
      : config.mac
      ? { "net0/mac": config.mac }
      : {}),
    ...config.settings,
  };
}

/** How every script and artifact of the run is fetched: client, retries, timeouts. */
function transfers(run: Run) {
  const { config } = run;
  return {
    client: run.client,
    retries: config.retries,
    busy: run.busy,
    timeoutMs: config.timeoutMs,
    minSpeed: config.minSpeed,
    minSpeedTimeMs: config.minSpeedTimeMs,
  };
}

/** Fetches and runs the iPXE script: the plan, pins checked against it. */
async function resolve(run: Run): Promise<BootPlan> {
  const { config } = run;
  const scripts = createScriptClient(config.source, {
    mac: run.settings["net0/mac"],
    ...transfers(run),
  });
  log.info(`fetching the iPXE script ${redactUrl(scripts.firstUrl)}`);
  const plan = await resolvePlan(scripts, {
    settings: run.settings,
    appendKargs: config.appendKargs,
    deleteKargs: config.deleteKargs,
    console: { mode: config.console, hostCmdline: config.hostCmdline },
    platform: config.hostSettings ? hostPlatform() : undefined,
    sleep: config.mode === "print-plan" ? undefined : (ms) => sleep(ms),
    print: (line) => log.info(`script: ${line}`),
  });
  if (plan.action === "local-boot") return plan;
  // A pin that names nothing the script boots is a mistake, in every mode.
  checkPins(plan, config);
  log.info(
    `plan: kernel ${
      redactUrl(plan.kernel.url)
    }, ${plan.initrds.length} initrd(s)`,
  );
  return plan;
}

/**
 * Downloads, verifies and assembles the plan's files; the script is fetched
 * again when its signed URLs have expired.
 */
async function stageKexec(
  plan: KexecPlan,
  context: { run: Run; lock?: WorkDirLock },
): Promise<StagedImage> {
  const { run, run: { config } } = context;
  return await stage(plan, {
    workDir: config.workDir,
    lock: context.lock,
    cache: !config.noCache,
    ...transfers(run),
    kernelSha256: config.kernelSha256,
    initrdSha256: config.initrdSha256,
    artifactSha256: config.artifactSha256,
    localFiles: config.source.kind === "ipxe-url" &&
      new URL(config.source.url).protocol === "file:",
    progress: config.progress,
    signal: run.stop.signal,
    refetchPlan: async () => {
      const again = await resolve(run);
      if (again.action === "kexec") return again;
      // The signed URLs expired while the host was being installed?
      throw new BootError(
        `The script, fetched again after its signed URLs expired, no longer boots a kernel: ${again.reason}`,
        ExitCode.Script,
      );
    },
  });
}

/**
 * Loads the verified kernel and initrd, then starts it as `handoff` says
 * (or leaves it loaded for `systemctl kexec`).
 */
async function loadAndExecute(
  image: KexecImage,
  context: { handoff: HandoffMode; stop: StopWatch },
): Promise<number> {
  kexecLoad(image);
  if (context.handoff === "none") {
    log.info(
      "kernel loaded; run `systemctl kexec` (or reboot with kexec) to start it",
    );
    return ExitCode.Ok;
  }
  // From here on the system stops us: a signal no longer undoes the run.
  context.stop[Symbol.dispose]();
  await kexecExecute(context.handoff);
  return ExitCode.Ok;
}

/**
 * The HTTP client of the run: Deno's roots, the system store (read once, in
 * every mode), `--ca-cert` files and the `--ca-cert-url` CA once its digest
 * matched; `--insecure` as asked.
 */
async function httpClient(
  config: Config,
  busy: BusyBudget,
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
          busy,
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

/**
 * The host is to boot its own disk: `--local-boot exit` stops here (exit 0),
 * `reboot` reboots through the firmware, `kexec` finds the installed
 * system's default entry, copies and verifies its files and kexecs them
 * (exit 0 with a message when there is none).
 */
async function bootLocal(
  local: LocalBootPlan,
  config: Config,
  context: { handoff: HandoffMode; lock?: WorkDirLock; stop: StopWatch },
): Promise<number> {
  log.info(`boot from the local disk: ${local.reason}`);
  if (config.localBoot === "exit") {
    log.info("--local-boot exit: nothing is booted here");
    if (config.mode !== "kexec") printJson(local);
    return ExitCode.Ok;
  }
  if (config.localBoot === "reboot") {
    if (config.mode !== "kexec" || context.handoff === "none") {
      if (config.mode !== "kexec") {
        printJson({ ...local, action: "local-reboot" });
      }
      log.info("--local-boot reboot: the machine would reboot now");
      return ExitCode.Ok;
    }
    log.info("--local-boot reboot: rebooting through the firmware");
    context.stop[Symbol.dispose]();
    await kexecExecute(context.handoff, { firmware: true });
    return ExitCode.Ok;
  }
  const root = Deno.env.get("ASSISTED_LOCAL_DISKS_ROOT");
  const paths: DiskPaths = root
    ? { sysDir: `${root}/sys`, devDir: `${root}/dev`, procDir: `${root}/proc` }
    : {};
  const found = await findLocalBoot(local.reason, paths);
  if (!found) {
    log.info("nothing to boot from the local disks: exiting");
    if (config.mode !== "kexec") printJson(local);
    return ExitCode.Ok;
  }
  log.info(
    `local boot: ${found.device} ${found.entry}${
      found.firstboot ? " (first boot: ignition.firstboot)" : ""
    }: kernel ${found.kernel}, ${found.initrds.length} initrd(s)`,
  );
  if (config.mode === "print-plan") {
    printJson(found);
    return ExitCode.Ok;
  }
  // Not print-plan: the work directory is locked.
  const staged = await stageLocalBoot(found, { lock: context.lock! });
  if (config.mode === "no-kexec") {
    const { verified: _, cmdline: __, ...files } = staged;
    printJson({ ...found, staged: files });
    return ExitCode.Ok;
  }
  return await loadAndExecute(staged, context);
}

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
