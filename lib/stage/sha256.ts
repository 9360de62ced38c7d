/**
 * sha256 of files and bytes, hex: the one place the bootloader and the image
 * pipeline hash a whole file. Files are read in 1 MiB chunks through one
 * buffer, so memory stays flat whatever the size.
 *
 * @example
 * ```ts
 * sha256Hex("abc"); // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";

/** The sha256 (hex) of bytes or of a string's UTF-8 encoding. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The sha256 (hex) of a file, read in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  using file = await Deno.open(path, { read: true });
  return await sha256Of(file);
}

/** The sha256 (hex) of an open file from its first byte, read in 1 MiB chunks. */
export async function sha256Of(file: Deno.FsFile): Promise<string> {
  const hash = createHash("sha256");
  await file.seek(0, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}
