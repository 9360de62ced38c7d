/**
 * Helpers shared by the tests: a temporary directory that is always removed,
 * a fake program (a shell script), a `PATH` set for a while, log capture,
 * narrowing a boot plan to the kexec plan a test expects, a fake libc that
 * loads real files, and a deadline for a promise that must not hang.
 *
 * @module
 */

import { Errno, type LibcSymbols, STATX_SIZE } from "../lib/kexec/libc.ts";
import { configureLog } from "../lib/log.ts";
import type { BootPlan, KexecPlan } from "../lib/plan.ts";

/** `plan` as a {@linkcode KexecPlan}; fails the test when it is a local boot. */
export function kexecPlan(plan: BootPlan): KexecPlan {
  if (plan.action !== "kexec") {
    throw new Error(`expected a kexec plan, got ${JSON.stringify(plan)}`);
  }
  return plan;
}

/** Runs `fn` with a fresh temporary directory, removed afterwards whatever happens. */
export async function withTemp<T>(
  fn: (dir: string) => Promise<T>,
  prefix = "assisted_test_",
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Options for {@linkcode fakeProgram}. */
export interface FakeProgramOptions {
  /** The script's body after its `#!/bin/sh` line (default: `exit 0`). */
  script?: string;
  /** Its mode, set after writing it (the umask does not apply; default 0755). */
  mode?: number;
}

/** Writes a shell script standing in for a program at `path`; returns `path`. */
export async function fakeProgram(
  path: string,
  options: FakeProgramOptions = {},
): Promise<string> {
  await Deno.writeTextFile(path, `#!/bin/sh\n${options.script ?? "exit 0"}\n`);
  await Deno.chmod(path, options.mode ?? 0o755);
  return path;
}

/**
 * Runs `fn` with this process's `PATH` set to `path` (removed for
 * undefined), restored afterwards whatever happens.
 */
export async function withPath<T>(
  path: string | undefined,
  fn: () => Promise<T> | T,
): Promise<T> {
  const saved = Deno.env.get("PATH");
  if (path === undefined) Deno.env.delete("PATH");
  else Deno.env.set("PATH", path);
  try {
    return await fn();
  } finally {
    if (saved === undefined) Deno.env.delete("PATH");
    else Deno.env.set("PATH", saved);
  }
}

/** Runs `fn` with every log line captured (not printed); returns its value and the lines. */
export async function captureLog<T>(
  fn: () => Promise<T>,
): Promise<[T, string[]]> {
  const lines: string[] = [];
  configureLog({ sink: (line) => lines.push(line) });
  try {
    return [await fn(), lines];
  } finally {
    configureLog({
      sink: (line) =>
        Deno.stderr.writeSync(new TextEncoder().encode(line + "\n")),
    });
  }
}

/**
 * Writes a private CA (`ca.pem`) and a leaf for `ips` (default 127.0.0.1)
 * signed by it (`leaf.pem`, `leaf.key`) into `dir`, made with openssl now.
 */
export async function makeTestCerts(
  dir: string,
  ips: string[] = ["127.0.0.1"],
): Promise<void> {
  const openssl = async (args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`openssl: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "1",
    "-subj",
    "/CN=test CA",
  ]);
  await openssl([
    "req",
    ...ec,
    "-nodes",
    "-keyout",
    "leaf.key",
    "-out",
    "leaf.csr",
    "-subj",
    `/CN=${ips[0]}`,
  ]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    `subjectAltName=${
      ips.map((ip) => `IP:${ip}`).join(",")
    }\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n`,
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "leaf.pem",
    "-days",
    "1",
    "-extfile",
    "ext.cnf",
  ]);
}

/** Config file values that the bootloader and systemd must both read back unchanged (no `${`: see ignition_config_test). */
export const ENV_FILE_WRITABLE = [
  "",
  "plain",
  "https://h.example/x?a=1&b=2#frag",
  "  leading and trailing spaces  ",
  "a'b",
  "'",
  '"',
  'a"b',
  'menu="x y"',
  "C:\\path\\x",
  "\\",
  "$HOME and $PATH",
  "$",
  "a$",
  "`id`",
  "#not a comment",
  "a # b ; c",
  ";semicolon",
  "export X=1",
  "KEY=VALUE",
  "h\u00e9llo w\u00f6rld \u2603 \u{1f600}",
  "\u00a0nbsp\u00a0",
  "=",
];

/** Config file values no line can carry for both readers. */
export const ENV_FILE_UNWRITABLE = [
  "a\nb",
  "a\rb",
  "tab\there",
  "nul\0",
  "bell\x07",
  "del\x7f",
  `a'b"c`,
  "a'b\\c",
  "lone \ud800 surrogate",
  "line\u2028separator",
  "paragraph\u2029separator",
];

/**
 * A fake libc whose `open` opens the real file like `O_NOFOLLOW` would (a
 * link fails with ELOOP) and keeps its content and identity, and whose
 * `statx` describes the opened file: what `kexec_file_load` would read.
 */
export function filesLibc(): { libc: LibcSymbols; opened: Uint8Array[] } {
  const opened: Uint8Array[] = [];
  const infos = new Map<number, Deno.FileInfo>();
  let errno = 0;
  const libc: LibcSymbols = {
    open(path) {
      const name = new TextDecoder().decode(path).replace(/\0$/, "");
      const info = Deno.lstatSync(name);
      if (info.isSymlink) {
        errno = Errno.ELOOP;
        return -1;
      }
      opened.push(Deno.readFileSync(name));
      const fd = 10 + opened.length;
      infos.set(fd, info);
      return fd;
    },
    close: () => 0,
    statx(fd, _path, _flags, _mask, buf) {
      const info = infos.get(fd)!;
      const view = new DataView(buf.buffer, buf.byteOffset, STATX_SIZE);
      const dev = BigInt(info.dev);
      view.setUint16(28, info.mode!, true);
      view.setBigUint64(32, BigInt(info.ino!), true);
      view.setBigUint64(40, BigInt(info.size), true);
      const mtime = info.mtime!.getTime();
      view.setBigInt64(112, BigInt(Math.floor(mtime / 1000)), true);
      view.setUint32(120, (mtime % 1000) * 1_000_000, true);
      view.setUint32(
        136,
        Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)),
        true,
      );
      view.setUint32(
        140,
        Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn)),
        true,
      );
      return 0;
    },
    syscall: () => 0n,
    reboot: () => -1,
    sync() {},
    errno: () => errno,
    strerror: (n) => `errno ${n}`,
  };
  return { libc, opened };
}

