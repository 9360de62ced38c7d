/**
 * Format sniffing for downloaded artifacts, and the arm64 kernel unpacking
 * `kexec_file_load` needs.
 *
 * The kernel must be something the running kernel's kexec loader accepts
 * (x86_64: a bzImage; arm64: an uncompressed `Image`, which we produce from a
 * gzip'd `Image` or a gzip EFI zboot `vmlinuz`). Every initrd that is not
 * wrapped in a cpio header must look like something the kernel can unpack as
 * an initramfs. An HTML error page served with status 200 is named as such.
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { redactUrl } from "../log.ts";
import {
  clearName,
  createFile,
  discard,
  diskError,
  type FileIdentity,
  openOwnFile,
} from "./work_dir.ts";

/** What the first bytes of a file say it is. */
export type Format =
  | "empty"
  | "bzimage"
  | "arm64-image"
  | "zboot"
  | "elf"
  | "pe"
  | "gzip"
  | "xz"
  | "zstd"
  | "lz4-legacy"
  | "lz4-frame"
  | "bzip2"
  | "cpio-newc"
  | "cpio-newc-crc"
  | "html"
  | "unknown";

/** Bytes to read from the start of a file for {@linkcode sniff}. */
export const SNIFF_BYTES = 4096;

/** Formats `kexec_file_load` accepts as an initramfs part (the kernel's decompressors). */
export const INITRD_FORMATS: readonly Format[] = [
  "cpio-newc",
  "cpio-newc-crc",
  "gzip",
  "xz",
  "zstd",
  "lz4-legacy",
  "lz4-frame",
  "bzip2",
];

function at(head: Uint8Array, offset: number, text: string): boolean {
  if (head.length < offset + text.length) return false;
  for (let i = 0; i < text.length; i++) {
    if (head[offset + i] !== text.charCodeAt(i)) return false;
  }
  return true;
}

function bytesAt(head: Uint8Array, offset: number, bytes: number[]): boolean {
  if (head.length < offset + bytes.length) return false;
  return bytes.every((b, i) => head[offset + i] === b);
}

function looksLikeHtml(head: Uint8Array): boolean {
  // UTF-8 decoding drops a byte-order mark by default.
  const text = new TextDecoder().decode(head.subarray(0, 512)).trimStart()
    .toLowerCase();
  return /^<(!doctype html|html|head|body|title|\?xml|!--)/.test(text);
}

/**
 * Names the format of a file from its first bytes (give at least
 * {@linkcode SNIFF_BYTES} when the file has them).
 *
 * @example
 * ```ts
 * sniff(new TextEncoder().encode("070701...")); // "cpio-newc"
 * ```
 */
