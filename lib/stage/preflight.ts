/**
 * The memory preflight: before anything is downloaded, a boot this machine
 * cannot hold is refused (exit code Memory), instead of failing after a long
 * download — or in the middle of it, once a work directory in RAM has filled
 * the memory — or in the new kernel, when the live rootfs does not fit.
 *
 * The sizes come from a `HEAD` of each artifact (at most
 * {@linkcode MAX_CONCURRENT_HEADS} at once, through the run's client, never
 * with `Authorization`) before any body is fetched: with the responses'
 * lengths instead, at most 4 artifacts are known before the first ones have
 * started to fill the work directory. When the plan's command line has
 * `coreos.live.rootfs_url=`, the live rootfs the new kernel loads into RAM
 * is asked too (it is on the image service, unsigned).
 *
 * Two checks, each a lower bound (what is certain to be needed; the unpacked
 * initramfs and the running system need more):
 *
 * - before the new kernel starts, in `MemAvailable`: `kexec_file_load`
 *   copies the kernel and initrd into memory, and when the work directory is
 *   in RAM (tmpfs, ramfs or the initramfs) the files are there too, so the
 *   kernel and initrd count twice;
 * - in the new kernel, in `MemTotal`: the kernel, the initrd and the live
 *   rootfs.
 *
 * A check that cannot be made never blocks a boot that would have worked: a
 * `HEAD` that fails or gives no `Content-Length` is said and that artifact
 * counts as 0 (the sum stays a lower bound); an unreadable `/proc/meminfo`
 * is said and the check is skipped.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { BootError, errorText, ExitCode } from "../errors.ts";
import type { HttpClient } from "../http/request.ts";
import { initArgsStart, parseKernelCmdline } from "../resolve/kargs.ts";
import { log, redactUrl } from "../log.ts";
import type { KexecPlan } from "../plan.ts";
import type { BusyBudget } from "../http/busy.ts";
import { probe } from "../http/probe.ts";
import { formatBytes } from "./progress.ts";

/** At most this many `HEAD`s at once (like the downloads). */
export const MAX_CONCURRENT_HEADS = 4;

/** What `/proc/meminfo` says, in bytes. */
export interface Meminfo {
  /** `MemTotal`. */
  total: number;
  /** `MemAvailable` (absent before Linux 3.14). */
  available?: number;
}

/** Parses `/proc/meminfo` text (`Name:   1234 kB` lines); undefined without a `MemTotal`. */
export function parseMeminfo(text: string): Meminfo | undefined {
  const field = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s*kB\\s*$`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = field("MemTotal");
  if (total === undefined) return undefined;
  const available = field("MemAvailable");
  return available === undefined ? { total } : { total, available };
}

/**
 * The live rootfs the command line asks the new kernel to load into RAM:
 * the last `coreos.live.rootfs_url=` among the kernel's parameters (split
 * as the kernel splits them; what follows `--` is init's), when it is an
 * http or https URL (the live initramfs fetches nothing else).
 */
export function liveRootfsUrl(cmdline: string): string | undefined {
  const args = parseKernelCmdline(cmdline);
  const params = args.slice(0, initArgsStart(args));
  const url = params.findLast((a) => a.param === "coreos.live.rootfs_url")
    ?.value;
  return url && /^https?:\/\//i.test(url) ? url : undefined;
}

/**
 * True when `path` lives on a file system kept in RAM (tmpfs, ramfs, or the
 * initramfs's rootfs), from `/proc/self/mounts` text: the mount with the
 * longest mount point containing `path` (the last one listed among equals,
 * which is on top).
 */
export function inRam(path: string, mounts: string): boolean {
  let best: { point: string; type: string } | undefined;
  for (const line of mounts.split("\n")) {
    const [, rawPoint, type] = line.split(" ");
    if (!rawPoint || !type) continue;
    const point = rawPoint.replace(
      /\\([0-7]{3})/g,
      (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
    );
    const inside = point === "/" || path === point ||
      path.startsWith(point.endsWith("/") ? point : `${point}/`);
    if (inside && (!best || point.length >= best.point.length)) {
      best = { point, type };
    }
  }
  return best !== undefined && ["tmpfs", "ramfs", "rootfs"].includes(best.type);
}

/** The sizes of what is about to boot, in bytes; undefined: not known. */
export interface BootSizes {
  /** The kernel. */
  kernel?: number;
  /** Each initrd. */
  initrds: (number | undefined)[];
  /** The live rootfs (`coreos.live.rootfs_url`), when the plan has one. */
  rootfs?: number;
}

/** Options for {@linkcode memoryShortfall}. */
export interface ShortfallOptions {
  /** The work directory is in RAM: the files count as well as kexec's copy. */
  workDirInRam: boolean;
}

const SKIP = "--no-preflight skips this check";

/** Sizes in one unit, so that two close figures never read alike. */
function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/**
 * Why `meminfo` cannot hold what `sizes` describe (see the module's two
 * checks), or undefined when it can as far as is known. Unknown sizes count
 * as 0.
 */
export function memoryShortfall(
  sizes: BootSizes,
  meminfo: Meminfo,
  options: ShortfallOptions,
): string | undefined {
  const files = (sizes.kernel ?? 0) +
    sizes.initrds.reduce<number>((sum, size) => sum + (size ?? 0), 0);
  const now = options.workDirInRam ? 2 * files : files;
  if (meminfo.available !== undefined && now > meminfo.available) {
    const why = options.workDirInRam
      ? `the kernel and initrd (${
        mib(files)
      }) twice, as files in the work directory, which is in RAM, and as kexec's copy`
      : `kexec's copy of the kernel and initrd (${mib(files)})`;
    return `This machine has ${
      mib(meminfo.available)
    } of memory available and the boot needs at least ${
      mib(now)
    } before the new kernel starts: ${why} (${SKIP})`;
  }
  const after = files + (sizes.rootfs ?? 0);
  if (after > meminfo.total) {
    const why = sizes.rootfs
      ? `the kernel and initrd (${mib(files)}) and the live rootfs (${
        mib(sizes.rootfs)
      }) it loads into RAM`
      : `the kernel and initrd (${mib(files)})`;
    return `This machine has ${
      mib(meminfo.total)
    } of memory and the new kernel needs at least ${
      mib(after)
    }: ${why} (${SKIP})`;
  }
  return undefined;
}

