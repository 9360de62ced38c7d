/**
 * Edits a Fedora CoreOS metal disk image as a plain file, without mounting
 * and without root: GPT inspection (`sfdisk`), ext4 edits on the `boot`
 * partition (`debugfs`, `e2fsck -fn`), sparse enlargement, and a sha256 plus
 * an xz copy that do not read gigabytes of known zeros.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../lib/errors.ts";
import { sha256Hex } from "../lib/stage/sha256.ts";

/** One GPT partition as `sfdisk --json` reports it. */
export interface Partition {
  /** First sector. */
  start: number;
  /** Length in sectors. */
  size: number;
  /** Type GUID. */
  type: string;
  /** GPT partition name. */
  name?: string;
}

/** The partition table of a disk image. */
export interface PartitionTable {
  /** `gpt` for FCOS. */
  label: string;
  /** Disk GUID. */
  id: string;
  /** Bytes per sector. */
  sectorSize: number;
  /** Partitions in table order. */
  partitions: Partition[];
}

function imageError(message: string): BootError {
  return new BootError(message, ExitCode.Verify);
}

/** Resolves a tool on PATH, then in /usr/sbin and /sbin (debugfs, sfdisk: not on a user's PATH on Debian). */
export function findTool(cmd: string): string {
  if (cmd.includes("/")) return cmd;
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":"),
    "/usr/sbin",
    "/sbin",
  ].filter((d) => d);
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return `${dir}/${cmd}`;
    } catch { /* next */ }
  }
  return cmd;
}

/** Runs a tool; returns its exit code and decoded output. */
export async function runTool(
  cmd: string,
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let child;
  try {
    child = new Deno.Command(findTool(cmd), {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    })
      .spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new BootError(
        `${cmd} is not installed (Debian packages: fdisk, e2fsprogs, xz-utils, gnupg)`,
        ExitCode.Usage,
      );
    }
    throw err;
  }
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** Reads the partition table of `image` with `sfdisk --json`. */
export async function readPartitionTable(
  image: string,
): Promise<PartitionTable> {
  const r = await runTool("sfdisk", ["--json", image]);
  if (r.code !== 0) {
    throw imageError(
      `${image} has no readable partition table: ${
        r.stderr.trim().split("\n")[0]
      }`,
    );
  }
  const t = JSON.parse(r.stdout).partitiontable;
  return {
    label: t.label,
    id: String(t.id).toLowerCase(),
    sectorSize: t.sectorsize ?? 512,
    partitions: (t.partitions ?? []).map((p: Partition) => ({
      start: p.start,
      size: p.size,
      type: p.type,
      name: p.name,
    })),
  };
}

/**
 * Byte offset of the ext4 filesystem labelled `boot` on the GPT partition
 * named `boot` (FCOS: partition 3).
 */
export async function bootPartitionOffset(
  image: string,
  table: PartitionTable,
): Promise<number> {
  if (table.label !== "gpt") {
    throw imageError(`${image} is not a GPT disk (found ${table.label})`);
  }
  const boot = table.partitions.find((p) => p.name === "boot");
  if (!boot) throw imageError(`${image} has no GPT partition named boot`);
  const offset = boot.start * table.sectorSize;
  const r = await runTool("blkid", [
    "-p",
    "-O",
    String(offset),
    "-o",
    "export",
    image,
  ]);
  if (!/^TYPE=ext4$/m.test(r.stdout) || !/^LABEL=boot$/m.test(r.stdout)) {
    throw imageError(
      `The boot partition of ${image} is not an ext4 filesystem labelled boot`,
    );
  }
  return offset;
}

/** A `debugfs` device spec for the filesystem at `offset` inside `image`. */
export function fsSpec(image: string, offset: number): string {
  return `${image}?offset=${offset}`;
}

/**
 * Runs debugfs commands (one per line) on `spec`; any error it reports (on
 * stderr, since its exit code is always 0) becomes a {@linkcode BootError}.
 */
