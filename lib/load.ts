/**
 * The `load` verb: turns a {@linkcode KexecPlan} into verified files on disk
 * (kernel, and one assembled initrd) ready for `kexec_file_load`. Executing
 * them is a separate step (`lib/kexec.ts`).
 *
 * Kernel and initrds download concurrently into the work directory (at most
 * {@linkcode MAX_CONCURRENT_DOWNLOADS} at once); each is length- and
 * hash-checked, pinned digests are enforced, formats are sniffed
 * before anything is handed on, and the initrds are assembled like iPXE's
 * initrd region. A signed initrd URL answering 401/403 (expired token) makes
 * `load` fetch the script again through `refetchPlan` and retry.
 *
 * Artifacts that carry no secret (see {@linkcode isCacheable}) are kept
 * across runs in `<workDir>/cache/` (`lib/cache.ts` says when a copy is
 * reused).
 *
 * The work directory is `lib/work_dir.ts`'s: owned by us, locked for the
 * run, every file created exclusively. What `load` returns carries the
 * identity (device, inode, size, modification time) of the verified kernel and initrd, which
 * `kexecLoad` checks on the descriptors it hands to the kernel.
 *
 * @module
 */

import { BootError, ExitCode } from "./errors.ts";
import {
  bzImageCmdlineSize,
  checkInitrd,
  checkKernel,
  type Format,
  readHeadOf,
  unpackArm64Kernel,
} from "./formats.ts";
import { download, isPxeInitrd, sha256Of } from "./download.ts";
import { type Fetched, fromCache, pruneCache, toCache } from "./cache.ts";
import { HttpStatusError } from "./http.ts";
import { artifactPin, checkPins } from "./pins.ts";
import { assembleInitrd } from "./initrd.ts";
import { log, redact } from "./log.ts";
import type { KexecPlan } from "./plan.ts";
import {
  createProgress,
  type Progress,
  type ProgressMode,
} from "./progress.ts";
import {
  discard,
  diskError,
  type FileIdentity,
  identityOf,
  lockWorkDir,
  openOwnFile,
  type WorkDirLock,
} from "./work_dir.ts";

export { artifactPin } from "./pins.ts";

