/**
 * The work directory belongs to this process: it (and its `cache/`) must be
 * owned by the running user and writable by nobody else, one instance at a
 * time holds it (an `flock` on `<dir>/.lock`), every file is created
 * exclusively (never through a symbolic link, never opening a FIFO or a
 * device), and a verified file is afterwards known by its identity (device,
 * inode, size, modification time), so that what is read or handed on later is provably the same
 * file and not something put at its name in between.
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { untrustedPart } from "../path_trust.ts";

/** Which file a path named when it was verified: what `fstat` must say later. */
export interface FileIdentity {
  /** Device (`st_dev`, as the runtime reports it). */
  dev: number;
  /** Inode number. */
  ino: number;
  /** Size in bytes. */
  size: number;
  /**
   * Modification time in whole milliseconds since the epoch. A file deleted
   * and created again may get the same inode back at once; it cannot get the
   * old file's modification time (only the owner can set that back, and the
   * owner is the bootloader). A hard link or a rename leaves it unchanged.
   */
  mtimeMs: number;
}

/** The identity of a file from its `stat`/`fstat`. */
export function identityOf(info: Deno.FileInfo): FileIdentity {
  return {
    dev: info.dev ?? 0,
    ino: info.ino ?? 0,
    size: info.size,
    mtimeMs: info.mtime?.getTime() ?? 0,
  };
}

/** True when `info` is the file `identity` names (same device, inode, size and modification time). */
export function isSameFile(
  info: Deno.FileInfo | FileIdentity,
  identity: FileIdentity,
): boolean {
  const other = "mtimeMs" in info ? info : identityOf(info);
  return other.dev === identity.dev && other.ino === identity.ino &&
    other.size === identity.size && other.mtimeMs === identity.mtimeMs;
}

/**
 * Maps a file-system failure on `path` (disk full, read-only, permission,
 * missing directory, a directory or a link in the way, no locks on this file
 * system: any error carrying an errno code) to a {@linkcode BootError} with
 * exit code Disk; returns any other error unchanged.
 */
export function diskError(err: unknown, path: string): unknown {
  if (err instanceof BootError) return err;
  const code = (err as { code?: unknown })?.code;
  if (
    err instanceof Deno.errors.PermissionDenied ||
    err instanceof Deno.errors.NotFound ||
    err instanceof Deno.errors.AlreadyExists ||
    err instanceof Deno.errors.IsADirectory ||
    err instanceof Deno.errors.NotADirectory ||
    err instanceof Deno.errors.FilesystemLoop ||
    (typeof code === "string" && /^E[A-Z0-9]+$/.test(code))
  ) {
    return new BootError(
      `Cannot write ${path}: ${errorText(err)}`,
      ExitCode.Disk,
      { cause: err },
    );
  }
  return err;
}

/** The uid of this process (null where the runtime has none). */
function ownUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

function describeMode(mode: number | null): string {
  return mode === null
    ? "unknown"
    : (mode & 0o7777).toString(8).padStart(4, "0");
}

/** Refuses a directory that is not ours alone. */
function checkOwnDir(path: string, what: string, info: Deno.FileInfo): void {
  if (!info.isDirectory) {
    throw new BootError(
      `${what} ${path} exists and is not a directory`,
      ExitCode.Disk,
    );
  }
  const uid = ownUid();
  if (uid !== null && info.uid !== null && info.uid !== uid) {
    throw new BootError(
      `${what} ${path} belongs to uid ${info.uid}, not to this user (uid ${uid}): use a directory of your own (--work-dir)`,
      ExitCode.Disk,
    );
  }
  // Sticky or not: another user who can create entries here could put a
  // link or a FIFO at a name we are about to use.
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    throw new BootError(
      `${what} ${path} is writable by other users (mode ${
        describeMode(info.mode)
      }): use a private directory (--work-dir)`,
      ExitCode.Disk,
    );
  }
}

