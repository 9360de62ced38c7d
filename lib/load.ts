/**
 * The `load` verb: turns a {@linkcode KexecPlan} into verified files on disk
 * (kernel, and one assembled initrd) ready for `kexec_file_load`. Executing
 * them is a separate step (`lib/kexec.ts`).
 *
 * Kernel and initrds download concurrently into the work directory; each is
 * length- and hash-checked, pinned digests are enforced, formats are sniffed
 * before anything is handed on, and the initrds are assembled like iPXE's
 * initrd region. A signed initrd URL answering 401/403 (expired token) makes
 * `load` fetch the script again through `refetchPlan` and retry.
 *
 * Artifacts that carry no secret (see {@linkcode isCacheable}) are kept
 * across runs in `<workDir>/cache/`: a hard link to the verified file plus a
 * JSON manifest (url, size, sha256, Last-Modified, Content-Length, when it
 * was verified), written only once the file is verified and in place. The
 * next run reuses the copy only when a `HEAD` (same request policy, no
 * `Authorization`) answers 200 with a `Content-Length` and/or
 * `Last-Modified` equal to the manifest's (neither: no reuse), the file on
 * disk hashes to the manifest's sha256 again, any pin matches, and the format
 * check passes; otherwise the artifact is downloaded as usual. `HEAD` was
 * chosen over a conditional `GET` (`If-Modified-Since` → 304) because it
 * compares the size as well as the date, and a server that ignores
 * `If-Modified-Since` would start sending the whole body.
 *
 * @module
 */

import { BootError, ExitCode } from "./errors.ts";
import {
  bzImageCmdlineSize,
  checkInitrd,
  checkKernel,
  type Format,
  readHead,
  unpackArm64Kernel,
} from "./formats.ts";
import { createHash } from "node:crypto";
import {
  diskError,
  download,
  type DownloadResult,
  isPxeInitrd,
  probe,
  sha256File,
} from "./download.ts";
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

export { artifactPin } from "./pins.ts";

