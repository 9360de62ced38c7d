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
import {
  diskError,
  download,
  type DownloadResult,
  sha256File,
} from "./download.ts";
import { HttpStatusError } from "./http.ts";
import { assembleInitrd } from "./initrd.ts";
import { log, redact } from "./log.ts";
import type { KexecPlan } from "./plan.ts";
import {
  createProgress,
  type Progress,
  type ProgressMode,
} from "./progress.ts";

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
  /** First backoff delay in milliseconds (default 500). */
  retryDelayMs?: number;
  /** Pin for the kernel as downloaded (`--kernel-sha256`). */
  kernelSha256?: string;
  /** Pin for the assembled initrd (`--initrd-sha256`). */
  initrdSha256?: string;
  /** Pins for single artifacts by URL (`--artifact-sha256 URL=HEX`); a key without a query matches any query. */
  artifactSha256?: Record<string, string>;
  /** Fetches the script again when a signed URL answered 401/403 (at most twice). */
  refetchPlan?: () => Promise<KexecPlan>;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
  /** Progress display (default `auto`). */
  progress?: ProgressMode;
  /** Aborts every download. */
  signal?: AbortSignal;
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
  };
  /** The assembled initrd, when the plan has initrds. */
  initrd?: LoadedFile & {
    /** Each downloaded image, in order, with its offset in the assembled file. */
    parts: { url: string; size: number; sha256: string; offset: number }[];
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

/** The pin for `url` in `pins`: exact match first, then a key without a query matching the URL without its query. */
export function artifactPin(
  url: string,
  pins: Record<string, string> = {},
): string | undefined {
  if (pins[url]) return pins[url];
  const bare = url.split("?")[0].split("#")[0];
  for (const [key, value] of Object.entries(pins)) {
    if (!key.includes("?") && key === bare) return value;
  }
  return undefined;
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
  await prepareWorkDir(options.workDir);
  // Files from an earlier run must never pass for this run's verified ones.
  await removeOurFiles(options.workDir);
  const progress = createProgress(options.progress ?? "auto");
  const cache = new Map<string, DownloadResult>();
  let current = plan;
  for (let refetch = 0;; refetch++) {
    try {
      return await loadOnce(current, options, progress, cache);
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

async function prepareWorkDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const info = await Deno.stat(dir);
    if (!info.isDirectory) {
      throw new BootError(`${dir} is not a directory`, ExitCode.Disk);
    }
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      await Deno.chmod(dir, 0o700);
    }
  } catch (err) {
    throw diskError(err, dir);
  }
}

async function loadOnce(
  plan: KexecPlan,
  options: LoadOptions,
  progress: Progress,
  cache: Map<string, DownloadResult>,
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
  ): Promise<DownloadResult> => {
    const cached = cache.get(url);
    let result: DownloadResult;
    if (cached && cached.path === dest && (!pin || pin === cached.sha256)) {
      log.info(`${label}: already downloaded (${cached.size} bytes)`);
      check(await readHead(dest));
      result = cached;
    } else {
      for (const [key, value] of cache) {
        if (value.path === dest) cache.delete(key);
      }
      result = await download(url, dest, {
        client: options.client,
        retries: options.retries,
        timeoutMs: options.timeoutMs,
        baseDelayMs: options.retryDelayMs,
        sha256: pin,
        signal,
        tracker: progress.track(label),
        check,
      });
    }
    cache.set(url, result);
    return result;
  };

  const total = plan.initrds.length;
  const tasks: Promise<DownloadResult>[] = [
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
    (s as PromiseFulfilledResult<DownloadResult>).value
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
    cache.delete(r.url);
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
    })),
  };
  return loaded;
}
