/**
 * A path another user can change: whoever owns a symbolic link on the way
 * can point it elsewhere; whoever owns a directory on the way, or may write
 * it without the sticky bit, can rename what is in it and put something of
 * theirs at the name; whoever owns the file, or may write it, decides its
 * bytes. Root and the running user are trusted (root can change anything
 * anyway); every other uid is another user. The walk follows the path by
 * hand, as the kernel would resolve it (links followed, their targets
 * walked too, `.` and `..`, relative targets, at most 40 links), using only
 * `lstat` and `readLink` (and `stat` of `/dev/null`), and never opens
 * anything.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { isNullDevice } from "./regular_file.ts";

/** Symbolic links followed at most on the way (as the kernel's ELOOP). */
export const MAX_LINKS = 40;

/** The first part of a path that another user controls, as {@linkcode untrustedPart} finds it. */
export interface UntrustedPart {
  /**
   * Which part: `file` (what the path leads to), `directory` (one on the
   * way), `link` (a symbolic link on the way), or `links` (more than
   * {@linkcode MAX_LINKS} symbolic links on the way).
   */
  kind: "file" | "directory" | "link" | "links";
  /** That part, links resolved (`/home/eve`); for `links`, the path as given. */
  path: string;
  /**
   * What is wrong with it: `writable by other users (mode 0666)`, `a
   * directory of uid 1000 (not root, not this user)`.
   */
  why: string;
  /**
   * The rest of a sentence whose subject is the path as given: `is writable
   * by other users (mode 0666)`, `is reached through /home/eve, a directory
   * of uid 1000 (not root, not this user)`, `leads to /srv/x.env, writable
   * by other users (mode 0666)`.
   */
  text: string;
  /** What fixes it when a mode is the problem (`chmod go-w /etc/x.env`). */
  fix?: string;
}

/** Options for {@linkcode untrustedPart}. */
export interface PathTrustOptions {
  /**
   * Judge what the path leads to as well (default true): another user's, or
   * writable by group or others, is untrusted (the null device excepted: it
   * reads empty whoever writes it). False: only the way to it (a caller
   * that checks the last part by rules of its own).
   */
  final?: boolean;
}

/** The uid of this process (null where the runtime has none). */
function ownUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

/** `0666`: the permission bits of a mode, sticky bit included. */
function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** Neither root nor this user. */
function isOther(info: Deno.FileInfo, uid: number): boolean {
  return info.uid !== null && info.uid !== 0 && info.uid !== uid;
}

const OTHER_USER = "(not root, not this user)";

/** Judges a directory on the way: another user's, or writable by others without the sticky bit. */
function wayProblem(
  path: string,
  info: Deno.FileInfo,
  uid: number,
): UntrustedPart | undefined {
  let why: string | undefined;
  let fix: string | undefined;
  const mode = info.mode ?? 0;
  if (isOther(info, uid)) {
    why = `a directory of uid ${info.uid} ${OTHER_USER}`;
  } else if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0) {
    why = `writable by other users without the sticky bit (mode ${
      modeText(mode)
    })`;
    fix = `chmod go-w ${path}`;
  }
  if (why === undefined) return undefined;
  return {
    kind: "directory",
    path,
    why,
    text: `is reached through ${path}, ${why}`,
    ...(fix ? { fix } : {}),
  };
}

/**
 * Judges a file by its permission bits alone (`path` names it in the result):
 * writable by its group or by others is untrusted. For a file known only by
 * its mode, as one a generator writes for another machine.
 */
export function modeProblem(
  path: string,
  mode: number,
): UntrustedPart | undefined {
  if ((mode & 0o022) === 0) return undefined;
  const why = `writable by other users (mode ${modeText(mode)})`;
  return {
    kind: "file",
    path,
    why,
    text: `is ${why}`,
    fix: `chmod go-w ${path}`,
  };
}

/** Judges what the path leads to: another user's, or writable by group or others. */
function finalProblem(
  path: string,
  info: Deno.FileInfo,
  options: { uid: number; linked: boolean },
): UntrustedPart | undefined {
  if (isNullDevice(info)) return undefined;
  let problem = modeProblem(path, info.mode ?? 0);
  if (isOther(info, options.uid)) {
    const why = `${
      info.isDirectory ? "a directory" : "a file"
    } of uid ${info.uid} ${OTHER_USER}`;
    problem = { kind: "file", path, why, text: `is ${why}` };
  }
  if (problem && options.linked) {
    problem.text = `leads to ${path}, ${problem.why}`;
  }
  return problem;
}