/**
 * True when tests may run code as another user: this process is root and
 * `setpriv` (util-linux) is installed. See {@linkcode runLibAs}.
 */
export const CAN_RUN_AS_OTHER_USER: boolean = (() => {
  if (Deno.uid() !== 0) return false;
  try {
    return new Deno.Command("setpriv", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

/**
 * Runs `code` (a module body for `deno eval`) as `uid` (and gid `uid`, no
 * other groups), with a copy of `lib/` that any user can read: the tree the
 * test runs from may be private (a mutation run's sandbox is 0700). `code`
 * finds the copy's URL in `Deno.args[0]` (`await import(Deno.args[0] +
 * "stage/work_dir.ts")`) and `args` after it, and prints one JSON value,
 * which is returned. The environment is inherited. Root only: see
 * {@linkcode CAN_RUN_AS_OTHER_USER}.
 */
export async function runLibAs(
  uid: number,
  code: string,
  args: string[] = [],
): Promise<unknown> {
  return await withTemp(async (tmp) => {
    await Deno.chmod(tmp, 0o755);
    await copyReadable(
      new URL("../lib/", import.meta.url).pathname,
      `${tmp}/lib`,
    );
    await Deno.mkdir(`${tmp}/deno`);
    await Deno.chown(`${tmp}/deno`, uid, uid);
    const run = await new Deno.Command("setpriv", {
      args: [
        `--reuid=${uid}`,
        `--regid=${uid}`,
        "--clear-groups",
        Deno.execPath(),
        "eval",
        code,
        `file://${tmp}/lib/`,
        ...args,
      ],
      env: { DENO_DIR: `${tmp}/deno`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    if (!run.success) {
      throw new Error(`the child as uid ${uid} failed: ${stderr}`);
    }
    return JSON.parse(new TextDecoder().decode(run.stdout));
  }, "assisted_as_user_");
}

/** Copies a tree: directories 0755, files 0644 (no links: lib/ has none). */
async function copyReadable(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { mode: 0o755 });
  await Deno.chmod(to, 0o755);
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) {
      await copyReadable(`${from}/${entry.name}`, `${to}/${entry.name}`);
    } else if (entry.isFile) {
      await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
      await Deno.chmod(`${to}/${entry.name}`, 0o644);
    }
  }
}

/**
 * Gives `path` itself (a symbolic link too, not its target) to user and group
 * `uid` (`chown -h`: Deno has no lchown). Root only.
 */
export async function chownLink(path: string, uid: number): Promise<void> {
  const out = await new Deno.Command("chown", {
    args: ["-h", `${uid}:${uid}`, path],
  }).output();
  if (!out.success) throw new Error(`chown -h ${path} failed`);
}

/** Makes directory `dir` (and its parents) with `mode`, set after creation so the umask does not apply. */
export async function mkdirMode(dir: string, mode = 0o755): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.chmod(dir, mode);
  return dir;
}

/** Options for {@linkcode settleWithin}. */
export interface SettleWithinOptions {
  /** How long `promise` may take, in milliseconds. */
  ms: number;
  /** The failure's message when it takes longer. */
  failure: string;
}

/**
 * `promise`'s outcome, or a failure when it has not settled within
 * `options.ms`; the timer is cleared either way (the test's op check fails
 * on one left running).
 */
export async function settleWithin<T>(
  promise: Promise<T>,
  options: SettleWithinOptions,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(options.failure)),
          options.ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
