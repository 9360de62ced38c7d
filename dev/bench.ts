/**
 * `deno task bench`: the bootloader's download + sha256 against curl, side by
 * side, on a 1 GiB file served from 127.0.0.1. A benchmark, not a test: it
 * asserts nothing about time, it measures and prints a markdown table (for
 * docs/benchmarks.md) with the machine and the date.
 *
 * Measured in rounds, each process once per round in the same order (A B C
 * A B C …), medians reported, and the bootloader's time divided by curl's
 * of the same round (so a machine that slows down between rounds does not
 * skew the ratio):
 * - `curl -o FILE` (download to the same file system as the bootloader),
 * - `curl | sha256sum` (download with hashing, nothing written),
 * - the bootloader, `--no-kexec`, whose iPXE script boots the 1 GiB file as
 *   its kernel (the file starts like a bzImage, so the format check passes),
 * - a second bootloader run on the same work directory (the cached path:
 *   `HEAD` + re-hash, start to kexec-ready), and the re-hash alone,
 * - the bootloader with `--no-cache` (what the cache costs a first run),
 * - the bootloader's idle footprint (`--print-plan`: everything loaded, the
 *   script fetched, nothing downloaded), to get its RSS above idle,
 * - a breakdown of where the bootloader's time goes: the runtime's fetch body
 *   alone, node:crypto sha256 alone, file writes alone, `sha256sum` alone.
 *
 * Each process runs under `/usr/bin/time -v` (peak RSS, user and system CPU),
 * after a `sync` (no process pays for the writeback of the one before), and
 * the bench server's CPU is read from /proc around it: the server shares the
 * machine, so the CPU budget says how fast a download could be at best.
 *
 * Memory is made the same for every process: a virtual machine whose kernel
 * reports free pages to its hypervisor (`page_reporting`) gives freed memory
 * back, and the first write to it is then several times dearer (the host
 * faults it in again). So each process starts once the kernel has stopped
 * giving memory back (nothing reported for 2.5 s), and, unless `--cold`,
 * right after a scratch file of the test file's size was written and
 * deleted: the page cache it fills is memory the guest still holds, as on a
 * machine without a hypervisor. The MiB reported to the hypervisor during
 * each process are printed either way.
 *
 * ```sh
 * deno run -A dev/bench.ts [--size-mib 1024] [--repeat 3] [--dir /tmp/assisted-bootloader-bench] [--no-breakdown] [--cold]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { cpus } from "node:os";
import { existsSync } from "node:fs";

const ROOT = new URL("..", import.meta.url).pathname;
const MIB = 1 << 20;
/** Linux's USER_HZ: /proc reports CPU time in these ticks. */
const CLOCK_TICKS = 100;

