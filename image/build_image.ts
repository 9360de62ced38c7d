/**
 * `make` (target `image`): the assisted-bootloader Fedora CoreOS disk image.
 *
 * Resolves the FCOS stream metadata, downloads the metal `raw.xz` (resumable,
 * with progress), checks its sha256 and GPG signature, decompresses it and
 * checks `uncompressed-sha256`, embeds the Ignition config at
 * `ignition/config.ign` on the `boot` partition (0700/0600, debugfs: no mount,
 * no root), adds serial console kargs to the BLS entries, grows the file
 * sparsely to `DISK_SIZE` keeping the GPT disk GUID, and writes the image, an
 * xz copy and their sha256s. Every step is cached by checksum and restartable.
 *
 * Parameters are flags or environment variables (flags win), see `--help`.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { BootError, ExitCode } from "../lib/errors.ts";
import {
  bootloaderFiles,
  bootloaderView,
  checkKernelParameters,
  CONFIG_PATH,
} from "../ignition/mod.ts";
import {
  firstSet,
  helpRows,
  type OptionTable,
  parseFlags,
  readEnv,
} from "../lib/config/option_table.ts";
import { sha256File, sha256Hex } from "../lib/stage/sha256.ts";
import {
  download,
  type MetalArtifact,
  resolveMetal,
  streamUrl,
  verifySignature,
} from "./stream.ts";
import {
  appendKargs,
  bootPartitionOffset,
  compressSegments,
  embedIgnition,
  enlarge,
  fsck,
  fsSpec,
  grownLayout,
  readPartitionTable,
  runTool,
  type Segment,
  sha256Segments,
} from "./disk.ts";

/** Options of {@linkcode buildImage}. */
export interface BuildImageOptions {
  /** Path of the Ignition config to embed. */
  ignition: string;
  /** Output raw image; the xz copy is `<output>.xz`, checksums `<file>.sha256`. */
  output: string;
  /** Download and intermediate cache directory. */
  cacheDir: string;
  /** Stream metadata URL (http, https, file: or path). */
  streamUrl: string;
  /** FCOS architecture name (`x86_64`, `aarch64`). */
  arch: string;
  /** Final image size in bytes. */
  diskSize: number;
  /** Kernel arguments added to the BLS entries' options line. */
  consoleKargs: string[];
  /** Check the GPG signature (only `false` when asked for explicitly). */
  verifySignature: boolean;
  /** File with the OpenPGP keys the image must be signed with. */
  fedoraKeys?: string;
  /** Where to fetch the keys when `fedoraKeys` is not given. */
  fedoraKeysUrl: string;
  /** xz preset for the compressed copy (default 6). */
  compressLevel?: number;
  /** Progress and status lines (default stderr). */
  log?: (line: string) => void;
}

/** What {@linkcode buildImage} produced. */
export interface BuildImageResult {
  /** FCOS release the image is based on. */
  release: string;
  /** Raw image path and sha256. */
  raw: { path: string; sha256: string; size: number };
  /** xz copy path and sha256. */
  compressed: { path: string; sha256: string; size: number };
  /** GPT disk GUID (unchanged from the FCOS image). */
  diskGuid: string;
  /** Whether everything came from the cache. */
  cached: boolean;
}

/** Default Fedora keys (the docs' `curl https://fedoraproject.org/fedora.gpg | gpg --import`). */
export const FEDORA_KEYS_URL = "https://fedoraproject.org/fedora.gpg";

/** Default serial console kargs for an FCOS architecture. */
export function defaultConsoleKargs(arch: string): string[] {
  return [
    "console=tty0",
    arch === "aarch64" ? "console=ttyAMA0,115200n8" : "console=ttyS0,115200n8",
  ];
}

/** Parses a size like `120G`, `512M`, `1T` (powers of 1024, as truncate) or a byte count. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$/i.exec(text);
  if (!m) {
    throw new BootError(
      `DISK_SIZE ${JSON.stringify(text)} is not a size such as 120G`,
      ExitCode.Usage,
    );
  }
  const power = " KMGT".indexOf((m[2] || " ").toUpperCase());
  return Number(m[1]) * 1024 ** power;
}

/** A file the pipeline made, as its manifest records it. */
interface FileRecord {
  sha256: string;
  size: number;
  mtime: number;
}

