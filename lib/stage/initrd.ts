/**
 * Builds the one initrd file `kexec_file_load` takes, the way iPXE builds its
 * initrd region: every image in registration order, each starting at a
 * multiple of 4096 bytes from the start with zero padding in between, newc
 * cpio header(s) in front of images that have a cpio path, and no trailer.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { CpioWrap } from "../plan.ts";
import {
  createFile,
  discard,
  diskError,
  type FileIdentity,
  identityOf,
  openOwnFile,
  renameVerified,
} from "./work_dir.ts";
import { BootError, ExitCode } from "../errors.ts";

/** Every image of the region starts at a multiple of this (iPXE `INITRD_ALIGN`). */
export const INITRD_ALIGN = 4096;

const CPIO_MODE_FILE = 0o100000;
const CPIO_MODE_DIR = 0o040000;
const CPIO_DIR_MODE = 0o755;

/** Number of path components of a cpio name (iPXE `cpio_max`). */
function components(name: string): number {
  let count = 0;
  let prev = "/";
  for (const c of name) {
    if (prev === "/" && c !== "/") count++;
    prev = c;
  }
  return count;
}

/** Length of the name up to the end of its `depth`-th component (iPXE `cpio_name_len`). */
function nameLength(name: string, depth: number): number {
  let prev = "/";
  for (let len = 0; len < name.length; len++) {
    const c = name[len];
    if (c === "/" && prev !== "/" && --depth === 0) return len;
    prev = c;
  }
  return name.length;
}

function field(value: number): string {
  return value.toString(16).padStart(8, "0");
}

/** One newc header with its name, NUL-padded to a multiple of 4 (at least one NUL). */
function newcHeader(name: Uint8Array, mode: number, size: number): Uint8Array {
  const text = "070701" + field(0) + field(mode) + field(0) + field(0) +
    field(1) + field(0) + field(size) + field(0) + field(0) + field(0) +
    field(0) + field(name.length + 1) + field(0);
  const total = (110 + name.length + 1 + 3) & ~3;
  const out = new Uint8Array(total);
  out.set(new TextEncoder().encode(text), 0);
  out.set(name, 110);
  return out;
}

/**
 * The newc header(s) iPXE puts in front of an image of `size` bytes wrapped as
 * `wrap` (`initrd URL /path mode=… mkdir=…`): `mkdir` parent directory entries
 * (mode 040755; -1 = all of them), then the entry for the path itself: a
 * directory when the path ends in `/`, else a file with `wrap.mode`. Empty when
 * the path has no component.
 *
 * @example
 * ```ts
 * cpioHeaders({ path: "/etc/x.conf", mode: 0o644, mkdir: 1 }, 5); // "/etc" dir + file entry
 * ```
 */