export async function debugfs(
  spec: string,
  commands: string[],
  options: { write?: boolean } = {},
): Promise<string> {
  for (const c of commands) {
    if (/[\n"]/.test(c)) throw new Error(`unsafe debugfs command: ${c}`);
  }
  const r = await runTool("debugfs", [
    ...(options.write ? ["-w"] : []),
    "-f",
    "-",
    spec,
  ], commands.join("\n") + "\n");
  const errors = r.stderr.split("\n").filter((l) =>
    l.trim() && !/^debugfs \d/.test(l)
  );
  if (r.code !== 0 || errors.length) {
    throw imageError(
      `debugfs on ${spec} failed: ${errors[0]?.trim() ?? `exit ${r.code}`}`,
    );
  }
  return r.stdout;
}

/** One entry of `debugfs ls -p`. */
export interface DirEntry {
  /** Inode number. */
  inode: number;
  /** Mode, e.g. `0o40700`. */
  mode: number;
  /** Name. */
  name: string;
}

/** Lists a directory of the filesystem (symlinks on the way are followed). */
export async function listDir(spec: string, path: string): Promise<DirEntry[]> {
  const out = await debugfs(spec, [`ls -p ${path}`]);
  return out.split("\n").flatMap((line) => {
    const m = /^\/(\d+)\/([0-7]+)\/\d+\/\d+\/([^/]*)\//.exec(line);
    return m && m[3] !== "." && m[3] !== ".."
      ? [{ inode: Number(m[1]), mode: parseInt(m[2], 8), name: m[3] }]
      : [];
  });
}

/** Whether `path` exists in the filesystem. */
export async function fsExists(spec: string, path: string): Promise<boolean> {
  const r = await runTool("debugfs", ["-R", `stat ${path}`, spec]);
  return !/File not found by ext2_lookup/.test(r.stderr);
}

/** Reads a file out of the filesystem. */
export async function fsRead(
  spec: string,
  path: string,
  tmpDir: string,
): Promise<Uint8Array> {
  const local = `${tmpDir}/dump-${crypto.randomUUID()}`;
  await debugfs(spec, [`dump ${path} ${local}`]);
  try {
    return await Deno.readFile(local);
  } finally {
    await Deno.remove(local).catch(() => {});
  }
}

/** `e2fsck -fn`: throws unless the filesystem is clean. */
export async function fsck(spec: string): Promise<void> {
  const r = await runTool("e2fsck", ["-fn", spec]);
  if (r.code !== 0) {
    throw imageError(
      `e2fsck -fn found errors on ${spec} (exit ${r.code}): ${
        r.stdout.trim().split("\n").slice(-1)[0]
      }`,
    );
  }
}

/**
 * Writes `config` as `/ignition/config.ign` on the boot filesystem, as
 * coreos-installer does: directory 0700, file 0600, owned by root. The
 * filesystem must be pristine (has `/ignition.firstboot`, no `/ignition`).
 */
export async function embedIgnition(
  spec: string,
  config: Uint8Array,
  tmpDir: string,
): Promise<void> {
  if (!await fsExists(spec, "/ignition.firstboot")) {
    throw imageError(
      "The boot filesystem has no /ignition.firstboot stamp: not a pristine FCOS metal image",
    );
  }
  if (await fsExists(spec, "/ignition")) {
    throw imageError(
      "The boot filesystem already has an /ignition directory: not a pristine FCOS metal image",
    );
  }
  const local = `${tmpDir}/config.ign`;
  await Deno.writeFile(local, config, { mode: 0o600 });
  await debugfs(spec, [
    "mkdir /ignition",
    "set_inode_field /ignition mode 040700",
    `write ${local} /ignition/config.ign`,
    "set_inode_field /ignition/config.ign mode 0100600",
  ], { write: true });
  await Deno.remove(local);
  const back = await fsRead(spec, "/ignition/config.ign", tmpDir);
  if (sha256Hex(back) !== sha256Hex(config)) {
    throw imageError("The config read back from the boot filesystem differs");
  }
}

/**
 * Appends `kargs` to the `options` line of every BLS entry in
 * `/loader/entries` (skipping those already there); returns the entry names.
 */
export async function appendKargs(
  spec: string,
  kargs: string[],
  tmpDir: string,
): Promise<string[]> {
  for (const k of kargs) {
    if (!/^[^\s"]+$/.test(k)) {
      throw new BootError(`Bad console karg ${k}`, ExitCode.Usage);
    }
  }
  const entries = (await listDir(spec, "/loader/entries")).filter((e) =>
    e.name.endsWith(".conf")
  );
  if (!entries.length) {
    throw imageError(
      "The boot filesystem has no /loader/entries/*.conf BLS entry",
    );
  }
  for (const entry of entries) {
    const path = `/loader/entries/${entry.name}`;
    const text = new TextDecoder().decode(await fsRead(spec, path, tmpDir));
    let found = false;
    const edited = text.split("\n").map((line) => {
      if (!line.startsWith("options ")) return line;
      found = true;
      const have = new Set(line.split(/\s+/));
      const add = kargs.filter((k) => !have.has(k));
      return add.length ? `${line.trimEnd()} ${add.join(" ")}` : line;
    }).join("\n");
    if (!found) throw imageError(`BLS entry ${entry.name} has no options line`);
    if (edited === text) continue;
    const local = `${tmpDir}/${entry.name}`;
    await Deno.writeTextFile(local, edited);
    await debugfs(spec, [
      `rm ${path}`,
      `write ${local} ${path}`,
      `set_inode_field ${path} mode 0${
        (0o100000 | (entry.mode & 0o7777)).toString(8)
      }`,
    ], { write: true });
    await Deno.remove(local);
  }
  return entries.map((e) => e.name);
}

/**
 * Grows `image` sparsely to `size` bytes and moves the backup GPT to the new
 * end (`sfdisk --relocate gpt-bak-std`), keeping the disk GUID.
 */
export async function enlarge(image: string, size: number): Promise<void> {
  const current = (await Deno.stat(image)).size;
  if (size < current) {
    throw new BootError(
      `DISK_SIZE ${size} is smaller than the image (${current} bytes)`,
      ExitCode.Usage,
    );
  }
  if (size % 512 !== 0) {
    throw new BootError(
      `DISK_SIZE ${size} is not a multiple of 512`,
      ExitCode.Usage,
    );
  }
  if (size === current) return;
  await Deno.truncate(image, size);
  const r = await runTool("sfdisk", ["--relocate", "gpt-bak-std", image]);
  if (r.code !== 0) {
    throw imageError(
      `sfdisk --relocate failed on ${image}: ${r.stderr.trim().split("\n")[0]}`,
    );
  }
}

/** A region of the output file: bytes to read, or a run of zeros known from the way the file was made. */
export type Segment = { kind: "data"; start: number; end: number } | {
  kind: "zeros";
  length: number;
};

/**
 * Layout of an image of `size` bytes made by growing a file of `dataEnd`
 * bytes with `truncate` and writing only its last `tail` bytes since: data,
 * then zeros, then the tail.
 */
export function grownLayout(
  dataEnd: number,
  size: number,
  tail = 1 << 20,
): Segment[] {
  const tailStart = Math.max(dataEnd, size - tail);
  const segments: Segment[] = [{ kind: "data", start: 0, end: dataEnd }];
  if (tailStart > dataEnd) {
    segments.push({ kind: "zeros", length: tailStart - dataEnd });
  }
  if (size > tailStart) {
    segments.push({ kind: "data", start: tailStart, end: size });
  }
  return segments;
}

const CHUNK = 8 << 20;
const ZERO = new Uint8Array(CHUNK);

async function* segmentBytes(
  file: Deno.FsFile,
  segments: Segment[],
): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(CHUNK);
  for (const s of segments) {
    if (s.kind === "zeros") {
      for (let left = s.length; left > 0; left -= CHUNK) {
        yield ZERO.subarray(0, Math.min(CHUNK, left));
      }
      continue;
    }
    await file.seek(s.start, Deno.SeekMode.Start);
    for (let pos = s.start; pos < s.end;) {
      const n = await file.read(buf.subarray(0, Math.min(CHUNK, s.end - pos)));
      if (n === null) throw new Error(`unexpected end of file at ${pos}`);
      pos += n;
      yield buf.subarray(0, n);
    }
  }
}

/** sha256 of a file laid out as `segments` (zeros are hashed, not read). */
export async function sha256Segments(
  path: string,
  segments: Segment[],
): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of segmentBytes(file, segments)) hash.update(chunk);
  return hash.digest("hex");
}