export function sniff(head: Uint8Array): Format {
  if (head.length === 0) return "empty";
  if (at(head, 0x202, "HdrS")) return "bzimage";
  if (at(head, 0, "MZ") && at(head, 4, "zimg")) return "zboot";
  if (at(head, 0x38, "ARM\x64")) return "arm64-image";
  if (bytesAt(head, 0, [0x1f, 0x8b])) return "gzip";
  if (bytesAt(head, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return "xz";
  if (bytesAt(head, 0, [0x28, 0xb5, 0x2f, 0xfd])) return "zstd";
  if (bytesAt(head, 0, [0x02, 0x21, 0x4c, 0x18])) return "lz4-legacy";
  if (bytesAt(head, 0, [0x04, 0x22, 0x4d, 0x18])) return "lz4-frame";
  if (at(head, 0, "BZh") && head[3] >= 0x31 && head[3] <= 0x39) {
    return "bzip2";
  }
  if (at(head, 0, "070701")) return "cpio-newc";
  if (at(head, 0, "070702")) return "cpio-newc-crc";
  if (bytesAt(head, 0, [0x7f, 0x45, 0x4c, 0x46])) return "elf";
  if (at(head, 0, "MZ")) return "pe";
  if (looksLikeHtml(head)) return "html";
  return "unknown";
}

/**
 * The longest command line (in bytes, without the NUL) a bzImage accepts: the
 * setup header's `cmdline_size` (boot protocol 2.06+), 255 for protocols
 * 2.00–2.05, and 0 (unknown) when the header has no protocol version.
 */
export function bzImageCmdlineSize(head: Uint8Array): number {
  if (head.length < 0x23c) return 0;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const version = view.getUint16(0x206, true);
  if (version >= 0x206) return view.getUint32(0x238, true);
  return version >= 0x200 ? 255 : 0;
}

/** Reads the first `length` bytes of a file (fewer when it is shorter). */
export async function readHead(
  path: string,
  length = SNIFF_BYTES,
): Promise<Uint8Array> {
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(length);
  let have = 0;
  while (have < length) {
    const n = await file.read(buf.subarray(have));
    if (n === null) break;
    have += n;
  }
  return buf.subarray(0, have);
}

function describe(format: Format): string {
  switch (format) {
    case "html":
      return "an HTML page";
    case "empty":
      return "empty";
    case "unknown":
      return "of an unknown format";
    default:
      return `a ${format} file`;
  }
}

/** Options for {@linkcode checkKernel} and {@linkcode checkInitrd}. */
export interface CheckOptions {
  /** Where the bytes came from (named, redacted, in the error). */
  url: string;
  /** Machine architecture as `Deno.build.arch` names it (default: this machine). */
  arch?: string;
  /**
   * Size of the whole file: a kernel shorter than its own header says is
   * refused ({@linkcode kernelMinimumSize}). Not checked when absent.
   */
  size?: number;
}

/** The end of the last section's raw data of a PE image, or 0 when `head` holds no PE section table. */
function peRawEnd(head: Uint8Array): number {
  if (!at(head, 0, "MZ") || head.length < 0x40) return 0;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const pe = view.getUint32(0x3c, true);
  if (pe + 24 > head.length || !at(head, pe, "PE\0\0")) return 0;
  const sections = view.getUint16(pe + 6, true);
  const table = pe + 24 + view.getUint16(pe + 20, true);
  if (sections === 0 || table + 40 * sections > head.length) return 0;
  let end = 0;
  for (let i = 0; i < sections; i++) {
    const rawSize = view.getUint32(table + 40 * i + 16, true);
    const rawPointer = view.getUint32(table + 40 * i + 20, true);
    if (rawSize > 0) end = Math.max(end, rawPointer + rawSize);
  }
  return end;
}

/**
 * The smallest file a kernel's own header allows (0 when it does not say),
 * so that a body which ended early without a `Content-Length` is not taken
 * for a kernel:
 *
 * - a bzImage is its real-mode setup, `(setup_sects || 4) + 1` sectors of 512
 *   bytes, followed by `syssize` × 16 bytes of protected-mode code (32 bits
 *   from boot protocol 2.04, 16 bits before);
 * - an arm64 `Image` built with the EFI stub (every distribution kernel) is a
 *   PE image that ends no earlier than its last section's raw data. Its
 *   `image_size` field cannot serve: it is the size the kernel needs in
 *   memory, BSS included, larger than the file. An `Image` without the stub
 *   has no field giving its file size (0).
 *
 * A signature appended after that end (signed kernels) is allowed.
 */
export function kernelMinimumSize(head: Uint8Array): number {
  const format = sniff(head);
  if (format === "bzimage" && head.length >= 0x208) {
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const setupSects = head[0x1f1] || 4;
    const syssize = view.getUint16(0x206, true) >= 0x204
      ? view.getUint32(0x1f4, true)
      : view.getUint16(0x1f4, true);
    return (setupSects + 1) * 512 + syssize * 16;
  }
  if (format === "arm64-image") return peRawEnd(head);
  return 0;
}

/**
 * Checks that a kernel's first bytes fit the architecture and returns its
 * format; throws a {@linkcode BootError} (Verify) naming the URL otherwise.
 *
 * x86_64 wants a bzImage. aarch64 takes an `Image`, a gzip'd `Image` or a zboot
 * `vmlinuz` (the latter two are unpacked with {@linkcode unpackArm64Kernel}).
 * Other architectures only get the HTML/empty check. Given `size`, a kernel
 * shorter than its header says ({@linkcode kernelMinimumSize}) is refused.
 */
export function checkKernel(head: Uint8Array, options: CheckOptions): Format {
  const arch = options.arch ?? Deno.build.arch;
  const format = sniff(head);
  const where = redactUrl(options.url);
  const fail = (why: string) =>
    new BootError(`Kernel ${where} ${why}`, ExitCode.Verify);
  if (format === "html" || format === "empty") {
    throw fail(`is ${describe(format)}, not a kernel`);
  }
  if (arch === "x86_64" && format !== "bzimage") {
    throw fail(
      `is ${describe(format)}, not an x86_64 bzImage (no HdrS at 0x202)`,
    );
  }
  if (arch === "aarch64") {
    if (format === "zboot") {
      const type = zbootHeader(head).compression;
      if (type !== "gzip") {
        throw fail(
          `is an EFI zboot image compressed with ${
            type || "an unnamed method"
          }; only gzip zboot kernels can be unpacked for kexec`,
        );
      }
    } else if (format !== "arm64-image" && format !== "gzip") {
      throw fail(
        `is ${
          describe(format)
        }, not an arm64 Image, gzip'd Image or zboot vmlinuz`,
      );
    }
  }
  const minimum = kernelMinimumSize(head);
  if (options.size !== undefined && options.size < minimum) {
    throw fail(
      `is truncated: ${options.size} bytes, but its ${format} header says at least ${minimum}`,
    );
  }
  return format;
}

/**
 * Checks that an initrd's first bytes are something the kernel unpacks as an
 * initramfs (newc cpio, gzip, xz, zstd, lz4, bzip2); throws a
 * {@linkcode BootError} (Verify) naming the URL otherwise.
 */
export function checkInitrd(head: Uint8Array, options: CheckOptions): Format {
  const format = sniff(head);
  if (!INITRD_FORMATS.includes(format)) {
    throw new BootError(
      `Initrd ${redactUrl(options.url)} is ${
        describe(format)
      }, not a newc cpio archive or a compressed one (gzip, xz, zstd, lz4, bzip2)`,
      ExitCode.Verify,
    );
  }
  return format;
}

/** The fields of an EFI zboot header (`drivers/firmware/efi/libstub/zboot-header.S`). */
export interface ZbootHeader {
  /** Offset of the compressed payload from the start of the file. */
  payloadOffset: number;
  /** Size of the compressed payload. */
  payloadSize: number;
  /** Compression method named in the header (`gzip`, `zstd`, …). */
  compression: string;
}

/** Parses the zboot header at the start of a `vmlinuz` (check {@linkcode sniff} first). */
export function zbootHeader(head: Uint8Array): ZbootHeader {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const nameBytes = head.subarray(24, Math.min(head.length, 0x3c));
  const end = nameBytes.indexOf(0);
  return {
    payloadOffset: view.getUint32(8, true),
    payloadSize: view.getUint32(12, true),
    compression: new TextDecoder().decode(
      end < 0 ? nameBytes : nameBytes.subarray(0, end),
    ),
  };
}

/** A stream of `length` bytes of `file` from `start` (the file is closed at the end). */
function sliceStream(
  file: Deno.FsFile,
  start: number,
  length: number,
): ReadableStream<Uint8Array> {
  let left = length;
  let seeked = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!seeked) {
        await file.seek(start, Deno.SeekMode.Start);
        seeked = true;
      }
      if (left <= 0) {
        file.close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(left, 1 << 20));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        controller.error(new Error("file ended inside the zboot payload"));
        return;
      }
      left -= n;
      controller.enqueue(buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  });
}

