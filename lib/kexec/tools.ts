/**
 * The fallback loader: kexec-tools' `kexec -l -c` (the `kexec_load` system
 * call, where kexec-tools parses the kernel image in user space), for a
 * kernel `kexec_file_load` cannot take: ENOSYS (a kernel built without
 * `KEXEC_FILE`) or ENOEXEC (an image format the running kernel's file loader
 * does not know). It runs the program with the same verified files and the
 * same command line, as separate arguments (no shell), and only when kernel
 * lockdown is off: under lockdown the kernel refuses `kexec_load` whatever
 * the image, and only a kernel signed by a key the running kernel trusts can
 * be loaded (by `kexec_file_load`).
 *
 * `kexecLoad` in `kexec_load.ts` calls it on the descriptors the binding
 * (`kexec.ts`, the one module that knows syscall numbers) verified; the program runner, the program lookup and the lockdown
 * state are injected by tests, which never run the real `kexec`. The
 * program is found on `PATH`, then in {@linkcode KEXEC_DIRS}, and refused
 * when another user can change it (`programs.ts`).
 *
 * @module
 */

/** Kernel lockdown, from `/sys/kernel/security/lockdown`. */
export type Lockdown = "none" | "integrity" | "confidentiality" | "unknown";

/** Options for {@linkcode lockdownState}. */
export interface LockdownOptions {
  /** Content of `/sys/kernel/security/lockdown` (`undefined`: missing). */
  lockdown?: string;
  /** Content of `/proc/self/mounts` (to tell "no lockdown LSM" from "securityfs not mounted"). */
  mounts?: string;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The kernel's lockdown mode: the bracketed word of
 * `/sys/kernel/security/lockdown` (`[none] integrity confidentiality`);
 * `none` too when securityfs is mounted without that file (a kernel without
 * the lockdown LSM); `unknown` when securityfs is not mounted at all.
 */
export function lockdownState(options: LockdownOptions = {}): Lockdown {
  const text = "lockdown" in options
    ? options.lockdown
    : readOrUndefined("/sys/kernel/security/lockdown");
  if (text !== undefined) {
    const mode = /\[(\w+)\]/.exec(text)?.[1];
    return mode === "none" || mode === "integrity" ||
        mode === "confidentiality"
      ? mode
      : "unknown";
  }
  const mounts = "mounts" in options
    ? options.mounts ?? ""
    : readOrUndefined("/proc/self/mounts") ?? "";
  return /^\S+ \/sys\/kernel\/security securityfs /m.test(mounts)
    ? "none"
    : "unknown";
}

/**
 * Where `kexec` is looked for after `PATH` (kexec-tools installs it in
 * `sbin`, which a user's `PATH` may not hold).
 */
export const KEXEC_DIRS: readonly string[] = ["/usr/sbin", "/sbin"];

/** The files and command line to load (the same shape as `KexecImage`). */
export interface ToolsImage {
  /** Kernel file. */
  kernel: { path: string };
  /** Initrd file, if any. */
  initrd?: { path: string };
  /** Kernel command line. */
  cmdline: string;
}

/**
 * The `kexec` arguments: load (`-l`) with the `kexec_load` system call
 * (`-c`, whatever the version's default), the kernel, `--initrd=` when there
 * is one and `--command-line=` exactly as given.
 */
export function kexecToolsArgs(image: ToolsImage): string[] {
  return [
    "-l",
    "-c",
    image.kernel.path,
    ...(image.initrd ? [`--initrd=${image.initrd.path}`] : []),
    `--command-line=${image.cmdline}`,
  ];
}

/** What running a program gave. */
export interface RunResult {
  /** Exit code. */
  code: number;
  /** What it wrote on stderr (and stdout). */
  output: string;
}

/** Runs `program` (its absolute path) with `args` (no shell) and waits for it. */
export type ProgramRunner = (program: string, args: string[]) => RunResult;

/** Runs a program without a shell, collecting its output. */
export function runProgram(program: string, args: string[]): RunResult {
  const out = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const dec = new TextDecoder();
  return {
    code: out.code,
    output: dec.decode(out.stderr) + dec.decode(out.stdout),
  };
}

/**
 * Runs `kexec -l -c KERNEL [--initrd=INITRD] --command-line=CMDLINE`.
 * Returns `undefined` on success, else a one-line reason (the program's last
 * line of output, or why it could not run).
 */
export function kexecToolsLoad(
  program: string,
  image: ToolsImage,
  run: ProgramRunner = runProgram,
): string | undefined {
  let result: RunResult;
  try {
    result = run(program, kexecToolsArgs(image));
  } catch (err) {
    return `cannot run ${program}: ${
      err instanceof Error ? err.message : String(err)
    }`;
  }
  if (result.code === 0) return undefined;
  const last = result.output.trim().split("\n").filter((l) => l.trim()).at(
    -1,
  );
  return `${program} exited with code ${result.code}${
    last ? `: ${last.trim()}` : ""
  }`;
}
