/**
 * A small harness for tests (and `make run-vm`) that boot QEMU guests.
 *
 * - {@linkcode startVm} starts `qemu-system-x86_64` (or, for an aarch64 guest,
 *   `qemu-system-aarch64 -M virt`) under a hard timeout (GNU
 *   `timeout`, which also kills QEMU's helper processes and outlives a crashed
 *   test), captures the serial console into a file and lets the caller wait for
 *   lines in it. {@linkcode Vm.kill} (or `await using`) always stops everything.
 * - {@linkcode probeAccel} decides between KVM and TCG by booting the bare kernel:
 *   `/dev/kvm` opening is not proof (nested guests may hang).
 * - Guest networking is user-mode with `restrict=on`: the guest reaches only the
 *   `guestfwd` addresses, each forwarded by `nc` to a port on the host's 127.0.0.1
 *   (or, IPv6-only, `[fec0::2]:PORT` mapped to the host's `[::1]:PORT`: see
 *   {@linkcode VmOptions.ipv6Only}).
 *
 * @example
 * ```ts
 * await using vm = startVm({
 *   kernel: "build/vm/vmlinuz",
 *   initrd: "build/initrd/assisted-bootloader.initrd",
 *   append: "console=ttyS0 panic=-1",
 *   accel: await probeAccel("build/vm/vmlinuz"),
 *   forwards: [{ guestAddress: "10.0.2.100", guestPort: 80, hostPort: 8080 }],
 *   serialLog: "build/vm/test.log",
 *   timeoutMs: 120_000,
 * });
 * const hit = await vm.waitFor(/assisted-marker: done/);
 * console.log(hit.line, hit.atMs);
 * ```
 *
 * @module
 */

/** Accelerator for the guest. */
export type Accel = "kvm" | "tcg";

/** Guest architecture, named like `Deno.build.arch` and `uname -m`. */
export type GuestArch = "x86_64" | "aarch64";

/** Per guest architecture: the QEMU binary, its Debian package and the serial console's name. */
export const QEMU_SYSTEM: Readonly<
  Record<GuestArch, { binary: string; package: string; console: string }>
> = {
  x86_64: {
    binary: "qemu-system-x86_64",
    package: "qemu-system-x86",
    console: "ttyS0",
  },
  aarch64: {
    binary: "qemu-system-aarch64",
    package: "qemu-system-arm",
    console: "ttyAMA0",
  },
};

/** The guest architecture `name` stands for (`x86_64`, `amd64`, `aarch64`, `arm64`), or null. */
export function guestArch(name: string): GuestArch | null {
  if (name === "x86_64" || name === "amd64") return "x86_64";
  if (name === "aarch64" || name === "arm64") return "aarch64";
  return null;
}

/** One forwarded guest address: guest `guestAddress:guestPort` -> host `127.0.0.1:hostPort`. */
export interface GuestForward {
  /** Address the guest connects to (inside 10.0.2.0/24, e.g. `10.0.2.100`). */
  guestAddress: string;
  /** TCP port the guest connects to. */
  guestPort: number;
  /** Port on the host's 127.0.0.1 that receives the connection. */
  hostPort: number;
}