/**
 * Refuses a work directory whose path another user controls
 * ({@linkcode untrustedPart}): a symbolic link of theirs (not root, not us)
 * can be pointed elsewhere between runs, or in the middle of one; a
 * directory on the way that is theirs, or that others may write without the
 * sticky bit, lets them rename the next part and put a link of their own in
 * its place. Either way the bootloader would write, remove and lock files in
 * a directory of their choosing. A missing part ends the walk (it is about to
 * be created, by us). The work directory itself is checked by its caller.
 */
function checkLinksOnPath(dir: string): void {
  const part = untrustedPart(dir, { final: false });
  if (!part) return;
  throw new BootError(
    part.kind === "links"
      ? `The work directory ${dir} ${part.text}`
      : `The work directory ${dir} ${part.text}: use a path no other user controls (--work-dir)`,
    ExitCode.Disk,
  );
}

/** Options for {@linkcode prepareWorkDir} and {@linkcode lockWorkDir}. */
export interface WorkDirOptions {
  /** The cache is in use: `<dir>/cache` is checked too when it exists (default true). */
  cache?: boolean;
}

/**
 * Creates the work directory (0700) when it is missing, and refuses (Disk,
 * exit 8) a directory — new or existing — or an existing `cache/` in it that
 * is not a directory, is not owned by the running user, or is writable by its
 * group or by others. An existing directory keeps its mode. The work
 * directory's own path may go through symbolic links (the user named it)
 * owned by root or by the running user, never by another user; `cache/` may
 * not be a link.
 */
export async function prepareWorkDir(
  dir: string,
  options: WorkDirOptions = {},
): Promise<void> {
  try {
    checkLinksOnPath(dir);
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
      info = await Deno.stat(dir);
    }
    checkOwnDir(dir, "The work directory", info);
    if (options.cache === false) return;
    let cache: Deno.FileInfo | undefined;
    try {
      cache = await Deno.lstat(`${dir}/cache`);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (cache) checkOwnDir(`${dir}/cache`, "The cache directory", cache);
  } catch (err) {
    throw diskError(err, dir);
  }
}

/**
 * Makes room for a file of ours at `path`: whatever is there (a leftover
 * file, a symbolic link, a FIFO, a socket, a device node) is removed — the
 * name, never what a link points to. A directory is not ours to remove: it
 * is a Disk error.
 */
export async function clearName(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw diskError(err, path);
  }
  if (info.isDirectory) {
    throw new BootError(
      `${path} is a directory where the bootloader writes a file: remove it`,
      ExitCode.Disk,
    );
  }
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw diskError(err, path);
  }
}

/** Options for {@linkcode renameVerified}. */
export interface RenameVerifiedOptions {
  /** The verified file `from` is, and `dest` must lead to once renamed. */
  identity: FileIdentity;
}

/**
 * Puts the verified file `from` at `dest`: clears the name, renames, and
 * checks that `dest` then leads to `options.identity` (not to a file swapped
 * in meanwhile). Throws a {@linkcode BootError} (Disk) otherwise.
 */
export async function renameVerified(
  from: string,
  dest: string,
  options: RenameVerifiedOptions,
): Promise<void> {
  const { identity } = options;
  await clearName(dest);
  try {
    await Deno.rename(from, dest);
    if (!isSameFile(await Deno.lstat(dest), identity)) {
      throw new BootError(
        `${dest} was replaced while the bootloader put it in place`,
        ExitCode.Disk,
      );
    }
  } catch (err) {
    throw diskError(err, dest);
  }
}

/** Removes what is at `path` unless it is a directory; never fails (cleanup after an error). */
export async function discard(path: string): Promise<void> {
  try {
    if (!(await Deno.lstat(path)).isDirectory) await Deno.remove(path);
  } catch {
    // Nothing there, or nothing we can do.
  }
}

