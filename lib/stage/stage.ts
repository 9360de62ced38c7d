/**
 * The staging step: turns a {@linkcode KexecPlan} into verified files on
 * disk (the kernel, and one assembled initrd) ready for `kexecLoad` — what
 * u-root calls preparing a boot image. Loading them into the kernel is
 * `kexec_load.ts`'s `kexecLoad`, starting them `handoff.ts`'s.
 *
 * Kernel and initrds download concurrently into the work directory (at most
 * {@linkcode MAX_CONCURRENT_DOWNLOADS} at once); each is length- and
 * hash-checked, pinned digests are enforced, formats are sniffed before
 * anything is handed on, and the initrds are assembled like iPXE's initrd
 * region. A signed initrd URL answering 401/403 (expired token) makes
 * `stage` fetch the script again through `refetchPlan` and retry.
 *
 * Artifacts that carry no secret (`artifact_url.ts`'s `isCacheable`) are
 * kept across runs in `<workDir>/cache/` (`cache.ts` says when a copy is
 * reused).
 *
 * The work directory is `work_dir.ts`'s: owned by us, locked for the run,
 * every file created exclusively. What `stage` returns carries the identity
 * (device, inode, size, modification time) of the verified kernel and
 * initrd, which `kexecLoad` checks on the descriptors it hands to the kernel.
 *
 * @module
 */

import { isSignedUrl } from "./artifact_url.ts";
import * as cache from "./cache.ts";
import type { Fetched } from "./cache.ts";
import { BootError, ExitCode } from "../errors.ts";
import { type Artifact, fetchArtifact } from "./fetch_artifact.ts";
import type { BusyBudget } from "../http/busy.ts";
import { checkInitrd, checkKernel, type Format, sniff } from "./formats.ts";
import { type HttpClient, HttpStatusError } from "../http/request.ts";
import { assembleInitrd } from "./initrd.ts";
import { kernelFile, type VerifiedFile } from "./kernel_file.ts";
import { log, redactUrl } from "../log.ts";
import { artifactPin } from "./pins.ts";
import type { KexecPlan } from "../plan.ts";
import { checkPlan } from "./plan_checks.ts";
import {
  createProgress,
  type Progress,
  type ProgressMode,
} from "./progress.ts";
import {
  discard,
  diskError,
  type FileIdentity,
  lockWorkDir,
  type WorkDirLock,
} from "./work_dir.ts";

/** Options for {@linkcode stage}. */
export interface StageOptions {
  /** Directory for the files (created 0700; must be ours alone, see `work_dir.ts`). */
  workDir: string;
  /**
   * The lock on `workDir` the caller already holds ({@linkcode lockWorkDir}),
   * kept after `stage` returns (until the kernel is loaded). Without it,
   * `stage` takes the lock itself and releases it when it returns.
   */
  lock?: WorkDirLock;
  /** Client with extra CAs or `--insecure` (`createClient` in `http_client.ts`). */
  client?: HttpClient;
  /** Retries per artifact after the first attempt, busy answers aside (default 5). */
  retries?: number;
  /** How long busy servers may still be waited for (the run's budget; default 15 min). */
  busy?: BusyBudget;
  /** Milliseconds to wait for headers and for each body read (default 30 s). */
  timeoutMs?: number;
  /** Bytes per second below which a body is cut (`--min-speed`; 0: never; default 1024). */
  minSpeed?: number;
  /** The window for `minSpeed`, in milliseconds (`--min-speed-time`; default 30 s). */
  minSpeedTimeMs?: number;
  /** Pin for the kernel as downloaded (`--kernel-sha256`). */
  kernelSha256?: string;
  /** Pin for the assembled initrd (`--initrd-sha256`). */
  initrdSha256?: string;
  /**
   * Pins for single artifacts by URL (`--artifact-sha256 URL=HEX`), compared
   * in normal form (`pins.ts`); a key without a query matches any query,
   * and a key that matches nothing in the plan is refused (Usage).
   */
  artifactSha256?: Record<string, string>;
  /**
   * `file:` artifacts are allowed (default false): only when the first
   * script was the user's own `file:` URL.
   */
  localFiles?: boolean;
  /** Fetches the script again when a signed URL answered 401/403 (at most twice). */
  refetchPlan?: () => Promise<KexecPlan>;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
  /** Progress display (default `auto`). */
  progress?: ProgressMode;
  /** Aborts every download. */
  signal?: AbortSignal;
  /** Keep and reuse verified copies of cacheable artifacts across runs (default true). */
  cache?: boolean;
}

