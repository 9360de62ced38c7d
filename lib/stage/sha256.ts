/**
 * sha256 of files and bytes, hex: the one place the bootloader and the image
 * pipeline hash a whole file. Files are read in 1 MiB blocks, a few of them
 * in circulation (memory stays flat whatever the size): the next block is
 * read while the sha256 worker hashes the last.
 *
 * @example
 * ```ts
 * sha256Hex("abc"); // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { openSha256Stream } from "./sha256_stream.ts";

/** The sha256 (hex) of bytes or of a string's UTF-8 encoding. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The sha256 (hex) of a file, read in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  using file = await Deno.open(path, { read: true });
  return await sha256Of(file);
}

/** The sha256 (hex) of an open file from its first byte, read in 1 MiB blocks. */
export async function sha256Of(file: Deno.FsFile): Promise<string> {
  await file.seek(0, Deno.SeekMode.Start);
  const stream = openSha256Stream();
  const inflight: Promise<ArrayBuffer>[] = [];
  try {
    for (let blocks = 0;;) {
      const block = blocks < 3
        ? (blocks++, new ArrayBuffer(1 << 20))
        : await inflight.shift()!;
      const n = await file.read(new Uint8Array(block));
      if (n === null) break;
      const hashed = stream.update(block, n);
      hashed.catch(() => {});
      inflight.push(hashed);
    }
    await Promise.all(inflight);
    return await stream.digest();
  } finally {
    stream.close();
  }
}