/**
 * Creates `path` as a new, empty regular file (0600) open for reading and
 * writing. A leftover at the name is removed first ({@linkcode clearName}),
 * then the file is created with `O_CREAT|O_EXCL`, which never follows a link
 * and never opens an existing FIFO or device: if anything appears at the
 * name in between, creation fails (Disk) instead of writing through it.
 */
export async function createFile(path: string): Promise<Deno.FsFile> {
  await clearName(path);
  try {
    return await Deno.open(path, {
      read: true,
      write: true,
      createNew: true,
      mode: 0o600,
    });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new BootError(
        `${path} appeared while the bootloader was creating it: is another program writing the work directory?`,
        ExitCode.Disk,
        { cause: err },
      );
    }
    throw diskError(err, path);
  }
}

/**
 * Opens `path` for reading only when it is a regular file owned by this
 * user — checked on the name without following it, then on the open file —
 * and, when `expected` is given, only when it is that very file (device,
 * inode, size). Throws a {@linkcode BootError} (Disk) otherwise; a symbolic
 * link, FIFO or device is never opened.
 */
export async function openOwnFile(
  path: string,
  expected?: FileIdentity,
): Promise<Deno.FsFile> {
  const refuse = (why: string) =>
    new BootError(`${path} ${why}`, ExitCode.Disk);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    throw diskError(err, path);
  }
  const uid = ownUid();
  if (!info.isFile) throw refuse("is not a regular file");
  if (uid !== null && info.uid !== null && info.uid !== uid) {
    throw refuse(`belongs to uid ${info.uid}, not to this user`);
  }
  if (expected && !isSameFile(info, expected)) {
    throw refuse("is not the file that was verified (it was replaced)");
  }
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw diskError(err, path);
  }
  try {
    const opened = await file.stat();
    if (!opened.isFile || !isSameFile(opened, identityOf(info))) {
      throw refuse("was replaced while it was being opened");
    }
  } catch (err) {
    file.close();
    throw diskError(err, path);
  }
  return file;
}

/** The lock one instance holds on a work directory (released on dispose, and by the OS at exit). */
export interface WorkDirLock extends Disposable {
  /** The work directory, as given. */
  readonly dir: string;
  /** Releases the lock (idempotent). */
  release(): void;
}

/** Name of the lock file inside the work directory (never removed). */
export const LOCK_FILE = ".lock";

/**
 * Prepares the work directory ({@linkcode prepareWorkDir}) and takes an
 * exclusive, non-blocking `flock` on `<dir>/.lock`, held until released or
 * until the process exits. When another process holds it, throws a
 * {@linkcode BootError} with exit code Locked (9) at once, naming the
 * directory: the second instance does not wait, so that a misconfigured
 * duplicate unit fails visibly instead of queueing behind a boot.
 */
export async function lockWorkDir(
  dir: string,
  options: WorkDirOptions = {},
): Promise<WorkDirLock> {
  await prepareWorkDir(dir, options);
  const path = `${dir}/${LOCK_FILE}`;
  // The lock file is kept across runs (removing it while another instance
  // holds a lock on it would let two instances lock two different files).
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw diskError(err, path);
  }
  const uid = ownUid();
  if (
    info && (!info.isFile || (uid !== null && info.uid !== uid))
  ) await clearName(path);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
  } catch (err) {
    throw diskError(err, path);
  }
  try {
    const opened = await file.stat();
    const named = await Deno.lstat(path);
    if (
      !opened.isFile || !named.isFile || !isSameFile(named, identityOf(opened))
    ) {
      throw new BootError(
        `${path} was replaced while the bootloader was opening it`,
        ExitCode.Disk,
      );
    }
    if (!await file.tryLock(true)) {
      throw new BootError(
        `Another instance of the bootloader is using the work directory ${dir} (it holds ${path}): wait for it to finish, or give this one another --work-dir`,
        ExitCode.Locked,
      );
    }
  } catch (err) {
    file.close();
    throw diskError(err, path);
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    file.close();
  };
  return { dir, release, [Symbol.dispose]: release };
}