/** Options for {@linkcode compressSegments}. */
export interface CompressOptions {
  /** The file's layout (data and zero runs), from the sparse enlarge step. */
  segments: Segment[];
  /** xz preset 0-9 (default 6). */
  level?: number;
  /** Where to keep the precompressed block of zeros. */
  cacheDir: string;
}

const ZERO_BLOCK = 256 << 20;

async function xzInto(
  out: Deno.FsFile,
  level: number,
  source: AsyncIterable<Uint8Array>,
): Promise<void> {
  const child = new Deno.Command("xz", {
    args: [`-${level}`, "-T0", "-c", "-q"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const pump = (async () => {
    const w = child.stdin.getWriter();
    for await (const chunk of source) await w.write(chunk);
    await w.close();
  })();
  const drain = (async () => {
    for await (const chunk of child.stdout) {
      let off = 0;
      while (off < chunk.length) off += await out.write(chunk.subarray(off));
    }
  })();
  await Promise.all([pump, drain]);
  const status = await child.status;
  if (!status.success) {
    throw new BootError(`xz failed with exit ${status.code}`, ExitCode.Disk);
  }
}

async function* only(
  chunks: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  yield* chunks;
}

/**
 * Writes an xz copy of a file laid out as `segments` to `dest`: data runs
 * are compressed, long zero runs are emitted as copies of one precompressed
 * 256 MiB block of zeros (xz decompresses concatenated streams as one file),
 * so a 120G sparse disk compresses in the time its few GiB of data take.
 */
export async function compressSegments(
  path: string,
  dest: string,
  options: CompressOptions,
): Promise<void> {
  const segments = options.segments;
  const level = options.level ?? 6;
  const zeroXz = `${options.cacheDir}/zeros-256M-${level}.xz`;
  if (segments.some((s) => s.kind === "zeros" && s.length >= ZERO_BLOCK)) {
    try {
      await Deno.stat(zeroXz);
    } catch {
      using f = await Deno.open(`${zeroXz}.part`, {
        write: true,
        create: true,
        truncate: true,
      });
      await xzInto(
        f,
        level,
        segmentBytes(f, [{ kind: "zeros", length: ZERO_BLOCK }]),
      );
      await Deno.rename(`${zeroXz}.part`, zeroXz);
    }
  }
  using src = await Deno.open(path);
  using out = await Deno.open(dest, {
    write: true,
    create: true,
    truncate: true,
  });
  // Merge into streams: data runs (with short zero runs inline), then whole zero blocks.
  let pending: Segment[] = [];
  const flush = async () => {
    if (pending.length) {
      await xzInto(out, level, only(segmentBytes(src, pending)));
    }
    pending = [];
  };
  for (const s of segments) {
    if (s.kind === "zeros" && s.length >= ZERO_BLOCK) {
      const blocks = Math.floor(s.length / ZERO_BLOCK);
      await flush();
      const block = await Deno.readFile(zeroXz);
      for (let i = 0; i < blocks; i++) {
        let off = 0;
        while (off < block.length) off += await out.write(block.subarray(off));
      }
      const rest = s.length - blocks * ZERO_BLOCK;
      if (rest) pending.push({ kind: "zeros", length: rest });
    } else {
      pending.push(s);
    }
  }
  await flush();
}