interface Manifest {
  key: string;
  release: string;
  baseSize: number;
  diskGuid: string;
  raw?: FileRecord;
  compressed?: FileRecord;
}

async function fileStamp(
  path: string,
): Promise<{ size: number; mtime: number } | undefined> {
  try {
    const s = await Deno.stat(path);
    return { size: s.size, mtime: s.mtime?.getTime() ?? 0 };
  } catch {
    return undefined;
  }
}

async function sameFile(
  path: string,
  stamp?: { size: number; mtime: number },
): Promise<boolean> {
  const now = await fileStamp(path);
  return !!stamp && !!now && now.size === stamp.size &&
    now.mtime === stamp.mtime;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return undefined;
  }
}

async function writeText(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(`${path}.part`, text);
  await Deno.rename(`${path}.part`, path);
}

async function checkIgnition(
  path: string,
  say: (l: string) => void,
): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch {
    throw new BootError(
      `No Ignition config at ${path}: run make generate-ignition first (or pass BOOTLOADER_URL=… to make)`,
      ExitCode.Usage,
    );
  }
  let version: unknown;
  try {
    version = JSON.parse(new TextDecoder().decode(bytes))?.ignition?.version;
  } catch { /* reported below */ }
  if (typeof version !== "string") {
    throw new BootError(`${path} is not an Ignition config`, ExitCode.Usage);
  }
  try {
    const r = await runTool("ignition-validate", [path]);
    if (
      r.code !== 0 && /unsupported config version/.test(r.stdout + r.stderr)
    ) {
      say(
        `image: this ignition-validate does not know spec ${version}: the config is only checked as JSON`,
      );
    } else if (r.code !== 0) {
      throw new BootError(
        `${path} fails ignition-validate: ${
          (r.stdout + r.stderr).trim().split("\n")[0]
        }`,
        ExitCode.Usage,
      );
    }
  } catch (err) {
    if (
      !(err instanceof BootError) || err.exitCode !== ExitCode.Usage ||
      !/not installed/.test(err.message)
    ) throw err;
    say(
      "image: ignition-validate is not installed, the config is only checked as JSON",
    );
  }
  return bytes;
}

/**
 * The console kargs go on the image's kernel command line, where the
 * bootloader reads `assisted.*` parameters: checked as it will read them,
 * with the config.env the Ignition config writes when it carries one (a
 * refusal there stops the unit for good).
 */
function checkKargs(
  ignition: Uint8Array,
  options: BuildImageOptions,
  say: (l: string) => void,
): void {
  const cmdline = options.consoleKargs.join(" ");
  const files = bootloaderFiles(JSON.parse(new TextDecoder().decode(ignition)));
  let warnings: string[];
  try {
    warnings = files
      ? bootloaderView(files, { configPath: CONFIG_PATH, cmdline }).warnings
      : checkKernelParameters(cmdline);
  } catch (err) {
    if (!(err instanceof BootError)) throw err;
    throw new BootError(
      `${options.ignition} with CONSOLE_KARGS "${cmdline}": ${err.message}`,
      ExitCode.Usage,
    );
  }
  for (const w of warnings) {
    say(`image: warning: the bootloader will say: ${w}`);
  }
}

/** Where the pipeline's progress and status lines go. */
type Say = (line: string) => void;

function loudWarning(say: Say): void {
  const bar = "image: " + "!".repeat(72);
  say(bar);
  say(
    "image: VERIFY_SIGNATURE=0: the GPG signature of the Fedora CoreOS image is NOT checked.",
  );
  say(
    "image: Only the sha256 from the (unsigned) stream metadata protects this image.",
  );
  say(bar);
}

