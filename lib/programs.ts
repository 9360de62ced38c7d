/**
 * The programs the bootloader runs (`kexec`, `systemctl`, `curl`): found the
 * way `execvp` finds them, but only in absolute `PATH` entries, then refused
 * when another user can change the one found (`path_trust.ts`), and run by
 * the absolute path that was checked. Run as root, a program another user can
 * change, or one picked from the working directory (an empty or relative
 * `PATH` entry), would run their code as root.
 *
 * @module
 */

import {
  type UntrustedPart,
  untrustedPart,
  untrustedRefusal,
} from "./path_trust.ts";

/** The search path `execvp` uses when `PATH` is not set (glibc's). */
export const DEFAULT_PATH = "/bin:/usr/bin";

/** Options for {@linkcode findProgram} and {@linkcode trustedProgram}. */
export interface FindProgramOptions {
  /**
   * The search path, `:`-separated (default: this process's `PATH`, or
   * {@linkcode DEFAULT_PATH} when it is not set).
   */
  path?: string;
  /** Directories searched after it, in order (`kexec`: `/usr/sbin`, `/sbin`). */
  dirs?: readonly string[];
}

/** A regular file with an execute bit (root runs any file that has one). */
function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    // Missing, a dangling link, a directory on the way we cannot search:
    // execvp goes on to the next entry too.
    return false;
  }
}

/** The program a name stands for: itself when it holds a slash (absolute only). */
function checkedName(name: string): string | undefined {
  if (name === "") throw new TypeError("A program name cannot be empty");
  if (!name.includes("/")) return undefined;
  if (!name.startsWith("/")) {
    throw new TypeError(
      `Program ${name} is neither a bare name nor an absolute path`,
    );
  }
  return name;
}

/**
 * Finds `name` as `execvp` would: an absolute path is itself (not looked at);
 * a bare name is the first `dir/name` that is a regular file with an execute
 * bit, `dir` taken from the search path in order, then from `dirs`. Unlike
 * `execvp`, empty and relative entries (`::`, `.`, `bin`) are skipped: they
 * name the working directory's contents. Returns undefined when no entry
 * holds it. A name with a slash that is not absolute is a `TypeError` (a
 * caller's mistake: no user input reaches it).
 *
 * @example
 * ```ts
 * findProgram("kexec", { path: "/usr/bin:.", dirs: ["/usr/sbin", "/sbin"] });
 * // "/usr/sbin/kexec" where kexec-tools is installed
 * ```
 */
export function findProgram(
  name: string,
  options: FindProgramOptions = {},
): string | undefined {
  const absolute = checkedName(name);
  if (absolute !== undefined) return absolute;
  const path = options.path ?? Deno.env.get("PATH") ?? DEFAULT_PATH;
  const dirs = [...path.split(":"), ...(options.dirs ?? [])];
  for (const dir of dirs) {
    if (!dir.startsWith("/")) continue;
    const candidate = `${dir.replace(/\/+$/, "")}/${name}`;
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Options for {@linkcode UntrustedProgramError}. */
export interface UntrustedProgramErrorOptions {
  /** The program as asked for (`curl`, or an absolute path). */
  program: string;
  /** Where it was found. */
  path: string;
}

/**
 * A program another user can change, refused (never run). Its message names
 * the program, where it was found and why, for a caller to put after its own
 * words: `curl (/opt/bin/curl) is writable by other users (mode 0757):
 * whoever can change it decides what this machine boots (chmod go-w
 * /opt/bin/curl)`.
 */
export class UntrustedProgramError extends Error {
  /** The program as asked for. */
  readonly program: string;
  /** Where it was found. */
  readonly path: string;
  /** What {@linkcode untrustedPart} found. */
  readonly part: UntrustedPart;

  /** Creates the error from what was found. */
  constructor(part: UntrustedPart, options: UntrustedProgramErrorOptions) {
    const { program, path } = options;
    super(
      untrustedRefusal(program === path ? path : `${program} (${path})`, part),
    );
    this.name = "UntrustedProgramError";
    this.program = program;
    this.path = path;
    this.part = part;
  }
}

/**
 * The absolute path to run `name` by: {@linkcode findProgram}'s, then walked
 * by {@linkcode untrustedPart} (the program, every directory and symbolic
 * link on the way to it). Throws {@linkcode UntrustedProgramError} when
 * another user can change it: the search never goes on to a later entry.
 * Returns undefined when no entry holds it; an absolute path that does not
 * exist is returned (running it fails, as it would have). An `lstat` that
 * fails otherwise throws the runtime's error.
 *
 * @example
 * ```ts
 * const curl = trustedProgram("curl");
 * if (curl) new Deno.Command(curl, { args: ["--version"] }).outputSync();
 * ```
 */
export function trustedProgram(
  name: string,
  options: FindProgramOptions = {},
): string | undefined {
  const path = findProgram(name, options);
  if (path === undefined) return undefined;
  const part = untrustedPart(path);
  if (part) throw new UntrustedProgramError(part, { program: name, path });
  return path;
}