/** Options for {@linkcode load}. */
export interface LoadOptions {
  /** Directory for the files (created 0700). */
  workDir: string;
  /** Client with extra CAs or `--insecure` (`createClient` in lib/http.ts). */
  client?: Deno.HttpClient;
  /** Retries per artifact after the first attempt (default 5). */
  retries?: number;
  /** Milliseconds to wait for headers and for each body read (default 30 s). */
  timeoutMs?: number;
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

/**
 * Downloads, verifies and assembles what `plan` boots. Throws a
 * {@linkcode BootError}: Download (5), Verify (6) or Disk (8).
 */
export async function load(
  plan: KexecPlan,
  options: LoadOptions,
): Promise<LoadedImage> {
  checkPlan(plan, options);
  await prepareWorkDir(options.workDir);
  // Files from an earlier run must never pass for this run's verified ones.
  await removeOurFiles(options.workDir);
  const progress = createProgress(options.progress ?? "auto");
  const done = new Map<string, Fetched>();
  let current = plan;
  for (let refetch = 0;; refetch++) {
    try {
      const loaded = await loadOnce(current, options, progress, done);
      if (options.cache !== false) {
        // Only what this plan boots stays cached (the disk may be RAM).
        await pruneCache(
          options.workDir,
          [loaded.plan.kernel, ...loaded.plan.initrds].map((a) => a.url),
        );
      }
      return loaded;
    } catch (err) {
      const denied = authFailure(err);
      if (
        !denied || !isSignedUrl(denied.url) || !options.refetchPlan ||
        refetch >= MAX_REFETCH
      ) {
        // Nothing half-done (and no secret initrd) stays behind a failure.
        await removeOurFiles(options.workDir);
        throw err;
      }
      log.warn(
        `${
          redact(denied.url)
        } answered ${denied.status}: the signed URL has probably expired, fetching the script again`,
      );
      current = await options.refetchPlan();
      checkPlan(current, options);
    }
  }
}

/** The names `load` writes in the work directory (and nothing else is touched). */
const OUR_FILES = /^(kernel|kernel\.Image|initrd|initrd-part-\d+)(\.part)?$/;

async function removeOurFiles(dir: string): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && OUR_FILES.test(entry.name)) {
        await Deno.remove(`${dir}/${entry.name}`);
      }
    }
  } catch (err) {
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
    } catch {
      throw new BootError(
        `${redact(url)} is not a valid URL`,
        ExitCode.Download,
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

async function prepareWorkDir(dir: string): Promise<void> {
  try {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(dir);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (!info) {
      // Ours: private from the start (files inside are 0600 too).
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(dir, 0o700);
      return;
    }
    if (!info.isDirectory) {
      throw new BootError(
        `The work directory ${dir} exists and is not a directory`,
        ExitCode.Disk,
      );
    }
    // Verified files are later opened by path for kexec: nobody else may be
    // able to swap them in between. An existing directory keeps its mode.
    if (info.mode !== null && (info.mode & 0o022) !== 0) {
      throw new BootError(
        `The work directory ${dir} is writable by other users: use a private directory (--work-dir)`,
        ExitCode.Disk,
      );
    }
  } catch (err) {
    throw diskError(err, dir);
  }
}

/** A verified file of this run, and whether it came from the cache. */
type Fetched = DownloadResult & { cached?: boolean };

/** What `<workDir>/cache/<key>.json` holds. */
interface Manifest {
  /** Format version (1). */
  version: number;
  /** The artifact's URL, exactly as the plan has it. */
  url: string;
  /** Size in bytes. */
  size: number;
  /** sha256, hex. */
  sha256: string;
  /** `Last-Modified` of the download, when the server gave one. */
  lastModified?: string;
  /** `Content-Length` of the download, when the server gave one. */
  contentLength?: number;
  /** When the file was verified (ISO 8601). */
  verifiedAt: string;
}

const CACHE_ENTRY = /^([0-9a-f]{32})(\.json)?(\.part)?$/;

function cacheKey(url: string): string {
  return createHash("sha256").update(url).digest("hex").slice(0, 32);
}

function cachePaths(dir: string, url: string) {
  const base = `${dir}/cache/${cacheKey(url)}`;
  return { file: base, manifest: `${base}.json` };
}

async function readManifest(
  path: string,
  url: string,
): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
  try {
    const m = JSON.parse(text) as Partial<Manifest>;
    if (
      m.version === 1 && m.url === url && typeof m.size === "number" &&
      m.size > 0 && typeof m.sha256 === "string" &&
      /^[0-9a-f]{64}$/.test(m.sha256) &&
      (m.lastModified === undefined || typeof m.lastModified === "string") &&
      (m.contentLength === undefined || typeof m.contentLength === "number")
    ) return m as Manifest;
  } catch {
    // Unreadable: treated like no manifest.
  }
  return undefined;
}

async function dropEntry(paths: { file: string; manifest: string }) {
  // The manifest first: without it nothing is ever reused.
  await Deno.remove(paths.manifest).catch(() => {});
  await Deno.remove(paths.file).catch(() => {});
}

/** Why the cached copy of an artifact cannot be reused, or undefined when it can. */
function staleReason(
  manifest: Manifest,
  head: { status: number; contentLength?: number; lastModified?: string },
): string | undefined {
  if (head.status !== 200) return `HEAD answered ${head.status}`;
  if (head.contentLength === undefined && head.lastModified === undefined) {
    return "the server gives neither Content-Length nor Last-Modified";
  }
  if (
    head.contentLength !== undefined && head.contentLength !== manifest.size
  ) {
    return `the size changed (${manifest.size} → ${head.contentLength} bytes)`;
  }
  if (
    (head.lastModified !== undefined || manifest.lastModified !== undefined) &&
    head.lastModified !== manifest.lastModified
  ) {
    return `Last-Modified changed (${manifest.lastModified ?? "none"} → ${
      head.lastModified ?? "none"
    })`;
  }
  return undefined;
}

/**
 * Puts the cached copy of `url` at `dest` when it is still the server's file
 * and intact; undefined (and the artifact is downloaded) otherwise.
 */
async function fromCache(
  url: string,
  dest: string,
  label: string,
  pin: string | undefined,
  check: (head: Uint8Array) => void,
  options: LoadOptions,
  signal: AbortSignal,
): Promise<Fetched | undefined> {
  const paths = cachePaths(options.workDir, url);
  const manifest = await readManifest(paths.manifest, url);
  if (!manifest) return undefined;
  const skip = (why: string) => {
    log.info(`${label}: cached copy not used (${why}), downloading`);
    return undefined;
  };
  if (pin && pin.toLowerCase() !== manifest.sha256) {
    return skip("it does not match the pinned sha256");
  }
  try {
    if ((await Deno.stat(paths.file)).size !== manifest.size) {
      await dropEntry(paths);
      return skip("its size on disk is wrong");
    }
  } catch {
    await dropEntry(paths);
    return skip("the file is missing");
  }
  let head;
  try {
    head = await probe(url, {
      client: options.client,
      timeoutMs: options.timeoutMs,
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw err;
    return skip(`HEAD failed: ${err instanceof Error ? err.message : err}`);
  }
  const stale = staleReason(manifest, head);
  if (stale) return skip(stale);
  let sha256: string;
  try {
    sha256 = await sha256File(paths.file);
  } catch (err) {
    await dropEntry(paths);
    return skip(`cannot read it: ${err instanceof Error ? err.message : err}`);
  }
  if (sha256 !== manifest.sha256) {
    await dropEntry(paths);
    log.warn(
      `${label}: cached copy is corrupt (sha256 ${sha256}, expected ${manifest.sha256}), downloading`,
    );
    return undefined;
  }
  try {
    check(await readHead(paths.file));
  } catch (err) {
    await dropEntry(paths);
    return skip(err instanceof Error ? err.message : String(err));
  }
  try {
    await Deno.remove(dest).catch(() => {});
    await Deno.link(paths.file, dest);
  } catch (err) {
    return skip(`cannot link it: ${err instanceof Error ? err.message : err}`);
  }
  log.info(
    `${label}: cached copy verified (sha256 ${sha256}), not downloaded`,
  );
  return {
    url,
    path: dest,
    size: manifest.size,
    sha256,
    resumed: false,
    attempts: 0,
    cached: true,
  };
}

/**
 * Records the verified file `result` for later runs. Never fails the boot: a
 * cache that cannot be written is only logged.
 */
async function toCache(dir: string, result: DownloadResult): Promise<void> {
  if (
    !isCacheable(result.url) ||
    (result.lastModified === undefined && result.contentLength === undefined)
  ) return;
  const paths = cachePaths(dir, result.url);
  try {
    await Deno.mkdir(`${dir}/cache`, { mode: 0o700 }).catch((err) => {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    });
    await dropEntry(paths);
    await Deno.remove(`${paths.file}.part`).catch(() => {});
    await Deno.link(result.path, `${paths.file}.part`);
    await Deno.rename(`${paths.file}.part`, paths.file);
    const manifest: Manifest = {
      version: 1,
      url: result.url,
      size: result.size,
      sha256: result.sha256,
      ...(result.lastModified !== undefined
        ? { lastModified: result.lastModified }
        : {}),
      ...(result.contentLength !== undefined
        ? { contentLength: result.contentLength }
        : {}),
      verifiedAt: new Date().toISOString(),
    };
    // Written last, and atomically: a manifest always names a verified file.
    await Deno.writeTextFile(
      `${paths.manifest}.part`,
      JSON.stringify(manifest) + "\n",
      { mode: 0o600 },
    );
    await Deno.rename(`${paths.manifest}.part`, paths.manifest);
  } catch (err) {
    await dropEntry(paths);
    await Deno.remove(`${paths.file}.part`).catch(() => {});
    await Deno.remove(`${paths.manifest}.part`).catch(() => {});
    log.warn(
      `Cannot cache ${result.url}: ${err instanceof Error ? err.message : err}`,
    );
  }
}

/** Removes cache entries for other URLs than `keep`, and leftover `.part` files. */
async function pruneCache(dir: string, keep: string[]): Promise<void> {
  const keys = new Set(keep.map(cacheKey));
  try {
    for await (const entry of Deno.readDir(`${dir}/cache`)) {
      const m = CACHE_ENTRY.exec(entry.name);
      if (entry.isFile && m && (m[3] || !keys.has(m[1]))) {
        await Deno.remove(`${dir}/cache/${entry.name}`).catch(() => {});
      }
    }
  } catch {
    // No cache directory: nothing to prune.
  }
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

  const fetchOne = async (
    url: string,
    dest: string,
    label: string,
    pin: string | undefined,
    check: (head: Uint8Array) => void,
  ): Promise<Fetched> => {
    const earlier = done.get(url);
    const useCache = options.cache !== false && isCacheable(url);
    let result: Fetched | undefined;
    if (earlier && earlier.path === dest && (!pin || pin === earlier.sha256)) {
      log.info(`${label}: already downloaded (${earlier.size} bytes)`);
      check(await readHead(dest));
      result = earlier;
    } else {
      for (const [key, value] of done) {
        if (value.path === dest) done.delete(key);
      }
      if (useCache) {
        result = await fromCache(url, dest, label, pin, check, options, signal);
      }
    }
    if (!result) {
      result = await download(url, dest, {
        client: options.client,
        retries: options.retries,
        timeoutMs: options.timeoutMs,
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
  const tasks: Promise<Fetched>[] = [
    fetchOne(
      plan.kernel.url,
      `${dir}/kernel`,
      plan.kernel.name === "kernel" ? "kernel" : `kernel (${plan.kernel.name})`,
      options.kernelSha256 ?? artifactPin(plan.kernel.url, pins),
      (head) => {
        kernelFormat = checkKernel(head, { url: plan.kernel.url, arch });
      },
    ),
    ...plan.initrds.map((initrd, i) =>
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
  ];
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

  let kernelFile: LoadedFile = {
    path: kernelResult.path,
    size: kernelResult.size,
    sha256: kernelResult.sha256,
  };
  let unpackedFrom: LoadedFile | undefined;
  if (arch === "aarch64" && kernelFormat !== "arm64-image") {
    const image = await unpackArm64Kernel(
      kernelResult.path,
      `${dir}/kernel.Image`,
      { url: plan.kernel.url, arch },
    );
    unpackedFrom = kernelFile;
    kernelFile = {
      path: image,
      size: (await Deno.stat(image)).size,
      sha256: await sha256File(image),
    };
    log.info(
      `kernel: unpacked ${kernelFormat} to an arm64 Image (${kernelFile.size} bytes)`,
    );
  }

  if (kernelFormat === "bzimage") {
    // kexec_file_load answers a too long command line with a bare EINVAL.
    const max = bzImageCmdlineSize(await readHead(kernelFile.path));
    const length = new TextEncoder().encode(plan.cmdline).length;
    if (max > 0 && length > max) {
      throw new BootError(
        `The kernel command line is ${length} bytes; this kernel accepts at most ${max}`,
        ExitCode.Verify,
      );
    }
  }

  const loaded: LoadedImage = {
    kernel: {
      ...kernelFile,
      url: plan.kernel.url,
      format: kernelFormat,
      ...(unpackedFrom ? { download: unpackedFrom } : {}),
      ...(kernelResult.cached ? { cached: true as const } : {}),
    },
    cmdline: plan.cmdline,
    plan,
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
    })),
    `${dir}/initrd`,
    { sha256: options.initrdSha256 },
  );
  // The parts are inside the assembled file now: free the space (the work
  // directory may be in RAM) and drop the cache entries pointing at them.
  for (const r of initrdResults) {
    await Deno.remove(r.path).catch(() => {});
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
  return loaded;
}