/**
 * Walks `path` (relative to the working directory when not absolute) the way
 * the kernel resolves it and returns the first part another user controls: a
 * symbolic link of theirs (not root's, not ours), a directory on the way that
 * is theirs or that others may write without the sticky bit, more than
 * {@linkcode MAX_LINKS} links, and (unless `final` is false) the file it
 * leads to when it is theirs or writable by group or others. Returns
 * undefined when no other user can change what the path names, when a part
 * is missing (the walk ends there: opening it fails, or the caller creates
 * it), or where the runtime has no uids. An `lstat` or `readLink` that fails
 * otherwise (permission denied) throws the runtime's error. Synchronous (a
 * few `lstat` calls), so that the configuration, read synchronously, can use
 * it too.
 *
 * @example
 * ```ts
 * const part = untrustedPart("/etc/assisted-bootloader/config.env");
 * if (part) console.log(`/etc/assisted-bootloader/config.env ${part.text}`);
 * ```
 */
export function untrustedPart(
  path: string,
  options: PathTrustOptions = {},
): UntrustedPart | undefined {
  const uid = ownUid();
  if (uid === null) return undefined;
  let pending = (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`)
    .split("/");
  let resolved = "";
  let resolvedInfo: Deno.FileInfo | undefined;
  let links = 0;
  while (pending.length > 0) {
    const name = pending.shift()!;
    if (name === "" || name === ".") continue;
    if (name === "..") {
      resolved = resolved.slice(0, resolved.lastIndexOf("/"));
      resolvedInfo = undefined;
      continue;
    }
    const next = `${resolved}/${name}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(next);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
    if (!info.isSymlink) {
      if (pending.length > 0) {
        const problem = wayProblem(next, info, uid);
        if (problem) return problem;
      }
      resolved = next;
      resolvedInfo = info;
      continue;
    }
    if (isOther(info, uid)) {
      const why = `a symbolic link of uid ${info.uid} ${OTHER_USER}`;
      return {
        kind: "link",
        path: next,
        why,
        text: `is reached through ${next}, ${why}`,
      };
    }
    if (++links > MAX_LINKS) {
      const why = `reached through more than ${MAX_LINKS} symbolic links`;
      return { kind: "links", path, why, text: `is ${why}` };
    }
    const target = Deno.readLinkSync(next);
    if (target.startsWith("/")) resolved = "";
    resolvedInfo = undefined;
    pending = [...target.split("/"), ...pending];
  }
  if (options.final === false) return undefined;
  // Where the walk ended: its last part, or the root or a directory it went
  // back up to (never missing: it was walked through).
  const last = resolved || "/";
  return finalProblem(last, resolvedInfo ?? Deno.lstatSync(last), {
    uid,
    linked: links > 0,
  });
}

/**
 * The one-line refusal of a file another user can change, for a file the
 * bootloader was told to read: `subject` (`Config file /etc/x.env`, `it`)
 * and what {@linkcode untrustedPart} found, then why it matters and the fix
 * when there is one: `Config file /etc/x.env is writable by other users
 * (mode 0666): whoever can change it decides what this machine boots (chmod
 * go-w /etc/x.env)`.
 */
export function untrustedRefusal(
  subject: string,
  part: UntrustedPart,
): string {
  const line = `${subject} ${part.text}`;
  if (part.kind === "links") return line;
  return `${line}: whoever can change it decides what this machine boots${
    part.fix ? ` (${part.fix})` : ""
  }`;
}

/** A path another user can change, refused; its message has `it` for subject (`it is writable by other users…`). */
export class UntrustedPathError extends Error {
  /** What {@linkcode untrustedPart} found. */
  readonly part: UntrustedPart;

  /** Creates the error from what was found. */
  constructor(part: UntrustedPart) {
    super(untrustedRefusal("it", part));
    this.name = "UntrustedPathError";
    this.part = part;
  }
}

/**
 * Throws {@linkcode UntrustedPathError} when another user controls a part of
 * `path` (a `file:` URL is taken as its path), as {@linkcode untrustedPart}
 * judges it; a missing part is left to the open that follows to report.
 *
 * @example
 * ```ts
 * assertTrustedPath(new URL("file:///srv/boot.ipxe"));
 * ```
 */
export function assertTrustedPath(
  path: string | URL,
  options: PathTrustOptions = {},
): void {
  const part = untrustedPart(
    path instanceof URL ? fileURLToPath(path) : path,
    options,
  );
  if (part) throw new UntrustedPathError(part);
}