export function cpioHeaders(wrap: CpioWrap, size: number): Uint8Array {
  const max = components(wrap.path);
  let count = wrap.mkdir < 0 ? max : 1 + wrap.mkdir;
  if (count > max) count = max;
  const parts: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const depth = max - count + index + 1;
    // Cut at a "/" (string index), then encode: safe for non-ASCII names.
    const len = nameLength(wrap.path, depth);
    const name = new TextEncoder().encode(wrap.path.slice(0, len));
    const isDir = wrap.path[len] === "/";
    const mode = isDir
      ? CPIO_MODE_DIR | CPIO_DIR_MODE
      : CPIO_MODE_FILE | (wrap.mode & 0o7777);
    parts.push(newcHeader(name, mode, depth < max ? 0 : size));
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One image of the region: a file on disk, maybe wrapped in cpio. */
export interface InitrdPart {
  /** File holding the image's bytes. */
  path: string;
  /** cpio wrapping, for `initrd URL /path …`. */
  cpio?: CpioWrap;
  /** The verified file `path` must be (device, inode, size, modification time); anything else is refused (Disk). */
  identity?: FileIdentity;
  /**
   * The sha256 `path` was verified with, hex. With `identity`, a region of
   * this one image without cpio wrapping is the image itself: the file is
   * moved to the destination instead of copied.
   */
  sha256?: string;
}

/** Where one image landed in the assembled file. */
export interface InitrdLayout {
  /** Offset of the image (its first cpio header, if any): a multiple of 4096. */
  offset: number;
  /** Bytes of cpio header(s) before the data. */
  headerSize: number;
  /** Offset of the image's own bytes. */
  dataOffset: number;
  /** Size of the image's own bytes. */
  size: number;
}

/** The assembled initrd. */
export interface AssembledInitrd {
  /** Path of the file. */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** Its sha256, hex. */
  sha256: string;
  /** The file whose bytes were hashed (device, inode, size, modification time). */
  identity: FileIdentity;
  /** One entry per part, in order. */
  layout: InitrdLayout[];
}

/** Options for {@linkcode assembleInitrd}. */
export interface AssembleOptions {
  /** Expected sha256 of the result (`--initrd-sha256`): a mismatch is a Verify error. */
  sha256?: string;
}

/**
 * Writes the initrd region for `parts` to `dest`, streaming (no part is ever
 * held in memory whole), and returns its size, sha256, identity and layout.
 * Each part is read only when it is a regular file of ours (and the very file
 * its `identity` names, when given). The bytes go to `dest + ".part"`,
 * created exclusively, renamed to `dest` only when the optional pin matches.
 * One image without cpio wrapping whose `sha256` and `identity` are known is
 * renamed to `dest` instead (the region is that image; no second copy on a
 * disk that may be RAM), once it is checked the same way.
 */
export async function assembleInitrd(
  parts: InitrdPart[],
  dest: string,
  options: AssembleOptions = {},
): Promise<AssembledInitrd> {
  const [only] = parts;
  if (parts.length === 1 && !only.cpio && only.sha256 && only.identity) {
    return await moveInto(
      { path: only.path, sha256: only.sha256, identity: only.identity },
      dest,
      options,
    );
  }
  const part = `${dest}.part`;
  try {
    const result = await assembleTo(parts, part);
    checkPin(result.sha256, options);
    await renameVerified(part, dest, { identity: result.identity });
    return { ...result, path: dest };
  } catch (err) {
    await discard(part);
    throw err;
  }
}

function checkPin(sha256: string, options: AssembleOptions): void {
  if (options.sha256 && sha256 !== options.sha256.toLowerCase()) {
    throw new BootError(
      `sha256 mismatch for the assembled initrd: expected ${options.sha256.toLowerCase()}, got ${sha256}`,
      ExitCode.Verify,
    );
  }
}

/** The region of one verified, unwrapped image: that file, renamed to `dest`. */
async function moveInto(
  part: { path: string; sha256: string; identity: FileIdentity },
  dest: string,
  options: AssembleOptions,
): Promise<AssembledInitrd> {
  const sha256 = part.sha256.toLowerCase();
  const { identity } = part;
  checkPin(sha256, options);
  // A regular file of ours, the very one that was verified.
  (await openOwnFile(part.path, identity)).close();
  await renameVerified(part.path, dest, { identity });
  return {
    path: dest,
    size: identity.size,
    sha256,
    identity,
    layout: [{ offset: 0, headerSize: 0, dataOffset: 0, size: identity.size }],
  };
}

async function assembleTo(
  parts: InitrdPart[],
  dest: string,
): Promise<AssembledInitrd> {
  const hash = createHash("sha256");
  const layout: InitrdLayout[] = [];
  const out = await createFile(dest);
  let identity: FileIdentity;
  let position = 0;
  const buffer = new Uint8Array(1 << 20);
  async function emit(bytes: Uint8Array): Promise<void> {
    hash.update(bytes);
    let done = 0;
    while (done < bytes.length) done += await out.write(bytes.subarray(done));
    position += bytes.length;
  }
  try {
    for (const part of parts) {
      const pad = (INITRD_ALIGN - position % INITRD_ALIGN) % INITRD_ALIGN;
      if (pad) await emit(new Uint8Array(pad));
      const offset = position;
      using input = await openOwnFile(part.path, part.identity);
      const { size } = await input.stat();
      const header = part.cpio
        ? cpioHeaders(part.cpio, size)
        : new Uint8Array();
      if (header.length) await emit(header);
      const dataOffset = position;
      let copied = 0;
      for (;;) {
        const n = await input.read(buffer);
        if (n === null) break;
        await emit(buffer.subarray(0, n));
        copied += n;
      }
      if (copied !== size) {
        throw new Error(
          `${part.path} changed size while being copied (${size} → ${copied})`,
        );
      }
      layout.push({ offset, headerSize: header.length, dataOffset, size });
    }
    identity = identityOf(await out.stat());
  } catch (err) {
    throw diskError(err, dest);
  } finally {
    out.close();
  }
  return {
    path: dest,
    size: position,
    sha256: hash.digest("hex"),
    identity,
    layout,
  };
}