/** A file handed to the kernel. */
export type StagedFile = VerifiedFile;

/** The verified files for `kexec_file_load` (also what `--no-kexec` prints). */
export interface StagedImage {
  /** The kernel file to load (for arm64 gzip/zboot: the unpacked Image). */
  kernel: StagedFile & {
    /** Where it came from. */
    url: string;
    /** Format of the downloaded file. */
    format: Format;
    /** The downloaded file, when it had to be unpacked. */
    download?: StagedFile;
    /** Present (true) when the kernel came from the cache of an earlier run. */
    cached?: true;
  };
  /** The assembled initrd, when the plan has initrds. */
  initrd?: StagedFile & {
    /** Each downloaded image, in order, with its offset in the assembled file. */
    parts: {
      url: string;
      size: number;
      sha256: string;
      offset: number;
      cached?: true;
    }[];
  };
  /** The command line. */
  cmdline: string;
  /** The plan that was staged (a newer one when `refetchPlan` was used). */
  plan: KexecPlan;
  /** Which files were verified (device, inode, size, modification time): `kexecLoad` loads only these. */
  verified: { kernel: FileIdentity; initrd?: FileIdentity };
}

const MAX_REFETCH = 2;

function authFailure(err: unknown): HttpStatusError | undefined {
  const cause = err instanceof BootError ? err.cause : err;
  if (
    cause instanceof HttpStatusError &&
    (cause.status === 401 || cause.status === 403)
  ) return cause;
  return undefined;
}

/** At most this many artifacts download (or are checked in the cache) at once. */
export const MAX_CONCURRENT_DOWNLOADS = 4;

/**
 * Downloads, verifies and assembles what `plan` boots. Throws a
 * {@linkcode BootError}: Download (5), Verify (6), Disk (8) or Locked (9).
 */
export async function stage(
  plan: KexecPlan,
  options: StageOptions,
): Promise<StagedImage> {
  checkPlan(plan, options);
  const dir = options.workDir;
  if (options.lock && options.lock.dir !== dir) {
    throw new Error(`stage: the lock is on ${options.lock.dir}, not on ${dir}`);
  }
  const own = options.lock
    ? undefined
    : await lockWorkDir(dir, { cache: options.cache !== false });
  try {
    // Files from an earlier run must never pass for this run's verified ones.
    await removeOurFiles(dir);
    const progress = createProgress(options.progress ?? "auto");
    const done = new Map<string, Fetched>();
    let current = plan;
    for (let refetch = 0;; refetch++) {
      // Before a byte is downloaded: what this plan does not use leaves the
      // cache (the disk may be small or RAM), and --no-cache frees it all.
      await freeCache(dir, current, options.cache !== false);
      try {
        const staged = await stageOnce(current, options, progress, done);
        // Whatever an earlier plan left behind goes; only the final files stay.
        await removeOurFiles(dir, FINAL_FILES);
        return staged;
      } catch (err) {
        const denied = authFailure(err);
        if (
          !denied || !isSignedUrl(denied.url) || !options.refetchPlan ||
          refetch >= MAX_REFETCH
        ) throw err;
        log.warn(
          `${
            redactUrl(denied.url)
          } answered ${denied.status}: the signed URL has probably expired, fetching the script again`,
        );
        // The old plan's signed files (and its half-done ones) go now; what
        // the new plan does not boot goes as soon as it is known.
        await forget(done, (url) => isSignedUrl(url));
        await removeOurFiles(dir, [...done.values()].map((r) => r.path));
        current = await options.refetchPlan();
        checkPlan(current, options);
        const next = new Set(
          [current.kernel, ...current.initrds].map((a) => a.url),
        );
        await forget(done, (url) => !next.has(url));
      }
    }
  } catch (err) {
    // Nothing half-done (and no secret initrd) stays behind a failure.
    await removeOurFiles(dir, [], { lenient: true });
    throw err;
  } finally {
    own?.release();
  }
}