/** What to boot and how; used by {@linkcode startVm} and {@linkcode qemuArgs}. */
export interface VmOptions {
  /** Guest architecture (default `x86_64`); aarch64 boots the `virt` machine. */
  arch?: GuestArch;
  /** Kernel image (`-kernel`); omit to boot `disk` through the firmware. */
  kernel?: string;
  /** Initramfs (`-initrd`), only with `kernel`. */
  initrd?: string;
  /** Kernel command line (`-append`), only with `kernel`. */
  append?: string;
  /** Raw disk image attached as virtio disk; opened with `snapshot=on` unless `diskWritable`. */
  disk?: string;
  /** Write guest changes to `disk` (default false: the image file is never modified). */
  diskWritable?: boolean;
  /** Accelerator (default `tcg`; use {@linkcode probeAccel} to pick). */
  accel?: Accel;
  /** Guest memory in MiB (default 512). */
  memoryMiB?: number;
  /** Virtual CPUs (default 2). */
  cpus?: number;
  /** Guest-to-host forwards; with none (and no `ipv6Only`) the guest has no network device at all. */
  forwards?: GuestForward[];
  /**
   * An IPv6-only network (`ipv4=off`, `forwards` unused): slirp answers
   * router solicitations with the prefix `fec0::/64` (SLAAC, default route
   * `fe80::2`) and maps `[fec0::2]:PORT` to the host's `[::1]:PORT`, so a
   * server on the host's IPv6 loopback is reached at `http://[fec0::2]:PORT`.
   * QEMU's `guestfwd` takes IPv4 addresses only, and `restrict=on` refuses
   * every connection that is not a `guestfwd` one (IPv6 included), so this
   * network is not restricted: the guest could reach whatever the host
   * reaches over IPv6, and must be given only `[fec0::2]` URLs.
   */
  ipv6Only?: boolean;
  /** NIC model (default `virtio-net-pci`). */
  nic?: "virtio-net-pci" | "e1000";
  /** Extra QEMU arguments, appended last. */
  extraArgs?: string[];
}

/** Options for {@linkcode startVm}. */
export interface StartVmOptions extends VmOptions {
  /** File receiving the serial console (created or truncated). */
  serialLog: string;
  /** Hard limit: QEMU and its helpers are killed after this many milliseconds. */
  timeoutMs: number;
  /** Copy serial lines to stderr as they arrive (default: env `VM_ECHO=1`). */
  echo?: boolean;
  /** QEMU binary (default: {@linkcode findQemu} of the architecture's binary). */
  qemu?: string;
}

/** How the QEMU process ended. */
export interface VmExit {
  /** Exit code of QEMU (124/137 when the hard timeout fired). */
  code: number;
  /** Signal name when it was killed. */
  signal: string | null;
  /** True when the hard timeout or {@linkcode Vm.kill} ended it. */
  killed: boolean;
  /** Milliseconds since start. */
  atMs: number;
}

/** A serial console line that matched. */
export interface LineMatch {
  /** The line, without its end of line. */
  line: string;
  /** Its index among all serial lines (pass `index + 1` as `from` to search after it). */
  index: number;
  /** Milliseconds after the VM start at which the harness saw the line. */
  atMs: number;
  /** The regular expression match. */
  match: RegExpMatchArray;
}

/** Options for {@linkcode Vm.waitFor}. */
export interface WaitForOptions {
  /** Reject after this many milliseconds (default: until the VM exits). */
  timeoutMs?: number;
  /** First line index to consider (default 0: lines already seen count). */
  from?: number;
}

/** A running guest; dispose it (`await using`) or call {@linkcode Vm.kill}. */
export interface Vm extends AsyncDisposable {
  /** Process id of the supervising `timeout` (also the process group of QEMU and its helpers). */
  readonly pid: number;
  /** The serial log file. */
  readonly serialLog: string;
  /** `performance.now()` at start. */
  readonly startedAt: number;
  /** Settles when QEMU has exited and its serial output has been read. */
  readonly exited: Promise<VmExit>;
  /** Every serial line seen so far. */
  lines(): string[];
  /** The serial output seen so far, as one string. */
  text(): string;
  /** Resolves with the first line at or after `from` matching; rejects when the VM exits or the timeout passes. */
  waitFor(
    pattern: RegExp | string,
    options?: WaitForOptions,
  ): Promise<LineMatch>;
  /** Stops QEMU and its helper processes (SIGTERM, then SIGKILL), and waits for it. */
  kill(): Promise<VmExit>;
}

/** Returns the path of `name` (default `qemu-system-x86_64`) on PATH, or null when it is not installed. */
export function findQemu(name = "qemu-system-x86_64"): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    const path = `${dir || "."}/${name}`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not in this directory
    }
  }
  return null;
}