/** Runs the whole pipeline; see the module documentation. */
export async function buildImage(
  options: BuildImageOptions,
): Promise<BuildImageResult> {
  const say = options.log ?? ((line: string) => console.error(line));
  const cache = resolve(options.cacheDir);
  const output = resolve(options.output);
  const xzOut = `${output}.xz`;
  await Deno.mkdir(cache, { recursive: true });
  await Deno.mkdir(dirname(output), { recursive: true });
  const config = await checkIgnition(options.ignition, say);
  checkKargs(config, options, say);

  say(`image: stream metadata ${options.streamUrl} (${options.arch})`);
  const art = await resolveMetal(options.streamUrl, options.arch);
  say(`image: Fedora CoreOS ${art.release} metal raw.xz`);
  const base = await fetchBase(art, { cache, options, say });
  const baseSize = (await Deno.stat(base)).size;

  const key = sha256Hex(JSON.stringify({
    base: art.uncompressedSha256,
    ignition: sha256Hex(config),
    kargs: options.consoleKargs,
    size: options.diskSize,
    level: options.compressLevel ?? 6,
  }));
  const manifestPath = `${output}.json`;
  let manifest = await readJson<Manifest>(manifestPath);
  const rawDone = manifest?.key === key && await sameFile(output, manifest.raw);
  if (rawDone) {
    say(`image: ${basename(output)}: cached`);
  } else {
    manifest = await customize(base, output, config, options, {
      key,
      release: art.release,
      baseSize,
      cache,
      say,
    });
    await writeText(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  }
  const m = manifest!;
  const xz = await compressImage(output, {
    manifest: m,
    manifestPath,
    cache,
    options,
    say,
  });
  say(`image: ${output} sha256 ${m.raw!.sha256}`);
  say(`image: ${xzOut} sha256 ${xz.stamp.sha256}`);
  return {
    release: m.release,
    raw: { path: output, sha256: m.raw!.sha256, size: m.raw!.size },
    compressed: { path: xzOut, sha256: xz.stamp.sha256, size: xz.stamp.size },
    diskGuid: m.diskGuid,
    cached: rawDone && xz.cached,
  };
}

/**
 * The FCOS base image, checked: the `raw.xz` downloaded (its sha256, and its
 * GPG signature unless that was turned off), then decompressed and checked
 * against `uncompressed-sha256`. Both are cached; returns the raw image's
 * path.
 */
async function fetchBase(
  art: MetalArtifact,
  context: { cache: string; options: BuildImageOptions; say: Say },
): Promise<string> {
  const { cache, options, say } = context;
  const xzName = basename(new URL(art.location, "file:///").pathname);
  if (!xzName.endsWith(".xz")) {
    throw new BootError(`Unexpected image name ${xzName}`, ExitCode.Usage);
  }
  const xzPath = `${cache}/${xzName}`;
  await download(art.location, xzPath, { sha256: art.sha256, log: say });
  if (options.verifySignature) {
    await checkSignature(art, { xzPath, cache, options, say });
  } else {
    loudWarning(say);
  }
  // Decompress (sparse), check uncompressed-sha256; cached with a stamp.
  const base = `${cache}/${xzName.slice(0, -3)}`;
  const stampPath = `${base}.verified`;
  const stamp = await readJson<{ sha256: string; size: number; mtime: number }>(
    stampPath,
  );
  if (stamp?.sha256 === art.uncompressedSha256 && await sameFile(base, stamp)) {
    say(`image: ${basename(base)}: cached`);
    return base;
  }
  say(`image: decompressing ${xzName}`);
  const r = await runTool("bash", [
    "-c",
    'xz -dc -- "$1" > "$2"',
    "xz",
    xzPath,
    `${base}.part`,
  ]);
  if (r.code !== 0) {
    throw new BootError(
      `xz cannot decompress ${xzName}: ${r.stderr.trim()}`,
      ExitCode.Verify,
    );
  }
  const got = await sha256File(`${base}.part`);
  if (got !== art.uncompressedSha256) {
    await Deno.remove(`${base}.part`);
    throw new BootError(
      `uncompressed-sha256 mismatch for ${
        basename(base)
      }: expected ${art.uncompressedSha256}, got ${got}`,
      ExitCode.Verify,
    );
  }
  await Deno.rename(`${base}.part`, base);
  await writeText(
    stampPath,
    JSON.stringify({ sha256: got, ...(await fileStamp(base))! }),
  );
  say(`image: ${basename(base)}: uncompressed-sha256 ${got} verified`);
  return base;
}

/** Checks the `raw.xz`'s GPG signature against the Fedora keys. */
async function checkSignature(
  art: MetalArtifact,
  context: {
    xzPath: string;
    cache: string;
    options: BuildImageOptions;
    say: Say;
  },
): Promise<void> {
  const { xzPath, cache, options, say } = context;
  if (!art.signature) {
    throw new BootError(
      "The stream metadata has no signature URL for the image",
      ExitCode.Verify,
    );
  }
  let keys = options.fedoraKeys;
  if (!keys) {
    keys = `${cache}/fedora.gpg`;
    await download(options.fedoraKeysUrl, keys, { log: say });
  }
  const sig = `${xzPath}.sig`;
  await download(art.signature, sig, { log: say });
  try {
    const fpr = await verifySignature(xzPath, sig, { keys });
    say(`image: ${basename(xzPath)}: good signature from key ${fpr}`);
  } catch (err) {
    await Deno.remove(sig).catch(() => {}); // fetched again next time
    throw err;
  }
}

/**
 * The xz copy of the image (only its grown segments' data), its sha256 file,
 * and the manifest's record of it; `cached` when the earlier copy was kept.
 */
async function compressImage(
  output: string,
  context: {
    manifest: Manifest;
    manifestPath: string;
    cache: string;
    options: BuildImageOptions;
    say: Say;
  },
): Promise<{ stamp: FileRecord; cached: boolean }> {
  const { manifest: m, say } = context;
  const xzOut = `${output}.xz`;
  if (m.compressed && await sameFile(xzOut, m.compressed)) {
    say(`image: ${basename(xzOut)}: cached`);
    return { stamp: m.compressed, cached: true };
  }
  const layout: Segment[] = grownLayout(m.baseSize, m.raw!.size);
  say(`image: compressing ${basename(output)} to ${basename(xzOut)}`);
  await compressSegments(output, `${xzOut}.part`, {
    segments: layout,
    level: context.options.compressLevel,
    cacheDir: context.cache,
  });
  const sha = await sha256File(`${xzOut}.part`);
  await Deno.rename(`${xzOut}.part`, xzOut);
  await writeText(`${xzOut}.sha256`, `${sha}  ${basename(xzOut)}\n`);
  m.compressed = { sha256: sha, ...(await fileStamp(xzOut))! };
  await writeText(context.manifestPath, JSON.stringify(m, null, 2) + "\n");
  return { stamp: m.compressed, cached: false };
}

async function customize(
  base: string,
  output: string,
  config: Uint8Array,
  options: BuildImageOptions,
  ctx: {
    key: string;
    release: string;
    baseSize: number;
    cache: string;
    say: (l: string) => void;
  },
): Promise<Manifest> {
  const { say } = ctx;
  const work = `${output}.part`;
  // Local files named in debugfs commands: a path without spaces (debugfs splits on them).
  const tmp = await Deno.makeTempDir({ prefix: "assisted-image-" });
  if (/\s/.test(tmp)) {
    throw new BootError(
      `The temporary directory ${tmp} has a space in its path`,
      ExitCode.Disk,
    );
  }
  try {
    await Deno.remove(work).catch(() => {});
    const cp = await runTool("cp", ["--sparse=always", base, work]);
    if (cp.code !== 0) {
      throw new BootError(
        `Cannot copy ${base}: ${cp.stderr.trim()}`,
        ExitCode.Disk,
      );
    }
    const before = await readPartitionTable(work);
    const spec = fsSpec(work, await bootPartitionOffset(work, before));
    await embedIgnition(spec, config, tmp);
    say(
      "image: embedded the Ignition config as /ignition/config.ign (0700/0600) on the boot partition",
    );
    const entries = await appendKargs(spec, options.consoleKargs, tmp);
    say(
      `image: kargs ${options.consoleKargs.join(" ")} in ${entries.join(", ")}`,
    );
    await fsck(spec);
    await enlarge(work, options.diskSize);
    const after = await readPartitionTable(work);
    if (after.id !== before.id) {
      throw new BootError(
        `The disk GUID changed (${before.id} -> ${after.id})`,
        ExitCode.Disk,
      );
    }
    say(
      `image: grown to ${options.diskSize} bytes (sparse), disk GUID ${after.id} kept`,
    );
    const sha = await sha256Segments(
      work,
      grownLayout(ctx.baseSize, options.diskSize),
    );
    await Deno.rename(work, output);
    await writeText(`${output}.sha256`, `${sha}  ${basename(output)}\n`);
    return {
      key: ctx.key,
      release: ctx.release,
      baseSize: ctx.baseSize,
      diskGuid: after.id,
      raw: { sha256: sha, ...(await fileStamp(output))! },
    };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await Deno.remove(work).catch(() => {}); // left only when a step failed
  }
}

/** The builder's options; each also reads the environment variable in upper snake case (or `env`). */
const IMAGE_OPTIONS = {
  stream: {
    kind: "string",
    arg: "NAME",
    help: "FCOS stream: stable (default), testing, next",
  },
  "stream-url": {
    kind: "string",
    arg: "URL",
    help: "stream metadata URL or file (default: from STREAM)",
  },
  arch: {
    kind: "string",
    arg: "ARCH",
    help: "x86_64 or aarch64 (arm64) (default: this host)",
  },
  ignition: {
    kind: "string",
    arg: "PATH",
    env: "IGNITION_OUT",
    help: "config to embed (default build/assisted-bootloader.ign)",
  },
  "disk-size": {
    kind: "string",
    arg: "SIZE",
    help: "final size, sparse (default 120G)",
  },
  "console-kargs": {
    kind: "string",
    arg: '"A B"',
    help: "serial console kargs (default console=tty0 console=ttyS0,115200n8)",
  },
  "verify-signature": {
    kind: "string",
    arg: "0|1",
    help: "0 skips the GPG check (loudly); default 1",
  },
  "fedora-keys": {
    kind: "string",
    arg: "PATH",
    help: "OpenPGP keys file (default: fetched from FEDORA_KEYS_URL)",
  },
  "fedora-keys-url": {
    kind: "string",
    arg: "URL",
    help: `default ${FEDORA_KEYS_URL}`,
  },
  cache: {
    kind: "string",
    arg: "DIR",
    env: "IMAGE_CACHE",
    help: "downloads and intermediates (default build/cache)",
  },
  output: {
    kind: "string",
    arg: "PATH",
    env: "IMAGE_OUT",
    help: "raw image (default build/assisted-bootloader.raw; + .xz, .sha256)",
  },
  "compress-level": {
    kind: "string",
    arg: "N",
    help: "xz preset 0-9 (default 6)",
  },
  help: { kind: "boolean", short: "h", help: "show this help" },
} as const satisfies OptionTable;

const HELP =
  `Usage: build_image.ts [options]   (each option also reads the env var in CAPS)

${
    helpRows(IMAGE_OPTIONS, {
      flagWidth: 27,
      envWidth: 17,
      noEnv: (name) => name === "help" ? "(flag only)" : undefined,
    }).join("\n")
  }
`;

/** Turns flags and environment variables (flags win; empty counts as unset) into options. */
export function optionsFromArgs(
  args: string[],
  env: Record<string, string | undefined>,
): BuildImageOptions {
  const values = firstSet([
    parseFlags(args, IMAGE_OPTIONS),
    readEnv(Object.entries(env), IMAGE_OPTIONS, {
      where: "environment variable",
      flagOnly: ["help"],
      emptyIsUnset: true,
    }),
  ]);
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const get = (name: keyof typeof IMAGE_OPTIONS): string | undefined => {
    const v = values[name] as string | undefined;
    return v === "" ? undefined : v;
  };
  // FCOS names the architectures like `uname -m`; Debian's names are accepted too.
  const given = get("arch") ?? Deno.build.arch;
  const arch = given === "arm64"
    ? "aarch64"
    : given === "amd64"
    ? "x86_64"
    : given;
  const verify = get("verify-signature") ?? "1";
  if (verify !== "0" && verify !== "1") {
    throw new BootError("VERIFY_SIGNATURE must be 0 or 1", ExitCode.Usage);
  }
  const level = Number(get("compress-level") ?? "6");
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new BootError("COMPRESS_LEVEL must be 0 to 9", ExitCode.Usage);
  }
  const kargs = get("console-kargs");
  return {
    ignition: get("ignition") ?? "build/assisted-bootloader.ign",
    output: get("output") ?? "build/assisted-bootloader.raw",
    cacheDir: get("cache") ?? "build/cache",
    streamUrl: get("stream-url") ?? streamUrl(get("stream") ?? "stable"),
    arch,
    diskSize: parseSize(get("disk-size") ?? "120G"),
    consoleKargs: kargs ? kargs.trim().split(/\s+/) : defaultConsoleKargs(arch),
    verifySignature: verify === "1",
    fedoraKeys: get("fedora-keys"),
    fedoraKeysUrl: get("fedora-keys-url") ?? FEDORA_KEYS_URL,
    compressLevel: level,
  };
}

/** CLI entry point; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  try {
    await buildImage(optionsFromArgs(args, Deno.env.toObject()));
    return 0;
  } catch (err) {
    if (err instanceof BootError) {
      console.error(`image: error: ${err.message}`);
      return err.exitCode;
    }
    throw err;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