/**
 * Makes room before downloading: with the cache in use, the entries of URLs
 * `plan` does not boot go; without it (`--no-cache`), every entry an earlier
 * run kept goes, so that a cache no run uses does not hold the disk.
 */
async function freeCache(
  dir: string,
  plan: KexecPlan,
  inUse: boolean,
): Promise<void> {
  if (!inUse) return await cache.clear(dir);
  await cache.prune(dir, [plan.kernel, ...plan.initrds].map((a) => a.url));
}

/** Removes the files of `done` whose URL `drop` names, and forgets them. */
async function forget(
  done: Map<string, Fetched>,
  drop: (url: string) => boolean,
): Promise<void> {
  for (const [url, result] of done) {
    if (!drop(url)) continue;
    await discard(result.path);
    done.delete(url);
  }
}

/** The names `stage` writes in the work directory (and nothing else is touched). */
const OUR_FILES = /^(kernel|kernel\.Image|initrd|initrd-part-\d+)(\.part)?$/;
/** What a successful `stage` leaves in the work directory (besides `cache/` and the lock). */
const FINAL_FILES = ["kernel", "kernel.Image", "initrd"];

/**
 * Removes every entry of ours in `dir` but those in `keep` (names or paths):
 * files, and equally links, FIFOs or devices at those names (the name goes,
 * never what it points to). A directory at one of our names is a Disk error
 * (`lenient`: skipped, for the cleanup after a failure).
 */
async function removeOurFiles(
  dir: string,
  keep: string[] = [],
  options: { lenient?: boolean } = {},
): Promise<void> {
  const kept = new Set(keep.map((k) => k.slice(k.lastIndexOf("/") + 1)));
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!OUR_FILES.test(entry.name) || kept.has(entry.name)) continue;
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) {
        if (options.lenient) continue;
        throw new BootError(
          `${path} is a directory where the bootloader writes a file: remove it`,
          ExitCode.Disk,
        );
      }
      await Deno.remove(path);
    }
  } catch (err) {
    if (options.lenient) return;
    throw diskError(err, dir);
  }
}

/**
 * Removes every file of ours in `dir` (kernel, initrds, assembled or not,
 * half-downloaded or verified) and the half-written entries of its cache:
 * for a run that is stopped, just before it exits. Synchronous, never fails
 * (the name goes, never what a link points to; a directory stays).
 */
export function discardStagedSync(dir: string): void {
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (!OUR_FILES.test(entry.name) || entry.isDirectory) continue;
      try {
        Deno.removeSync(`${dir}/${entry.name}`);
      } catch {
        // Gone already, or nothing we can do.
      }
    }
  } catch {
    // No work directory: nothing of ours.
  }
  cache.discardPartialSync(dir);
}

/**
 * Runs the tasks at most `limit` at a time, in order; once `signal` aborts,
 * the tasks not started yet fail with its reason instead of starting.
 */