/**
 * The QEMU arguments for `options`, with the serial consoles on `serial`:
 * `{ file }` (no other output) or `"stdio"` (console and monitor multiplexed
 * on the terminal, Ctrl-A X quits, Ctrl-A C switches to the monitor). On
 * x86_64 both ttyS0 and ttyS1 exist and write to the same place; the aarch64
 * `virt` machine has one PL011 UART (ttyAMA0).
 */
export function qemuArgs(
  options: VmOptions,
  serial: { file: string } | "stdio",
): string[] {
  const accel = options.accel ?? "tcg";
  const arm = options.arch === "aarch64";
  // Under TCG, emulating the architected pointer authentication (QARMA) costs much
  // more than QEMU's own cheap algorithm; the guest cannot tell the difference.
  const cpu = accel === "kvm" ? "host" : arm ? "max,pauth-impdef=on" : "max";
  const args = [
    ...(arm ? ["-machine", "virt"] : []),
    "-accel",
    accel,
    "-cpu",
    cpu,
    "-smp",
    String(options.cpus ?? 2),
    "-m",
    String(options.memoryMiB ?? 512),
    "-no-reboot",
  ];
  // Two serial ports (ttyS0, ttyS1) share one output: assisted-service's kargs name
  // console=ttyS1,115200n8 before ours, and Linux writes to the first serial console listed.
  if (serial === "stdio") {
    args.push(
      "-display",
      "none",
      "-chardev",
      "stdio,id=con,mux=on,signal=off",
      "-mon",
      "chardev=con,mode=readline",
    );
  } else {
    args.push(
      "-display",
      "none",
      "-monitor",
      "none",
      "-chardev",
      `file,id=con,path=${serial.file.replaceAll(",", ",,")},mux=on`,
    );
  }
  args.push("-serial", "chardev:con");
  if (!arm) args.push("-serial", "chardev:con");
  if (options.kernel) {
    args.push("-kernel", options.kernel);
    if (options.initrd) args.push("-initrd", options.initrd);
    if (options.append) args.push("-append", options.append);
  }
  if (options.disk) {
    const snapshot = options.diskWritable ? "" : ",snapshot=on";
    args.push(
      "-drive",
      `file=${
        options.disk.replaceAll(",", ",,")
      },format=raw,if=virtio${snapshot}`,
    );
  }
  const forwards = options.forwards ?? [];
  if (options.ipv6Only) {
    args.push("-netdev", "user,id=n0,ipv4=off,ipv6=on,restrict=off");
    args.push("-device", `${options.nic ?? "virtio-net-pci"},netdev=n0`);
  } else if (forwards.length > 0) {
    const fwd = forwards.map((f) =>
      `,guestfwd=tcp:${f.guestAddress}:${f.guestPort}-cmd:nc -N 127.0.0.1 ${f.hostPort}`
    ).join("");
    args.push("-netdev", `user,id=n0,restrict=on${fwd}`);
    args.push("-device", `${options.nic ?? "virtio-net-pci"},netdev=n0`);
  } else {
    args.push("-nic", "none");
  }
  args.push(...(options.extraArgs ?? []));
  return args;
}

const POLL_MS = 50;

/**
 * Starts QEMU with the serial console in `options.serialLog`, under a hard
 * timeout. Throws when QEMU is not installed.
 */