/** Options for {@linkcode load}. */
export interface LoadOptions {
  /** Directory for the files (created 0700; must be ours alone, see `lib/work_dir.ts`). */
  workDir: string;
  /**
   * The lock on `workDir` the caller already holds ({@linkcode lockWorkDir}),
   * kept after `load` returns (until the kernel is loaded). Without it,
   * `load` takes the lock itself and releases it when it returns.
   */
  lock?: WorkDirLock;
  /** Client with extra CAs or `--insecure` (`createClient` in lib/http.ts). */
  client?: Deno.HttpClient;
  /** Retries per artifact after the first attempt (default 5). */
  retries?: number;
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
   * in normal form (`lib/pins.ts`); a key without a query matches any query,
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
export interface LoadedFile {
  /** Where it is. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** sha256, hex. */
  sha256: string;
}

/** The verified files for `kexec_file_load` (also what `--no-kexec` prints). */
export interface LoadedImage {
  /** The kernel file to load (for arm64 gzip/zboot: the unpacked Image). */
  kernel: LoadedFile & {
    /** Where it came from. */
    url: string;
    /** Format of the downloaded file. */
    format: Format;
    /** The downloaded file, when it had to be unpacked. */
    download?: LoadedFile;
    /** Present (true) when the kernel came from the cache of an earlier run. */
    cached?: true;
  };
  /** The assembled initrd, when the plan has initrds. */
  initrd?: LoadedFile & {
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
  /** The plan that was loaded (a newer one when `refetchPlan` was used). */
  plan: KexecPlan;
  /** Which files were verified (device, inode, size, modification time): `kexecLoad` loads only these. */
  verified: { kernel: FileIdentity; initrd?: FileIdentity };
}

const MAX_REFETCH = 2;

/** True for an URL that carries its own credential (`image_token=`, `api_key=`). */
export function isSignedUrl(url: string): boolean {
  return /[?&](image_token|api_key)=/i.test(url);
}

/**
 * True for an URL whose artifact may be kept across runs: not signed
 * (`image_token=`, `api_key=`), no user:password, not the assisted
 * `…/pxe-initrd` (its bytes change per request and contain secrets).
 */
export function isCacheable(url: string): boolean {
  if (isSignedUrl(url) || isPxeInitrd(url)) return false;
  try {
    const parsed = new URL(url);
    return parsed.username === "" && parsed.password === "" &&
      (parsed.protocol === "http:" || parsed.protocol === "https:");
  } catch {
    return false;
  }
}

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
export async function load(
  plan: KexecPlan,
  options: LoadOptions,
): Promise<LoadedImage> {
  checkPlan(plan, options);
  const dir = options.workDir;
  if (options.lock && options.lock.dir !== dir) {
    throw new Error(`load: the lock is on ${options.lock.dir}, not on ${dir}`);
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
      try {
        const loaded = await loadOnce(current, options, progress, done);
        // Whatever an earlier plan left behind goes; only the final files stay.
        await removeOurFiles(dir, FINAL_FILES);
        if (options.cache !== false) {
          // Only what this plan boots stays cached (the disk may be RAM).
          await pruneCache(
            dir,
            [loaded.plan.kernel, ...loaded.plan.initrds].map((a) => a.url),
          );
        }
        return loaded;
      } catch (err) {
        const denied = authFailure(err);
        if (
          !denied || !isSignedUrl(denied.url) || !options.refetchPlan ||
          refetch >= MAX_REFETCH
        ) throw err;
        log.warn(
          `${
            redact(denied.url)
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

/** The names `load` writes in the work directory (and nothing else is touched). */
const OUR_FILES = /^(kernel|kernel\.Image|initrd|initrd-part-\d+)(\.part)?$/;
/** What a successful `load` leaves in the work directory (besides `cache/` and the lock). */
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

const SCHEMES = new Set(["http:", "https:", "file:"]);

/**
 * Refuses, before any download, an artifact the bootloader cannot fetch (nfs,
 * tftp…), a `file:` one unless `localFiles`, and pins that would be ignored.
 */
function checkPlan(plan: KexecPlan, options: LoadOptions): void {
  checkPins(plan, options);
  for (const { url } of [plan.kernel, ...plan.initrds]) {
    let protocol: string;
    try {
      protocol = new URL(url).protocol;
    } catch (err) {
      throw new BootError(
        `${redact(url)} is not a valid URL`,
        ExitCode.Download,
        { cause: err },
      );
    }
    if (!SCHEMES.has(protocol)) {
      throw new BootError(
        `Unsupported URL scheme "${protocol.slice(0, -1)}" in ${
          redact(url)
        } (artifacts are fetched over http, https or file)`,
        ExitCode.Download,
      );
    }
    if (protocol === "file:" && !options.localFiles) {
      throw new BootError(
        `Refused to read ${
          redact(url)
        }: local files are read only when --ipxe-url is a file: URL`,
        ExitCode.Download,
      );
    }
  }
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

async function loadOnce(
  plan: KexecPlan,
  options: LoadOptions,
  progress: Progress,
  done: Map<string, Fetched>,
): Promise<LoadedImage> {
  const arch = options.arch ?? Deno.build.arch;
  const pins = options.artifactSha256 ?? {};
  const abort = new AbortController();
  const signal = options.signal
    ? AbortSignal.any([options.signal, abort.signal])
    : abort.signal;
  const dir = options.workDir;
  let kernelFormat = "unknown" as Format;
  let kernelHead: Uint8Array = new Uint8Array();

  const fetchOne = async (
    url: string,
    dest: string,
    label: string,
    pin: string | undefined,
    check: (head: Uint8Array, size: number) => void,
  ): Promise<Fetched> => {
    const earlier = done.get(url);
    const useCache = options.cache !== false && isCacheable(url);
    let result: Fetched | undefined;
    if (earlier && earlier.path === dest && (!pin || pin === earlier.sha256)) {
      log.info(`${label}: already downloaded (${earlier.size} bytes)`);
      try {
        using file = await openOwnFile(dest, earlier.identity);
        check(await readHeadOf(file), earlier.size);
      } catch (err) {
        throw diskError(err, dest);
      }
      result = earlier;
    } else {
      for (const [key, value] of done) {
        if (value.path === dest) done.delete(key);
      }
      if (useCache) {
        result = await fromCache(url, dest, {
          workDir: dir,
          label,
          pin,
          check,
          client: options.client,
          timeoutMs: options.timeoutMs,
          signal,
        });
      }
    }
    if (!result) {
      result = await download(url, dest, {
        client: options.client,
        retries: options.retries,
        timeoutMs: options.timeoutMs,
        minSpeed: options.minSpeed,
        minSpeedTimeMs: options.minSpeedTimeMs,
        sha256: pin,
        signal,
        tracker: progress.track(label),
        check,
      });
      if (useCache) await toCache(dir, result);
    }
    done.set(url, result);
    return result;
  };

  const total = plan.initrds.length;
  const tasks: Promise<Fetched>[] = limited(
    [
      () =>
        fetchOne(
          plan.kernel.url,
          `${dir}/kernel`,
          plan.kernel.name === "kernel"
            ? "kernel"
            : `kernel (${plan.kernel.name})`,
          options.kernelSha256 ?? artifactPin(plan.kernel.url, pins),
          (head, size) => {
            kernelFormat = checkKernel(head, {
              url: plan.kernel.url,
              arch,
              size,
            });
            kernelHead = head;
          },
        ),
      ...plan.initrds.map((initrd, i) => () =>
        fetchOne(
          initrd.url,
          `${dir}/initrd-part-${i}`,
          `initrd ${i + 1}/${total} (${initrd.name})`,
          artifactPin(initrd.url, pins),
          (head) => {
            // A cpio-wrapped image is any file (a config, a script).
            if (!initrd.cpio) checkInitrd(head, { url: initrd.url });
          },
        )
      ),
    ],
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
  const results = settled.map((s) =>
    (s as PromiseFulfilledResult<Fetched>).value
  );
  const [kernelResult, ...initrdResults] = results;

  const kernel = await kernelFile(kernelResult, {
    format: kernelFormat,
    head: kernelHead,
    url: plan.kernel.url,
    cmdline: plan.cmdline,
    arch,
    dir,
  });
  const loaded: LoadedImage = {
    kernel: {
      ...kernel.file,
      url: plan.kernel.url,
      format: kernelFormat,
      ...(kernel.unpackedFrom ? { download: kernel.unpackedFrom } : {}),
      ...(kernelResult.cached ? { cached: true as const } : {}),
    },
    cmdline: plan.cmdline,
    plan,
    verified: { kernel: kernel.identity },
  };
  if (total === 0) {
    if (options.initrdSha256) {
      throw new BootError(
        "--initrd-sha256 was given but the plan has no initrd",
        ExitCode.Verify,
      );
    }
    return loaded;
  }
  const assembled = await assembleInitrd(
    plan.initrds.map((initrd, i) => ({
      path: initrdResults[i].path,
      cpio: initrd.cpio,
      identity: initrdResults[i].identity,
    })),
    `${dir}/initrd`,
    { sha256: options.initrdSha256 },
  );
  // The parts are inside the assembled file now: free the space (the work
  // directory may be in RAM) and forget them.
  for (const r of initrdResults) {
    await discard(r.path);
    done.delete(r.url);
  }
  log.info(
    `initrd: ${total} image(s) assembled into ${assembled.path} (${assembled.size} bytes), sha256 ${assembled.sha256}`,
  );
  loaded.initrd = {
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
  loaded.verified.initrd = assembled.identity;
  return loaded;
}

/**
 * The kernel file to load from the verified download (or copy): on aarch64
 * a gzip'd `Image` or zboot `vmlinuz` is unpacked into `<dir>/kernel.Image`
 * (and the unpacked file hashed through the descriptor its identity comes
 * from); a bzImage's command line must fit its `cmdline_size`
 * (`kexec_file_load` would answer a bare EINVAL).
 */
export async function kernelFile(
  result: Pick<Fetched, "path" | "size" | "sha256" | "identity">,
  options: {
    /** The format `checkKernel` found. */
    format: Format;
    /** The file's first bytes. */
    head: Uint8Array;
    /** Where the kernel came from (named in errors). */
    url: string;
    /** The command line it will get. */
    cmdline: string;
    /** Architecture. */
    arch: string;
    /** The work directory. */
    dir: string;
  },
): Promise<
  { file: LoadedFile; identity: FileIdentity; unpackedFrom?: LoadedFile }
> {
  const { format, arch } = options;
  const downloaded: LoadedFile = {
    path: result.path,
    size: result.size,
    sha256: result.sha256,
  };
  let kernel = { file: downloaded, identity: result.identity };
  let unpackedFrom: LoadedFile | undefined;
  if (arch === "aarch64" && format !== "arm64-image") {
    const image = await unpackArm64Kernel(
      result.path,
      `${options.dir}/kernel.Image`,
      { url: options.url, arch, identity: result.identity },
    );
    unpackedFrom = downloaded;
    try {
      using file = await openOwnFile(image);
      const identity = identityOf(await file.stat());
      kernel = {
        file: {
          path: image,
          size: identity.size,
          sha256: await sha256Of(file),
        },
        identity,
      };
    } catch (err) {
      throw diskError(err, image);
    }
    log.info(
      `kernel: unpacked ${format} to an arm64 Image (${kernel.file.size} bytes)`,
    );
  }
  if (format === "bzimage") {
    const max = bzImageCmdlineSize(options.head);
    const length = new TextEncoder().encode(options.cmdline).length;
    if (max > 0 && length > max) {
      throw new BootError(
        `The kernel command line is ${length} bytes; this kernel accepts at most ${max}`,
        ExitCode.Verify,
      );
    }
  }
  return { ...kernel, ...(unpackedFrom ? { unpackedFrom } : {}) };
}