function limited<T>(
  tasks: (() => Promise<T>)[],
  limit: number,
  signal: AbortSignal,
): Promise<T>[] {
  let running = 0;
  const waiting: (() => void)[] = [];
  return tasks.map(async (task) => {
    if (running >= limit) {
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    running++;
    try {
      if (signal.aborted) throw signal.reason;
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  });
}

/** The artifacts of `plan`, kernel first, with their destinations, labels, pins and checks. */
function artifactsOf(plan: KexecPlan, options: StageOptions): Artifact[] {
  const arch = options.arch ?? Deno.build.arch;
  const pins = options.artifactSha256 ?? {};
  const dir = options.workDir;
  const total = plan.initrds.length;
  return [
    {
      url: plan.kernel.url,
      dest: `${dir}/kernel`,
      label: plan.kernel.name === "kernel"
        ? "kernel"
        : `kernel (${plan.kernel.name})`,
      pin: options.kernelSha256 ?? artifactPin(plan.kernel.url, pins),
      check: (head, size) =>
        checkKernel(head, { url: plan.kernel.url, arch, size }),
    },
    ...plan.initrds.map((initrd, i) => ({
      url: initrd.url,
      dest: `${dir}/initrd-part-${i}`,
      label: `initrd ${i + 1}/${total} (${initrd.name})`,
      pin: artifactPin(initrd.url, pins),
      // A cpio-wrapped image is any file (a config, a script).
      check: (head: Uint8Array) =>
        initrd.cpio ? sniff(head) : checkInitrd(head, { url: initrd.url }),
    })),
  ];
}

/** Every artifact of `plan` at most 4 at a time; the first failure aborts the others and is thrown. */
async function fetchAll(
  plan: KexecPlan,
  options: StageOptions,
  context: { done: Map<string, Fetched>; progress: Progress },
): Promise<Fetched[]> {
  const abort = new AbortController();
  const signal = options.signal
    ? AbortSignal.any([options.signal, abort.signal])
    : abort.signal;
  const tasks = limited(
    artifactsOf(plan, options).map((artifact) => () =>
      fetchArtifact(artifact, { ...options, ...context, signal })
    ),
    MAX_CONCURRENT_DOWNLOADS,
    signal,
  );
  let first: unknown;
  const settled = await Promise.allSettled(tasks.map((t) =>
    t.catch((err) => {
      if (first === undefined) {
        first = err;
        abort.abort(err);
      }
      throw err;
    })
  ));
  if (first !== undefined) throw first;
  return settled.map((s) => (s as PromiseFulfilledResult<Fetched>).value);
}

async function stageOnce(
  plan: KexecPlan,
  options: StageOptions,
  progress: Progress,
  done: Map<string, Fetched>,
): Promise<StagedImage> {
  const dir = options.workDir;
  const [kernelResult, ...initrdResults] = await fetchAll(plan, options, {
    done,
    progress,
  });
  const format = kernelResult.format!;
  const kernel = await kernelFile({ ...kernelResult, format }, {
    url: plan.kernel.url,
    cmdline: plan.cmdline,
    arch: options.arch ?? Deno.build.arch,
    dir,
  });
  const staged: StagedImage = {
    kernel: {
      ...kernel.file,
      url: plan.kernel.url,
      format,
      ...(kernel.unpackedFrom ? { download: kernel.unpackedFrom } : {}),
      ...(kernelResult.cached ? { cached: true as const } : {}),
    },
    cmdline: plan.cmdline,
    plan,
    verified: { kernel: kernel.identity },
  };
  const total = plan.initrds.length;
  if (total === 0) {
    if (options.initrdSha256) {
      throw new BootError(
        "--initrd-sha256 was given but the plan has no initrd",
        ExitCode.Verify,
      );
    }
    return staged;
  }
  const assembled = await assembleInitrd(
    plan.initrds.map((initrd, i) => ({
      path: initrdResults[i].path,
      cpio: initrd.cpio,
      identity: initrdResults[i].identity,
      sha256: initrdResults[i].sha256,
    })),
    `${dir}/initrd`,
    { sha256: options.initrdSha256 },
  );
  // The parts are inside the assembled file now (or are it, moved): free the
  // space (the work directory may be in RAM) and forget them.
  for (const r of initrdResults) {
    await discard(r.path);
    done.delete(r.url);
  }
  log.info(
    `initrd: ${total} image(s) assembled into ${assembled.path} (${assembled.size} bytes), sha256 ${assembled.sha256}`,
  );
  staged.initrd = {
    path: assembled.path,
    size: assembled.size,
    sha256: assembled.sha256,
    parts: initrdResults.map((r, i) => ({
      url: r.url,
      size: r.size,
      sha256: r.sha256,
      offset: assembled.layout[i].offset,
      ...(r.cached ? { cached: true as const } : {}),
    })),
  };
  staged.verified.initrd = assembled.identity;
  return staged;
}