export function startVm(options: StartVmOptions): Vm {
  const system = QEMU_SYSTEM[options.arch ?? "x86_64"];
  const qemu = options.qemu ?? findQemu(system.binary);
  if (!qemu) {
    throw new Error(
      `${system.binary} is not installed (Debian package: ${system.package})`,
    );
  }
  Deno.writeTextFileSync(options.serialLog, "");
  const seconds = Math.max(1, Math.ceil(options.timeoutMs / 1000));
  // GNU timeout puts itself and QEMU in a new process group: killing the group also ends the
  // `nc` helpers of guestfwd, and the limit holds even if this process dies.
  const child = new Deno.Command("timeout", {
    args: [
      "-k",
      "5",
      String(seconds),
      qemu,
      ...qemuArgs(options, { file: options.serialLog }),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const startedAt = performance.now();
  const echo = options.echo ?? Deno.env.get("VM_ECHO") === "1";
  const since = () => Math.round(performance.now() - startedAt);

  const seen: string[] = [];
  const seenAt: number[] = [];
  let partial = "";
  let offset = 0;
  let done = false;
  let killed = false;
  const waiters = new Set<() => void>();
  const decoder = new TextDecoder();

  function readNew(): void {
    let file: Deno.FsFile | undefined;
    try {
      file = Deno.openSync(options.serialLog);
      file.seekSync(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(65536);
      while (true) {
        const n = file.readSync(buf);
        if (n === null || n === 0) break;
        offset += n;
        partial += decoder.decode(buf.subarray(0, n), { stream: true });
      }
    } catch {
      return;
    } finally {
      file?.close();
    }
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    if (done && partial) {
      parts.push(partial);
      partial = "";
    }
    for (const raw of parts) {
      const line = raw.replace(/\r$/, "");
      seen.push(line);
      seenAt.push(since());
      if (echo) console.error(`[vm] ${line}`);
    }
    if (parts.length > 0 || done) { for (const wake of [...waiters]) wake(); }
  }

  const output = Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  // QEMU starts each guestfwd `nc` in its own session, out of the process group: remember
  // them while QEMU runs, and stop the ones still alive once it has exited.
  const helpers = new Map<number, string>();
  const poll = () => {
    readNew();
    for (const pid of descendants(child.pid)) {
      helpers.set(pid, cmdlineOf(pid));
    }
  };
  const timer = setInterval(poll, POLL_MS);
  const exited: Promise<VmExit> = child.status.then(async (status) => {
    clearInterval(timer);
    stopHelpers(helpers);
    const [out, err] = await output;
    done = true;
    readNew();
    const qemuOutput = (out + err).trim();
    if (qemuOutput) {
      for (const line of qemuOutput.split("\n")) {
        seen.push(`[qemu] ${line}`);
        seenAt.push(since());
      }
      for (const wake of [...waiters]) wake();
    }
    return {
      code: status.code,
      signal: status.signal,
      killed: killed || status.code === 124 || status.code === 137,
      atMs: since(),
    };
  });

  function waitFor(
    pattern: RegExp | string,
    opts: WaitForOptions = {},
  ): Promise<LineMatch> {
    const re = typeof pattern === "string"
      ? new RegExp(escapeRegExp(pattern))
      : pattern;
    let next = opts.from ?? 0;
    return new Promise((resolve, reject) => {
      let deadline: ReturnType<typeof setTimeout> | undefined;
      const finish = () => {
        waiters.delete(check);
        if (deadline !== undefined) clearTimeout(deadline);
      };
      const check = () => {
        for (; next < seen.length; next++) {
          const match = seen[next].match(re);
          if (match) {
            finish();
            resolve({
              line: seen[next],
              index: next,
              atMs: seenAt[next],
              match,
            });
            return;
          }
        }
        if (done) {
          finish();
          reject(
            new Error(`the VM exited before printing a line matching ${re}`),
          );
        }
      };
      waiters.add(check);
      if (opts.timeoutMs !== undefined) {
        deadline = setTimeout(() => {
          finish();
          reject(
            new Error(`no line matching ${re} within ${opts.timeoutMs} ms`),
          );
        }, opts.timeoutMs);
      }
      check();
    });
  }

  async function kill(): Promise<VmExit> {
    if (!done) {
      killed = true;
      poll();
      signalGroup(child.pid, "SIGTERM");
      const grace = setTimeout(() => signalGroup(child.pid, "SIGKILL"), 3000);
      try {
        return await exited;
      } finally {
        clearTimeout(grace);
        signalGroup(child.pid, "SIGKILL");
      }
    }
    return await exited;
  }

  return {
    pid: child.pid,
    serialLog: options.serialLog,
    startedAt,
    exited,
    lines: () => [...seen],
    text: () => seen.join("\n"),
    waitFor,
    kill,
    [Symbol.asyncDispose]: async () => {
      await kill();
    },
  };
}

/** Every descendant of `pid` (through `/proc/<pid>/task/<tid>/children`). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    const parent = todo.pop()!;
    try {
      for (const task of Deno.readDirSync(`/proc/${parent}/task`)) {
        const text = Deno.readTextFileSync(
          `/proc/${parent}/task/${task.name}/children`,
        );
        for (const child of text.trim().split(/\s+/)) {
          if (child === "") continue;
          out.push(Number(child));
          todo.push(Number(child));
        }
      }
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function cmdlineOf(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return "";
  }
}

/** Terminates remembered helpers that still run the same command (never a reused pid). */
function stopHelpers(helpers: Map<number, string>): void {
  for (const [pid, cmdline] of helpers) {
    if (cmdline === "" || cmdlineOf(pid) !== cmdline) continue;
    try {
      Deno.kill(pid, "SIGTERM");
    } catch {
      // gone
    }
  }
}

function signalGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Options for {@linkcode probeAccel}. */
export interface ProbeAccelOptions {
  /** Give up on KVM after this many milliseconds (default 15000). */
  timeoutMs?: number;
  /** Remember the answer here, keyed by host boot, kernel and QEMU (default: no cache). */
  cacheFile?: string;
  /** QEMU binary (default: {@linkcode findQemu} of the architecture's binary). */
  qemu?: string;
  /** Guest architecture (default `x86_64`); KVM is only possible when it is the host's. */
  arch?: GuestArch;
}

/**
 * Picks the accelerator: `"kvm"` only when the bare `kernel` booted with
 * `-accel kvm -cpu host` reaches the "VFS: Unable to mount root" panic on the
 * serial console in time, else `"tcg"`; always `"tcg"` for a guest of another
 * architecture than the host's. Env `VM_ACCEL=kvm|tcg` overrides.
 */
export async function probeAccel(
  kernel: string,
  options: ProbeAccelOptions = {},
): Promise<Accel> {
  const arch = options.arch ?? "x86_64";
  if (arch !== Deno.build.arch) return "tcg";
  const forced = Deno.env.get("VM_ACCEL");
  if (forced === "kvm" || forced === "tcg") return forced;
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
  } catch {
    return "tcg";
  }
  const qemu = options.qemu ?? findQemu(QEMU_SYSTEM[arch].binary);
  if (!qemu) return "tcg";
  const key = await probeKey(kernel, qemu);
  if (options.cacheFile) {
    try {
      const cached = JSON.parse(Deno.readTextFileSync(options.cacheFile));
      if (
        cached.key === key && (cached.accel === "kvm" || cached.accel === "tcg")
      ) return cached.accel;
    } catch {
      // no cache yet
    }
  }
  const log = await Deno.makeTempFile({ prefix: "kvm-probe-", suffix: ".log" });
  let accel: Accel = "tcg";
  try {
    await using vm = startVm({
      arch,
      kernel,
      append: `console=${QEMU_SYSTEM[arch].console} panic=-1`,
      accel: "kvm",
      memoryMiB: 256,
      cpus: 1,
      serialLog: log,
      timeoutMs: options.timeoutMs ?? 15_000,
      qemu,
    });
    await vm.waitFor(/VFS: Unable to mount root/);
    accel = "kvm";
  } catch {
    accel = "tcg";
  } finally {
    await Deno.remove(log).catch(() => {});
  }
  if (options.cacheFile) {
    Deno.writeTextFileSync(
      options.cacheFile,
      JSON.stringify({ key, accel }) + "\n",
    );
  }
  return accel;
}

async function probeKey(kernel: string, qemu: string): Promise<string> {
  const boot = await Deno.readTextFile("/proc/sys/kernel/random/boot_id").catch(
    () => "",
  );
  const k = Deno.statSync(kernel);
  const q = Deno.statSync(qemu);
  return [
    boot.trim(),
    kernel,
    k.size,
    k.mtime?.getTime(),
    qemu,
    q.size,
    q.mtime?.getTime(),
  ].join(" ");
}