/**
 * The most an unpacked arm64 `Image` may be (256 MiB; a distribution kernel
 * is 30 to 70 MiB): a small gzip can unpack to gigabytes, on a work
 * directory that may be in RAM.
 */
export const MAX_ARM64_IMAGE_BYTES = 256 << 20;

/** Options for {@linkcode unpackArm64Kernel}. */
export interface UnpackOptions extends CheckOptions {
  /** The verified file `src` must be (device, inode, size, modification time): anything else is refused. */
  identity?: FileIdentity;
  /** The most the unpacked Image may be (default {@linkcode MAX_ARM64_IMAGE_BYTES}). */
  maxBytes?: number;
}

/** The one-line reason a gzip stream could not be unpacked. */
function gunzipProblem(err: unknown): string {
  // What the runtime's gzip decoder says when bytes follow the end of the
  // first gzip member (trailing bytes, or a second member).
  return /failed to write whole buffer/.test(errorText(err))
    ? "it has data after the end of its gzip stream (trailing bytes, or a second gzip member; only a single gzip member is unpacked)"
    : `it could not be decompressed: ${errorText(err)}`;
}

/**
 * Turns a gzip'd arm64 `Image` or a gzip zboot `vmlinuz` at `src` into the
 * plain `Image` at `dest` (streaming, through `dest + ".part"`, created
 * exclusively and renamed only once the result has the arm64 magic and is as
 * long as its header says), and returns `dest`. A plain `Image` is returned
 * as is (`src`). Refused (Verify): an output past `maxBytes`, bytes after
 * the gzip stream (a second member included), corrupt data.
 */