const { values: flags } = parseArgs({
  options: {
    "size-mib": { type: "string", default: "1024" },
    repeat: { type: "string", default: "3" },
    dir: { type: "string", default: "/tmp/assisted-bootloader-bench" },
    "no-breakdown": { type: "boolean", default: false },
    cold: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (flags.help) {
  console.log(
    "usage: deno run -A dev/bench.ts [--size-mib N] [--repeat N] [--dir DIR] [--no-breakdown] [--cold]",
  );
  Deno.exit(0);
}
const SIZE = Number(flags["size-mib"]) * MIB;
const REPEAT = Math.max(1, Number(flags.repeat));
const DIR = flags.dir;
const FILE_NAME = `kernel-${flags["size-mib"]}m.bin`;
const FILE = `${DIR}/${FILE_NAME}`;
const WORK = `${DIR}/work`;

/** One measured process. */
interface Sample {
  /** Wall-clock seconds (measured here, around the whole process). */
  wall: number;
  /** User + system CPU seconds of the process and its children. */
  cpu: number;
  /** Of which system (kernel) CPU seconds: page-cache writes are counted here. */
  sys: number;
  /** Seconds the hypervisor took the machine's CPUs away meanwhile (steal, all CPUs). */
  steal: number;
  /** MiB of free memory the kernel gave back to the hypervisor meanwhile. */
  reportedMib: number;
  /** CPU seconds the bench server spent meanwhile (it shares the machine). */
  serverCpu: number;
  /** Peak resident set size, MiB (largest process of the command). */
  rssMib: number;
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error without the `time -v` report. */
  stderr: string;
}

/** Steal seconds of all CPUs so far, from /proc/stat (0 when unknown). */
function stealOf(): number {
  try {
    const cpu = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    return Number(cpu.trim().split(/\s+/)[8] ?? 0) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** Where the kernel counts the free memory it gave back to the hypervisor. */
const REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib";

/** MiB of free memory reported to the hypervisor so far (0 without page reporting). */
function reportedOf(): number {
  try {
    return Number(Deno.readTextFileSync(REPORTED_KIB).trim()) / 1024;
  } catch {
    return 0;
  }
}

/**
 * Waits until the kernel has given back what it is going to (no page
 * reported for 2.5 s, at most 20 s): memory freed just before, by the
 * process before or by its output's removal, is otherwise reported while the
 * next process runs, and the pages it takes then are the hypervisor's again.
 */
async function settle(): Promise<void> {
  // A machine without free page reporting gives nothing back: no wait.
  if (!existsSync(REPORTED_KIB)) return;
  const started = performance.now();
  let last = reportedOf();
  let still = performance.now();
  while (
    performance.now() - still < 2500 && performance.now() - started < 20_000
  ) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = reportedOf();
    if (now !== last) {
      last = now;
      still = performance.now();
    }
  }
}

/**
 * Writes and deletes a scratch file of the test file's size: the memory the
 * next process's page cache takes is then memory the guest holds (see the
 * module comment), not memory the hypervisor must fault in again.
 */
async function warmMemory(): Promise<void> {
  const scratch = `${DIR}/warm.bin`;
  await new Deno.Command("dd", {
    args: [
      "if=/dev/zero",
      `of=${scratch}`,
      "bs=1M",
      `count=${SIZE / MIB + 64}`,
      "status=none",
    ],
  }).output();
  await Deno.remove(scratch).catch(() => {});
}

/** The bench server's process id, once it runs: its CPU is read around each process. */
let serverPid = 0;

/** User + system CPU seconds of a process so far, from /proc (0 when unknown). */
function cpuOf(pid: number): number {
  if (pid === 0) return 0;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start at state.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

async function run(
  cmd: string[],
  env: Record<string, string> = {},
  options: { idleMs?: number } = {},
): Promise<Sample> {
  // Every process starts with no dirty pages of the one before: otherwise the
  // writeback of an earlier 1 GiB write lands on whichever process runs next.
  await new Deno.Command("sync", { stdout: "null", stderr: "null" }).output();
  await settle();
  if (options.idleMs !== undefined) {
    // Long enough for the kernel to give freed memory back to the hypervisor.
    await new Promise((resolve) => setTimeout(resolve, options.idleMs));
  } else if (!flags.cold) await warmMemory();
  const serverBefore = cpuOf(serverPid);
  const stealBefore = stealOf();
  const reportedBefore = reportedOf();
  const started = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-v", ...cmd],
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = (performance.now() - started) / 1000;
  const serverCpu = cpuOf(serverPid) - serverBefore;
  const steal = stealOf() - stealBefore;
  const reportedMib = reportedOf() - reportedBefore;
  const stderr = new TextDecoder().decode(out.stderr);
  const field = (name: string) => {
    const m = new RegExp(`^\\s*${name}: (.*)$`, "m").exec(stderr);
    return m ? m[1].trim() : "";
  };
  const cut = stderr.indexOf("\tCommand being timed:");
  const sys = Number(field("System time \\(seconds\\)"));
  return {
    wall,
    cpu: Number(field("User time \\(seconds\\)")) + sys,
    sys,
    steal,
    reportedMib,
    serverCpu,
    rssMib: Number(field("Maximum resident set size \\(kbytes\\)")) / 1024,
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: cut >= 0 ? stderr.slice(0, cut) : stderr,
  };
}

function median(samples: Sample[]): Sample {
  const sorted = [...samples].sort((a, b) => a.wall - b.wall);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function text(cmd: string, args: string[]): string {
  try {
    const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" })
      .outputSync();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

/**
 * Creates the test file once (real blocks, not sparse), with a bzImage-like
 * header whose setup_sects and syssize claim the whole file (the bootloader
 * refuses a kernel shorter than its header says).
 */
async function ensureFile(): Promise<void> {
  await Deno.mkdir(DIR, { recursive: true });
  const head = new Uint8Array(4096);
  const view = new DataView(head.buffer);
  head.set([0x4d, 0x5a], 0);
  head[0x1f1] = 4;
  view.setUint32(0x1f4, Math.floor((SIZE - 5 * 512) / 16), true);
  head.set([0x55, 0xaa], 0x1fe);
  head.set(new TextEncoder().encode("HdrS"), 0x202);
  view.setUint16(0x206, 0x20f, true);
  try {
    const info = await Deno.stat(FILE);
    const blocks = info.blocks ?? 0;
    if (info.size === SIZE && blocks * 512 >= SIZE) {
      const file = await Deno.open(FILE);
      const first = new Uint8Array(4096);
      await file.read(first);
      file.close();
      if (first.subarray(0x1f1, 0x208).every((b, i) => b === head[0x1f1 + i])) {
        return;
      }
    }
  } catch {
    // Not there yet.
  }
  console.error(`bench: writing ${SIZE / MIB} MiB to ${FILE} (once)`);
  const block = new Uint8Array(16 * MIB);
  for (let at = 0; at < block.length; at += 65536) {
    crypto.getRandomValues(block.subarray(at, at + 65536));
  }
  const tmp = `${FILE}.tmp`;
  const file = await Deno.open(tmp, {
    write: true,
    create: true,
    truncate: true,
  });
  for (let at = 0; at < SIZE; at += block.length) {
    // Vary each block so the file is not one repeated pattern.
    new DataView(block.buffer).setFloat64(8, at);
    const part = block.subarray(0, Math.min(block.length, SIZE - at));
    if (at === 0) {
      part.set(head.subarray(0, 2), 0);
      part.set(head.subarray(0x1f1, 0x208), 0x1f1);
    }
    let done = 0;
    while (done < part.length) done += await file.write(part.subarray(done));
  }
  file.close();
  await Deno.rename(tmp, FILE);
}

async function startServer(): Promise<
  { port: number; child: Deno.ChildProcess }
> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}dev/bench_server.ts`, DIR],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  while (!buffered.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the bench server exited before listening");
    buffered += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { port: JSON.parse(buffered.split("\n")[0]).port, child };
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);

async function main(): Promise<void> {
  await ensureFile();
  const { port, child: server } = await startServer();
  serverPid = server.pid;
  const base = `http://127.0.0.1:${port}`;
  const url = `${base}/${FILE_NAME}`;
  await Deno.writeTextFile(
    `${DIR}/boot.ipxe`,
    `#!ipxe\nkernel ${url} console=ttyS0\nboot\n`,
  );
  const loader = (extra: string[]) => [
    Deno.execPath(),
    "run",
    "-A",
    `${ROOT}main.ts`,
    "--ipxe-url",
    `${base}/boot.ipxe`,
    "--no-host-settings",
    "--mac",
    "52:54:00:12:34:56",
    "--progress",
    "none",
    ...extra,
  ];
  const loaderEnv = { ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null" };
  const curlOut = `${DIR}/curl.out`;
  const samples: Record<string, Sample[]> = {
    "curl -o": [],
    "curl | sha256sum": [],
    "bootloader --no-kexec": [],
    "bootloader --no-kexec --no-cache": [],
  };
  const ratios: number[] = [];
  /** Rounds in which the hypervisor took memory back during curl -o or the bootloader. */
  const disturbed: string[] = [];
  const cachedRuns: Sample[] = [];
  const rehashes: Sample[] = [];
  let expected = "";
  let loaderSha = "";
  try {
    // Warm the page cache for the served file, so the first round is not penalised.
    await run(["sh", "-c", `cat ${FILE} > /dev/null`]);
    for (let round = 0; round < REPEAT; round++) {
      await Deno.remove(curlOut).catch(() => {});
      const a = await run(["curl", "-sS", "-o", curlOut, url]);
      samples["curl -o"].push(a);
      await Deno.remove(curlOut).catch(() => {});
      const b = await run(["sh", "-c", `curl -sS ${url} | sha256sum`]);
      samples["curl | sha256sum"].push(b);
      expected = b.stdout.split(" ")[0];
      await Deno.remove(WORK, { recursive: true }).catch(() => {});
      const c = await run(
        loader(["--no-kexec", "--work-dir", WORK]),
        loaderEnv,
      );
      if (c.code !== 0) {
        throw new Error(`the bootloader failed (exit ${c.code}):\n${c.stderr}`);
      }
      samples["bootloader --no-kexec"].push(c);
      loaderSha = JSON.parse(c.stdout).kernel.sha256;
      // The cached path: the same work directory again (HEAD + re-hash).
      const again = await run(
        loader(["--no-kexec", "--work-dir", WORK]),
        loaderEnv,
      );
      if (!/cached copy verified/.test(again.stderr)) {
        throw new Error(
          `the second run did not reuse the cache:\n${again.stderr}`,
        );
      }
      cachedRuns.push(again);
      rehashes.push(await run(rehashCommand()));
      await Deno.remove(WORK, { recursive: true }).catch(() => {});
      const d = await run(
        loader(["--no-kexec", "--no-cache", "--work-dir", WORK]),
        loaderEnv,
      );
      if (d.code !== 0) {
        throw new Error(`the bootloader failed (exit ${d.code}):\n${d.stderr}`);
      }
      samples["bootloader --no-kexec --no-cache"].push(d);
      ratios.push(c.wall / a.wall);
      if (a.reportedMib > 0 || c.reportedMib > 0) {
        disturbed[round] = `round ${round + 1} (curl -o ${
          fmt(a.reportedMib, 0)
        } MiB, bootloader ${fmt(c.reportedMib, 0)} MiB)`;
      }
      console.error(
        `bench: round ${round + 1}/${REPEAT}: curl -o ${
          fmt(a.wall, 2)
        } s, curl|sha256sum ${fmt(b.wall, 2)} s, bootloader ${
          fmt(c.wall, 2)
        } s (${fmt(c.wall / a.wall, 2)}× curl -o), --no-cache ${
          fmt(d.wall, 2)
        } s, cached ${fmt(again.wall, 2)} s; kernel CPU s: curl -o ${
          fmt(a.sys, 2)
        }, bootloader ${fmt(c.sys, 2)}; steal s: ${fmt(a.steal, 2)}, ${
          fmt(c.steal, 2)
        }; MiB given back to the hypervisor: ${fmt(a.reportedMib, 0)}, ${
          fmt(c.reportedMib, 0)
        }`,
      );
    }
    const idle = await run(loader(["--print-plan"]), loaderEnv);
    await run(loader(["--no-kexec", "--work-dir", WORK]), loaderEnv);
    const before = await (await fetch(`${base}/_stats`)).json();
    await run(loader(["--no-kexec", "--work-dir", WORK]), loaderEnv);
    const after = await (await fetch(`${base}/_stats`)).json();
    const refetched = (after[FILE_NAME] ?? 0) - (before[FILE_NAME] ?? 0);
    const cached = median(cachedRuns);
    const rehash = median(rehashes);
    const breakdown = flags["no-breakdown"] ? [] : await measureBreakdown(url);

    const cpuModel = cpus()[0]?.model ?? "unknown";
    const curlMed = median(samples["curl -o"]);
    const hashMed = median(samples["curl | sha256sum"]);
    const loaderMed = median(samples["bootloader --no-kexec"]);
    const mibs = (s: Sample) => SIZE / MIB / s.wall;
    const lines: string[] = [];
    lines.push(
      `Benchmark: ${
        SIZE / MIB
      } MiB from 127.0.0.1 (dev/bench_server.ts), median of ${REPEAT}, ` +
        `${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC, ` +
        (flags.cold
          ? "memory as each process found it (--cold)"
          : "memory warmed before each process"),
      `Machine: ${navigator.hardwareConcurrency} CPUs, ${cpuModel}, Linux ${
        text("uname", ["-r"])
      }, ` +
        `Deno ${Deno.version.deno}, ${
          text("curl", ["--version"]).split(" ").slice(0, 2).join(" ")
        }, ` +
        `load average at the end ${
          Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
        }`,
      "",
      "| Process | Wall s | MiB/s | × curl -o | × curl \\| sha256sum | Peak RSS MiB | CPU s | of it kernel | Server CPU s |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (const [name, list] of Object.entries(samples)) {
      const s = median(list);
      lines.push(
        `| ${name.replace("|", "\\|")} | ${fmt(s.wall, 2)} | ${
          fmt(mibs(s), 0)
        } | ${fmt(mibs(s) / mibs(curlMed), 2)} | ${
          fmt(mibs(s) / mibs(hashMed), 2)
        } | ${fmt(s.rssMib)} | ${fmt(s.cpu, 2)} | ${fmt(s.sys, 2)} | ${
          fmt(s.serverCpu, 2)
        } |`,
      );
    }
    lines.push(
      `| bootloader --print-plan (idle) | ${fmt(idle.wall, 2)} | | | | ${
        fmt(idle.rssMib)
      } | ${fmt(idle.cpu, 2)} | ${fmt(idle.sys, 2)} | |`,
      `| bootloader again, same work dir (cached) | ${fmt(cached.wall, 2)} | ${
        fmt(mibs(cached), 0)
      } | | | ${fmt(cached.rssMib)} | ${fmt(cached.cpu, 2)} | ${
        fmt(cached.sys, 2)
      } | |`,
      `| its re-hash alone (sha256File, a process of its own) | ${
        fmt(rehash.wall, 2)
      } | ${fmt(mibs(rehash), 0)} | | | ${fmt(rehash.rssMib)} | ${
        fmt(rehash.cpu, 2)
      } | ${fmt(rehash.sys, 2)} | |`,
      "",
    );
    const above = loaderMed.rssMib - idle.rssMib;
    const ratio = medianOf(ratios);
    const noCache = median(samples["bootloader --no-kexec --no-cache"]);
    const overhead = cached.wall - rehash.wall;
    lines.push(
      `- sha256 agrees with curl | sha256sum: ${
        loaderSha === expected ? "yes" : `NO (${loaderSha} vs ${expected})`
      }`,
      `- time against curl -o, per round (bootloader ÷ curl -o of the same round): ${
        ratios.map((r) => fmt(r, 2)).join(", ")
      }; median ${fmt(ratio, 2)}× (goal ≤ 1.3×: ${
        ratio <= 1.3 ? "met" : "MISSED"
      }; stretch ≤ 1.15×: ${ratio <= 1.15 ? "met" : "missed"})`,
      undisturbed(ratios, disturbed),
      `- with hashing, against curl | sha256sum: ${
        fmt(mibs(loaderMed) / mibs(hashMed), 2)
      }× its throughput`,
      `- the cache's cost on a first run: ${
        fmt(loaderMed.wall - noCache.wall, 2)
      } s (median with the cache ${fmt(loaderMed.wall, 2)} s, --no-cache ${
        fmt(noCache.wall, 2)
      } s)`,
      `- peak RSS above idle: ${fmt(above)} MiB (goal ≤ 64 MiB: ${
        above <= 64 ? "met" : "MISSED"
      })`,
      `- cached artifacts: start to kexec-ready ${
        fmt(cached.wall, 2)
      } s, of which the re-hash alone takes ${fmt(rehash.wall, 2)} s: ${
        fmt(overhead, 2)
      } s besides it (goal < 0.5 s: ${
        overhead < 0.5 ? "met" : "MISSED"
      }); a cached run sends ${refetched} request(s) for the file and downloads none of it`,
    );
    lines.push(cpuBudget(samples["curl -o"], samples["bootloader --no-kexec"]));
    if (breakdown.length > 0) {
      lines.push("", "Breakdown (one process each, same file and server):", "");
      lines.push(
        "| Step alone | Wall s | MiB/s | Peak RSS MiB | CPU s | of it kernel | MiB given back to the hypervisor meanwhile |",
        "|---|---:|---:|---:|---:|---:|---:|",
      );
      for (const [name, s] of breakdown) {
        lines.push(
          `| ${name} | ${fmt(s.wall, 2)} | ${fmt(mibs(s), 0)} | ${
            fmt(s.rssMib)
          } | ${fmt(s.cpu, 2)} | ${fmt(s.sys, 2)} | ${fmt(s.reportedMib, 0)} |`,
        );
      }
    }
    console.log(lines.join("\n"));
  } finally {
    try {
      server.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await server.status;
    await Deno.remove(curlOut).catch(() => {});
    await Deno.remove(WORK, { recursive: true }).catch(() => {});
  }
}

/**
 * What the CPUs allow: the CPU seconds a download costs the client and the
 * server together, spread over every CPU with perfect overlap, is the least
 * wall time it can take on this machine while the server shares it.
 */
function cpuBudget(curl: Sample[], loader: Sample[]): string {
  const cpus = navigator.hardwareConcurrency;
  const total = (list: Sample[]) => median(list).cpu + median(list).serverCpu;
  const part = (list: Sample[], key: "cpu" | "serverCpu") => median(list)[key];
  const curlWall = median(curl).wall;
  const floor = total(loader) / cpus;
  return `- CPU budget (the median runs): curl -o costs ${
    fmt(total(curl), 2)
  } CPU s (curl ${fmt(part(curl, "cpu"), 2)} + server ${
    fmt(part(curl, "serverCpu"), 2)
  }) in ${fmt(curlWall, 2)} s; the bootloader ${
    fmt(total(loader), 2)
  } CPU s (itself ${fmt(part(loader, "cpu"), 2)} + server ${
    fmt(part(loader, "serverCpu"), 2)
  }); spread perfectly over ${cpus} CPUs that is at least ${fmt(floor, 2)} s, ${
    fmt(floor / curlWall, 2)
  }× curl -o, before any wait or start-up`;
}

/**
 * The rounds the hypervisor took memory back during curl -o or the bootloader
 * (their page cache then landed on memory it had to fault in again), and the
 * median ratio of the other rounds.
 */
function undisturbed(ratios: number[], disturbed: string[]): string {
  const calm = ratios.filter((_, round) => disturbed[round] === undefined);
  const named = disturbed.filter((text) => text !== undefined);
  if (named.length === 0) {
    return "- no round had memory taken back by a hypervisor during curl -o or the bootloader";
  }
  return `- memory taken back by the hypervisor during ${named.join(", ")}; ${
    calm.length > 0
      ? `median of the other ${calm.length} round(s): ${
        fmt(medianOf(calm), 2)
      }×`
      : "no round without"
  }`;
}

/** The bootloader's own re-hash of the served file (`sha256File`), alone. */
function rehashCommand(): string[] {
  const module = new URL("../lib/stage/sha256.ts", import.meta.url).href;
  return [
    Deno.execPath(),
    "eval",
    `import { sha256File } from ${JSON.stringify(module)};
     console.log(await sha256File(${JSON.stringify(FILE)}));`,
  ];
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Where the time goes: each part of the bootloader's work alone, in its own process. */
async function measureBreakdown(url: string): Promise<[string, Sample][]> {
  const out: [string, Sample][] = [];
  const deno = (code: string) => [Deno.execPath(), "eval", code];
  const sink = `${DIR}/breakdown.out`;
  out.push([
    "Deno fetch, body read and dropped",
    await run(deno(`
      const r = await fetch(${JSON.stringify(url)});
      const reader = r.body.getReader();
      for (;;) { const { done } = await reader.read(); if (done) break; }`)),
  ]);
  out.push([
    "Deno fetch + node:crypto sha256 (no write)",
    await run(deno(`
      import { createHash } from "node:crypto";
      const h = createHash("sha256");
      const r = await fetch(${JSON.stringify(url)});
      for await (const c of r.body) h.update(c);
      console.log(h.digest("hex"));`)),
  ]);
  out.push([
    "Deno fetch + file write, 1 MiB writes (no hash)",
    await run(deno(`
      const r = await fetch(${JSON.stringify(url)});
      const f = await Deno.open(${
      JSON.stringify(sink)
    }, { write: true, create: true, truncate: true });
      const buf = new Uint8Array(1 << 20); let used = 0;
      const flush = async () => { let d = 0; while (d < used) d += await f.write(buf.subarray(d, used)); used = 0; };
      for await (let c of r.body) {
        while (c.length) { const n = Math.min(c.length, buf.length - used); buf.set(c.subarray(0, n), used); used += n; c = c.subarray(n); if (used === buf.length) await flush(); }
      }
      await flush(); f.close();`)),
  ]);
  await Deno.remove(sink).catch(() => {});
  out.push([
    "Deno fetch, BYOB reads + sha256 + overlapped writes, all on one thread",
    await run(deno(`
      import { createHash } from "node:crypto";
      const h = createHash("sha256");
      const r = await fetch(${JSON.stringify(url)});
      const f = await Deno.open(${
      JSON.stringify(sink)
    }, { write: true, create: true, truncate: true });
      const reader = r.body.getReader({ mode: "byob" });
      const size = 1 << 20; const spare = [new ArrayBuffer(size), new ArrayBuffer(size)];
      let writing = Promise.resolve(); let done = false;
      const writeAll = async (v) => { let d = 0; while (d < v.length) d += await f.write(v.subarray(d)); };
      while (!done) {
        let buf = spare.pop(); let used = 0;
        while (used < size) {
          const res = await reader.read(new Uint8Array(buf, used, size - used));
          if (res.value) buf = res.value.buffer;
          if (res.done) { done = true; break; }
          used += res.value.length;
        }
        const view = new Uint8Array(buf, 0, used);
        h.update(view);
        await writing;
        writing = writeAll(view).then(() => { spare.push(buf); });
      }
      await writing; f.close();
      console.log(h.digest("hex"));`)),
  ]);
  await Deno.remove(sink).catch(() => {});
  out.push([
    "node:crypto sha256 of the file (1 MiB reads)",
    await run(deno(`
      import { createHash } from "node:crypto";
      const h = createHash("sha256");
      const f = await Deno.open(${JSON.stringify(FILE)});
      const buf = new Uint8Array(1 << 20);
      for (;;) { const n = await f.read(buf); if (n === null) break; h.update(buf.subarray(0, n)); }
      console.log(h.digest("hex"));`)),
  ]);
  out.push(["sha256sum of the file", await run(["sha256sum", FILE])]);
  const dd = [
    "dd",
    "if=/dev/zero",
    `of=${sink}`,
    "bs=1M",
    `count=${SIZE / MIB}`,
    "status=none",
  ];
  out.push([
    "dd: the same size written from /dev/zero, 1 MiB writes (the kernel's write cost)",
    await run(dd),
  ]);
  await Deno.remove(sink).catch(() => {});
  out.push([
    "dd again, 10 s after the memory was freed (given back to a hypervisor meanwhile)",
    await run(dd, {}, { idleMs: 10_000 }),
  ]);
  await Deno.remove(sink).catch(() => {});
  return out;
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`bench: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
