/**
 * Reading a file an option names (the config file, a token file, a CA
 * file…) without ever blocking on it: opening a FIFO for reading waits for a
 * writer, reading a terminal waits for a line. The file is checked with
 * `stat` (a symbolic link to a regular file is fine) and read only when it is
 * a regular file, or the null device (`--config /dev/null`: no config file).
 *
 * @module
 */

/** What a file that is not a regular one is, for messages (`a FIFO`). */
function kindOf(info: Deno.FileInfo): string {
  return info.isDirectory
    ? "a directory"
    : info.isFifo
    ? "a FIFO"
    : info.isSocket
    ? "a socket"
    : info.isCharDevice
    ? "a character device"
    : info.isBlockDevice
    ? "a block device"
    : "something else";
}

/** The null device's `rdev`, when this machine has one. */
function nullDevice(): number | null {
  try {
    return Deno.statSync("/dev/null").rdev;
  } catch {
    return null;
  }
}

/** True when `info` is the null device's (`/dev/null`, or another node of the same device). */
export function isNullDevice(info: Deno.FileInfo): boolean {
  return info.isCharDevice === true && info.rdev !== null &&
    info.rdev === nullDevice();
}

/** An error for a file that is not regular; the message says what it is. */
export class NotRegularFileError extends Error {
  /** Creates it; `message` says what the file is (`it is a FIFO, not a regular file`). */
  constructor(message: string) {
    super(message);
    this.name = "NotRegularFileError";
  }
}

/**
 * Throws {@linkcode NotRegularFileError} when `path` exists and is not a
 * regular file (a symbolic link to one is fine), so that nothing opens a
 * FIFO (which waits for a writer) or a device; a path that cannot be
 * stat'ed is left to the open that follows to report.
 *
 * @example
 * ```ts
 * await assertNotSpecialFile("/etc/hostname");
 * ```
 */
export async function assertNotSpecialFile(
  path: string | URL,
): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return;
  }
  if (!info.isFile) {
    throw new NotRegularFileError(`it is ${kindOf(info)}, not a regular file`);
  }
}

/**
 * Reads `path` as text when it is a regular file (or the null device);
 * throws {@linkcode NotRegularFileError} (`it is a FIFO, not a regular file`)
 * before opening anything else, and the runtime's error when it cannot be
 * read.
 *
 * @example
 * ```ts
 * readRegularTextFileSync("/etc/hostname");
 * ```
 */
export function readRegularTextFileSync(path: string): string {
  const info = Deno.statSync(path);
  if (!info.isFile) {
    if (!isNullDevice(info)) {
      throw new NotRegularFileError(
        `it is ${kindOf(info)}, not a regular file`,
      );
    }
  }
  return Deno.readTextFileSync(path);
}