/** Options for {@linkcode preflight}. */
export interface PreflightOptions {
  /** The work directory (the files go there: is it in RAM?). */
  workDir: string;
  /** The run's client (trust store, `--ca-cert`, `--insecure`). */
  client?: HttpClient;
  /** Milliseconds for each `HEAD` (default 30 s). */
  timeoutMs?: number;
  /** How long a busy server may still be waited for (the run's budget; default 15 min). */
  busy?: BusyBudget;
  /** Where `MemTotal` and `MemAvailable` are read (default `/proc/meminfo`). */
  meminfoFile?: string;
  /** Text of `/proc/self/mounts` (default: read it). */
  mounts?: string;
}

/**
 * Asks the size of everything `plan` boots and refuses, with a
 * {@linkcode BootError} Memory, a boot this machine cannot hold (see the
 * module). Logs what it found; never fails for a check it cannot make.
 */
export async function preflight(
  plan: KexecPlan,
  options: PreflightOptions,
): Promise<void> {
  const meminfoFile = options.meminfoFile ?? "/proc/meminfo";
  let meminfo: Meminfo | undefined;
  try {
    meminfo = parseMeminfo(await Deno.readTextFile(meminfoFile));
  } catch (err) {
    log.warn(`preflight: cannot read ${meminfoFile} (${errorText(err)})`);
  }
  if (!meminfo) {
    log.warn("preflight: the memory size is unknown, not checked");
    return;
  }
  const rootfs = liveRootfsUrl(plan.cmdline);
  const urls = [plan.kernel.url, ...plan.initrds.map((i) => i.url)];
  const sizes = await sizesOf(rootfs ? [...urls, rootfs] : urls, options);
  const boot: BootSizes = {
    kernel: sizes[0],
    initrds: sizes.slice(1, urls.length),
    ...(rootfs ? { rootfs: sizes[urls.length] } : {}),
  };
  const workDirInRam = ramBacked(options.workDir, options.mounts);
  const shown = (size: number | undefined) =>
    size === undefined ? "unknown" : formatBytes(size);
  log.info(
    `preflight: kernel ${shown(boot.kernel)}, initrd ${
      boot.initrds.map(shown).join(" + ")
    }${rootfs ? `, live rootfs ${shown(boot.rootfs)}` : ""}; memory ${
      formatBytes(meminfo.total)
    }, ${
      meminfo.available === undefined
        ? "available unknown"
        : `${formatBytes(meminfo.available)} available`
    }${workDirInRam ? ", the work directory is in RAM" : ""}`,
  );
  const short = memoryShortfall(boot, meminfo, { workDirInRam });
  if (short) throw new BootError(short, ExitCode.Memory);
}

/** The `Content-Length` of a `HEAD` of each URL (undefined, and said, when there is none). */
async function sizesOf(
  urls: string[],
  options: PreflightOptions,
): Promise<(number | undefined)[]> {
  const sizes: (number | undefined)[] = new Array(urls.length);
  let next = 0;
  const worker = async () => {
    while (next < urls.length) {
      const i = next++;
      sizes[i] = await sizeOf(urls[i], options);
    }
  };
  await Promise.all(
    Array.from(
      { length: Math.min(MAX_CONCURRENT_HEADS, urls.length) },
      worker,
    ),
  );
  return sizes;
}

async function sizeOf(
  url: string,
  options: PreflightOptions,
): Promise<number | undefined> {
  if (url.startsWith("file:")) {
    // A local first script's artifacts: their size is on disk.
    try {
      return (await Deno.stat(fileURLToPath(url))).size;
    } catch {
      return undefined;
    }
  }
  let why: string;
  try {
    const head = await probe(url, {
      client: options.client,
      timeoutMs: options.timeoutMs,
      busy: options.busy,
    });
    if (head.status === 200 && head.contentLength !== undefined) {
      return head.contentLength;
    }
    why = head.status === 200
      ? "no Content-Length"
      : `HEAD answered ${head.status}`;
  } catch (err) {
    why = `HEAD failed: ${errorText(err)}`;
  }
  log.warn(`preflight: the size of ${redactUrl(url)} is unknown (${why})`);
  return undefined;
}

/** Whether the work directory is in RAM (false when that cannot be told). */
function ramBacked(dir: string, mounts?: string): boolean {
  try {
    return inRam(Deno.realPathSync(dir), mounts ?? readMounts());
  } catch {
    return false;
  }
}

function readMounts(): string {
  return Deno.readTextFileSync("/proc/self/mounts");
}