export async function unpackArm64Kernel(
  src: string,
  dest: string,
  options: UnpackOptions,
): Promise<string> {
  const file = await openOwnFile(src, options.identity);
  let head: Uint8Array;
  try {
    head = await readHeadOf(file);
    await file.seek(0, Deno.SeekMode.Start);
  } catch (err) {
    file.close();
    throw err;
  }
  const format = sniff(head);
  if (format === "arm64-image") {
    file.close();
    return src;
  }
  const where = redactUrl(options.url);
  let input: ReadableStream<Uint8Array>;
  try {
    input = await gzipStreamOf(file, { head, format, where });
  } catch (err) {
    file.close();
    throw err;
  }
  const part = `${dest}.part`;
  try {
    await gunzipTo(input, part, {
      where,
      maxBytes: options.maxBytes ?? MAX_ARM64_IMAGE_BYTES,
    });
    await clearName(dest);
    await Deno.rename(part, dest);
  } catch (err) {
    await discard(part);
    throw diskError(err, dest);
  }
  return dest;
}

/**
 * The gzip stream of a kernel file: all of it (a gzip'd `Image`), or the
 * payload its zboot header points at, which must be gzip and inside the
 * file.
 */
async function gzipStreamOf(
  file: Deno.FsFile,
  kernel: { head: Uint8Array; format: Format; where: string },
): Promise<ReadableStream<Uint8Array>> {
  const { format, where } = kernel;
  if (format === "gzip") return file.readable;
  if (format !== "zboot") {
    throw new BootError(
      `Kernel ${where} is ${describe(format)}, not an arm64 kernel`,
      ExitCode.Verify,
    );
  }
  const z = zbootHeader(kernel.head);
  if (z.compression !== "gzip") {
    throw new BootError(
      `Kernel ${where} is a zboot image compressed with ${z.compression}; only gzip can be unpacked`,
      ExitCode.Verify,
    );
  }
  const { size } = await file.stat();
  if (z.payloadOffset + z.payloadSize > size || z.payloadSize === 0) {
    throw new BootError(
      `Kernel ${where} has a zboot header pointing outside the file`,
      ExitCode.Verify,
    );
  }
  return sliceStream(file, z.payloadOffset, z.payloadSize);
}

/**
 * Gunzips `input` into a new file at `part`: refused past `maxBytes`, for
 * bytes after the gzip stream or corrupt data, and when the result is not an
 * arm64 `Image` as long as its header says. `input` is cancelled (its file
 * closed) on a failure.
 */
async function gunzipTo(
  input: ReadableStream<Uint8Array>,
  part: string,
  limits: { where: string; maxBytes: number },
): Promise<void> {
  const { where, maxBytes } = limits;
  let written = 0;
  let out: Deno.FsFile | undefined;
  try {
    out = await createFile(part);
    const gunzip = new DecompressionStream(
      "gzip",
    ) as unknown as TransformStream<Uint8Array, Uint8Array>;
    const reader = input.pipeThrough(gunzip).getReader();
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw new BootError(
            `Kernel ${where} cannot be unpacked: ${gunzipProblem(err)}`,
            ExitCode.Verify,
            { cause: err },
          );
        }
        if (chunk.done) break;
        written += chunk.value.length;
        if (written > maxBytes) {
          throw new BootError(
            `Kernel ${where} unpacks to more than ${maxBytes} bytes, the most an arm64 Image may be`,
            ExitCode.Verify,
          );
        }
        let done = 0;
        while (done < chunk.value.length) {
          done += await out.write(chunk.value.subarray(done));
        }
      }
    } catch (err) {
      // Closes the kernel file too.
      await reader.cancel().catch(() => {});
      throw err;
    }
    const unpacked = await readHeadOf(out);
    const { size } = await out.stat();
    out.close();
    out = undefined;
    if (sniff(unpacked) !== "arm64-image") {
      throw new BootError(
        `Kernel ${where} does not unpack to an arm64 Image (no ARM\\x64 magic)`,
        ExitCode.Verify,
      );
    }
    const minimum = kernelMinimumSize(unpacked);
    if (size < minimum) {
      throw new BootError(
        `Kernel ${where} unpacks to a truncated arm64 Image: ${size} bytes, but its header says at least ${minimum}`,
        ExitCode.Verify,
      );
    }
  } catch (err) {
    out?.close();
    // Not read yet (the output could not be created): its file is closed too.
    if (!input.locked) await input.cancel().catch(() => {});
    throw err;
  }
}

/** The first `length` bytes of an open file (fewer when it is shorter). */
export async function readHeadOf(
  file: Deno.FsFile,
  length = SNIFF_BYTES,
): Promise<Uint8Array> {
  await file.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(length);
  let have = 0;
  while (have < length) {
    const n = await file.read(buf.subarray(have));
    if (n === null) break;
    have += n;
  }
  return buf.subarray(0, have);
}
