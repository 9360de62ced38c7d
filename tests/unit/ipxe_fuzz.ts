/**
 * A seeded generator of iPXE scripts for fuzzing the interpreter: random
 * scripts built from the command set (with `||`/`&&` chains, `${}` nests,
 * labels and gotos, menus, image commands and URLs of every shape), and
 * mutations of a few hand-written seed scripts (byte edits, line shuffles,
 * splices of fragments). A case's scripts and the in-memory fetcher it runs
 * against depend only on `(seed, index)`, so any failure can be replayed.
 *
 * @module
 */

import { BootError } from "../../lib/errors.ts";
import { runScriptSource } from "../../lib/ipxe/mod.ts";
import type { BootPlan } from "../../lib/plan.ts";

/** A small, fast, seeded PRNG (mulberry32). */
export class Rng {
  #state: number;

  /** Creates a generator from a 32-bit seed. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Next 32-bit unsigned integer. */
  u32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : this.u32() % n;
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** Mixes a seed and a case index into the seed of that case. */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** A string hash (FNV-1a), for per-URL decisions of the fetcher. */
function hashString(text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  }
  return h;
}

const HOST = "http://fuzz.test";
const NAMES = [
  "a",
  "b",
  "x",
  "menu",
  "base",
  "base-url",
  "net0/mac",
  "net0/ip",
  "net0.dhcp/ip",
  "hostname",
  "root-path",
  "filename",
  "next-server",
  "buildarch",
  "platform",
  "cwuri",
  "cwduri",
  "version",
  "manufacturer",
  "uuid",
  "user-class",
  "ip",
  "os",
  "release",
  "foo/bar",
  "",
  "a:int8",
  "b:hex",
  "x:uint16",
  "ip:ipv4",
  "s:string",
  "u:uristring",
  "h:hexhyp",
  "h:hexraw",
  "b64:base64",
  "k:ipv6",
  "z:uuid",
  "q:busdevfn",
  "n:bogus",
];
const LABELS = ["start", "retry", "loop", "boot", "fail", "menu", "end", "a"];
const WORDS = [
  "console=ttyS0",
  "initrd=initrd",
  "ip=dhcp",
  "quiet",
  "a=b=c",
  "''",
  '""',
  '"quoted words"',
  "'single'",
  "\\\\",
  "\\$",
  "\\${x}",
  "-",
  "--",
  "=",
  "#notcomment",
  "||x",
  "&&",
  "\t",
  "é",
  "\u00ff",
  "0x10",
  "-1",
  "99999999999999999999",
];
const COMMANDS_PLAIN = [
  "dhcp",
  "ifconf",
  "ifopen net0",
  "ifstat",
  "route",
  "ntp pool.ntp.org",
  "sync",
  "console --x 1024",
  "colour --rgb 0xff0000 1",
  "cpair --foreground 7 0",
  "params",
  "param --params p key value",
  "imgstat",
  "show buildarch",
  "cpuid --ext 29",
  "cpuid 99",
  "sleep 1",
  "sleep 0",
  "sleep x",
  "prompt --timeout 100 press a key",
  "prompt --key 0x02 --timeout 1 hit",
  "read x",
  "shell",
  "login",
  "reboot",
  "poweroff",
  "config",
  "autoboot",
  "sanboot http://fuzz.test/disk",
  "nosuchcommand",
  "",
  "exit",
  "exit 1",
  "exit 0",
  "imgfree",
  "imgargs",
  "imgselect",
  "boot",
  "chain",
  "kernel",
  "initrd",
];

/** The hand-written seed scripts the mutator starts from. */
export const SEED_SCRIPTS: readonly string[] = [
  `#!ipxe
initrd --name initrd ${HOST}/images/abc/pxe-initrd?arch=x86_64&version=4.18
kernel ${HOST}/boot-artifacts/kernel?arch=x86_64&version=4.18 initrd=initrd coreos.live.rootfs_url=${HOST}/rootfs random.trust_cpu=on console=tty1 coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"
boot
`,
  `#!ipxe
set base ${HOST}/fcos
:retry
dhcp || goto retry
kernel \${base}/vmlinuz initrd=main coreos.live.rootfs_url=\${base}/rootfs.img ignition.config.url=\${base}/config.ign?mac=\${net0/mac:hexhyp}
initrd --name main \${base}/initramfs.img
initrd \${base}/config.ign /etc/ignition.ign mode=0600
boot || goto failed
:failed
echo boot failed
exit 1
`,
  `#!ipxe
goto \${menu}
:start
menu Pick one
item --gap Systems
item one First
item two Second
item --key x exit Exit
choose --default one --timeout 100 target && goto \${target} || goto start
:one
chain --autofree next.ipxe || goto start
:two
imgfetch --name cfg ${HOST}/cfg.ipxe
imgexec cfg
:exit
exit
`,
  `#!ipxe
isset \${net0/ip} || dhcp
iseq \${buildarch} arm64 && set arch aarch64 || set arch x86_64
iseq \${platform} efi && goto efi ||
echo \${arch} \${platform} \${version}
:efi
set x:int8 42
set y \${x}\${x:hex}
clear x
imgfetch -n k ${HOST}/k/\${arch}/vmlinuz || goto end
imgargs k console=ttyS0 root=/dev/ram0
imgselect k
module ../modules/one.cpio
boot
:end
`,
  `#!ipxe
chain --replace --autofree ${HOST}/chain/\${net0/mac}.ipxe || chain ${HOST}/default.ipxe
`,
  `#!ipxe
set i:int32 0
:loop
inc i
iseq \${i} 10 || goto loop
kernel vmlinuz \${cwduri} \${cwuri}
initrd initrd.img
imgstat
boot
`,
];

/** Sizes and probabilities of the generator. */
export interface GenOptions {
  /** Most lines in a generated script. */
  maxLines: number;
}

const DEFAULT_GEN: GenOptions = { maxLines: 24 };

function name(rng: Rng): string {
  const n = rng.pick(NAMES);
  return rng.chance(0.1) ? `${n}${rng.int(3)}` : n;
}

/** A setting reference, sometimes nested or malformed. */
function ref(rng: Rng, depth = 0): string {
  const r = rng.int(12);
  if (r === 0 && depth < 4) return `\${${name(rng)}${ref(rng, depth + 1)}}`;
  if (r === 1 && depth < 4) return `\${${ref(rng, depth + 1)}}`;
  if (r === 2) return "${";
  if (r === 3) return `\${${name(rng)}`;
  if (r === 4) return "}";
  if (r === 5) {
    return `\${net0/mac:${
      rng.pick(["hex", "hexhyp", "hexraw", "string", "base64", "x"])
    }}`;
  }
  return `\${${name(rng)}}`;
}

function url(rng: Rng): string {
  const file = rng.pick([
    "next.ipxe",
    "boot.ipxe",
    "vmlinuz",
    "initrd.img",
    "k",
    "script",
    "bin",
    "garbage",
    "empty",
    "err",
    "big",
    "chain/x.ipxe",
  ]);
  switch (rng.int(14)) {
    case 0:
      return file;
    case 1:
      return `../${file}`;
    case 2:
      return `/${file}?a=1&b=${ref(rng)}`;
    case 3:
      return `${ref(rng)}/${file}`;
    case 4:
      return `tftp://10.0.0.1/${file}`;
    case 5:
      return `https://fuzz.test:8443/${file}#frag`;
    case 6:
      return `http://[::1]:80/${file}`;
    case 7:
      return `file:///tmp/${file}`;
    case 8:
      return rng.pick([
        "http://",
        "http:",
        "://x",
        "%zz",
        "http://fuzz.test/%00",
      ]);
    case 9:
      return `${HOST}/d${rng.int(50)}/${file}`;
    default:
      return `${HOST}/${rng.int(8)}/${file}`;
  }
}

function word(rng: Rng): string {
  switch (rng.int(4)) {
    case 0:
      return ref(rng);
    case 1:
      return `${rng.pick(["a", "root", "console", "x"])}=${ref(rng)}`;
    default:
      return rng.pick(WORDS);
  }
}

function words(rng: Rng, max: number): string {
  const out: string[] = [];
  for (let i = rng.int(max + 1); i > 0; i--) out.push(word(rng));
  return out.join(" ");
}

function imageOptions(rng: Rng): string {
  const opts: string[] = [];
  if (rng.chance(0.3)) {
    opts.push(`--name ${rng.pick(["k", "i", "cfg", "initrd", "x", ref(rng)])}`);
  }
  if (rng.chance(0.15)) opts.push("--autofree");
  if (rng.chance(0.1)) opts.push("--replace");
  if (rng.chance(0.1)) {
    opts.push(`--timeout ${rng.pick(["0", "100", "x", "-1"])}`);
  }
  if (rng.chance(0.05)) opts.push(rng.pick(["--bogus", "-z", "--name", "--"]));
  return opts.join(" ");
}

function command(rng: Rng): string {
  switch (rng.int(22)) {
    case 0:
    case 1:
      return `set ${name(rng)} ${words(rng, 3)}`;
    case 2:
      return `clear ${name(rng)}`;
    case 3:
      return `echo ${rng.chance(0.2) ? "-n " : ""}${words(rng, 4)}`;
    case 4:
      return `isset ${ref(rng)}`;
    case 5:
      return `iseq ${word(rng)} ${word(rng)}`;
    case 6:
      return `goto ${rng.chance(0.8) ? rng.pick(LABELS) : ref(rng)}`;
    case 7:
      return `kernel ${imageOptions(rng)} ${url(rng)} ${words(rng, 5)}`;
    case 8:
    case 9:
      return `${rng.pick(["initrd", "imgfetch", "module"])} ${
        imageOptions(rng)
      } ${url(rng)} ${
        rng.chance(0.3)
          ? `/etc/${rng.pick(["a", "b.conf", ""])} mode=${
            rng.pick(["0600", "755", "x"])
          }`
          : words(rng, 2)
      }`;
    case 10:
      return `${rng.pick(["chain", "boot", "imgexec"])} ${imageOptions(rng)} ${
        rng.chance(0.2) ? rng.pick(["k", "i", "cfg"]) : url(rng)
      } ${words(rng, 2)}`;
    case 11:
      return `${rng.pick(["imgargs", "imgselect", "imgfree", "imgstat"])} ${
        rng.pick(["k", "i", "cfg", "x", ""])
      } ${words(rng, 2)}`;
    case 12:
      return `menu ${rng.chance(0.5) ? `--name ${rng.pick(["m", "n"])} ` : ""}${
        words(rng, 2)
      }`;
    case 13:
      return `item ${rng.chance(0.2) ? "--gap " : ""}${
        rng.chance(0.2) ? "--default " : ""
      }${rng.chance(0.2) ? "--key x " : ""}${rng.pick(LABELS)} ${
        words(rng, 2)
      }`;
    case 14:
      return `choose ${
        rng.chance(0.5) ? `--default ${rng.pick(LABELS)} ` : ""
      }${rng.chance(0.3) ? "--timeout 10 " : ""}${
        rng.chance(0.3) ? "--menu m " : ""
      }${name(rng)}`;
    case 15:
      return `${rng.pick(["inc", "dec"])} ${name(rng)} ${
        rng.pick(["", "1", "-3", "x"])
      }`;
    case 16:
      return `:${rng.pick(LABELS)}`;
    case 17:
      return `#${words(rng, 2)}`;
    default:
      return rng.pick(COMMANDS_PLAIN);
  }
}

/** One script line: a command or a `||`/`&&` chain of them. */
function line(rng: Rng): string {
  let out = command(rng);
  while (rng.chance(0.25)) {
    out += ` ${rng.pick(["||", "&&", "||", "&&", "|", "&"])} ${
      rng.chance(0.1) ? "" : command(rng)
    }`;
  }
  // `cmd ||` ignores a failure, so most scripts get past their first error.
  if (rng.chance(0.35)) out += " ||";
  if (rng.chance(0.03)) out += " \\";
  return out;
}

/** A random script from the grammar. */
export function generateScript(
  rng: Rng,
  options: GenOptions = DEFAULT_GEN,
): string {
  const lines: string[] = [];
  const head = rng.int(40);
  if (head === 0) lines.push("#!gpxe");
  else if (head === 1) lines.push("#!ipxe extra words");
  else if (head !== 2) lines.push("#!ipxe");
  const n = 1 + rng.int(options.maxLines);
  for (let i = 0; i < n; i++) lines.push(line(rng));
  if (rng.chance(0.5)) {
    lines.push(`kernel ${url(rng)} ${words(rng, 3)}`);
    if (rng.chance(0.6)) lines.push(`initrd ${url(rng)}`);
    lines.push("boot");
  }
  const eol = rng.pick(["\n", "\n", "\n", "\r\n", "\r"]);
  return lines.join(eol) + (rng.chance(0.9) ? eol : "");
}

const SPLICES = [
  "${",
  "}",
  "${${",
  "||",
  "&&",
  " ",
  "\t",
  "\n",
  "\r",
  "\0",
  ":",
  "#",
  '"',
  "'",
  "\\",
  "goto loop\n:loop\n",
  "\n#!ipxe\n",
  "\xff\xfe",
  "\u2028",
  "%",
  "=",
  "--",
  "chain next.ipxe\n",
];

/** Applies 1–6 random edits to `text`. */
export function mutate(rng: Rng, text: string): string {
  let out = text;
  for (let edits = 1 + rng.int(6); edits > 0; edits--) {
    // Mostly leave the `#!ipxe` line alone, so edits reach the commands.
    const keep = rng.chance(0.9) ? Math.min(7, out.length) : 0;
    const at = keep + rng.int(out.length - keep + 1);
    switch (rng.int(9)) {
      case 0: // delete a range
        out = out.slice(0, at) +
          out.slice(Math.min(out.length, at + 1 + rng.int(16)));
        break;
      case 1: // insert a fragment
        out = out.slice(0, at) + rng.pick(SPLICES) + out.slice(at);
        break;
      case 2: { // insert random bytes
        let junk = "";
        for (let i = 1 + rng.int(8); i > 0; i--) {
          junk += String.fromCharCode(rng.int(256));
        }
        out = out.slice(0, at) + junk + out.slice(at);
        break;
      }
      case 3: { // duplicate or drop a line
        const lines = out.split("\n");
        const i = rng.int(lines.length);
        if (rng.chance(0.5)) lines.splice(i, 0, lines[rng.int(lines.length)]);
        else lines.splice(i, 1);
        out = lines.join("\n");
        break;
      }
      case 4: { // swap two lines
        const lines = out.split("\n");
        const i = rng.int(lines.length);
        const j = rng.int(lines.length);
        [lines[i], lines[j]] = [lines[j], lines[i]];
        out = lines.join("\n");
        break;
      }
      case 5: // insert a generated line
        out = out.slice(0, at) + "\n" + line(rng) + "\n" + out.slice(at);
        break;
      case 6: // truncate
        out = out.slice(0, at);
        break;
      case 7: { // flip a bit
        if (out.length === 0) break;
        const i = Math.min(at, out.length - 1);
        out = out.slice(0, i) +
          String.fromCharCode((out.charCodeAt(i) ^ (1 << rng.int(8))) & 0xff) +
          out.slice(i + 1);
        break;
      }
      default: { // repeat a slice (long lines, deep nests)
        const len = 1 + rng.int(12);
        const piece = out.slice(at, at + len);
        out = out.slice(0, at) + piece.repeat(2 + rng.int(30)) + out.slice(at);
      }
    }
  }
  return out;
}

/** A script made to hit a cap or a deep path: long nests, lines, chains, lists. */
export function stressScript(rng: Rng): string {
  const n = 100 + rng.int(5000);
  switch (rng.int(9)) {
    case 0:
      return `#!ipxe\necho ${"${".repeat(n)}x${"}".repeat(rng.int(n + 1))}\n`;
    case 1:
      return `#!ipxe\necho ${"a ".repeat(n * 4)}\n`;
    case 2:
      return `#!ipxe\n${"iseq 1 2 || ".repeat(n)}echo\n`;
    case 3:
      return `#!ipxe\n${
        Array.from({ length: n }, (_, i) => `:l${i}`).join("\n")
      }\ngoto l${rng.int(n)}\n`;
    case 4:
      return `#!ipxe\nset a x\n${
        "set a ${a}${a}\n".repeat(10 + rng.int(30))
      }kernel k \${a}\nboot\n`;
    case 5:
      return `#!ipxe\n${
        rng.pick(['"', "'", "\\", "\0", "$", "{"]).repeat(n * 4)
      }\n`;
    case 6:
      return `#!ipxe\n${
        Array.from({ length: n }, (_, i) =>
          `initrd ${HOST}/i${i} /f${i} mode=0${rng.int(8)}44`).join("\n")
      }\nkernel vmlinuz\nboot\n`;
    case 7:
      return `#!ipxe\nmenu m\n${
        Array.from({ length: n }, (_, i) => `item l${i} t${i}`).join("\n")
      }\nchoose --default l${rng.int(n)} x && goto \${x}\n`;
    default:
      return `#!ipxe\nset a:${
        rng.pick(["hex", "hexhyp", "base64", "int32", "uint8", "ipv4", "uuid"])
      } ${
        rng.pick(["ff:", "1.", "-", "A", "9"]).repeat(n)
      }\necho \${a} \${a:hex} \${a:string}\n`;
  }
}

/** A 4 KiB bzImage-looking blob (`HdrS` at 0x202) with seeded contents. */
function kernelBytes(rng: Rng): Uint8Array {
  const out = new Uint8Array(4096);
  for (let i = 0; i < out.length; i += 4) {
    const v = rng.u32();
    out[i] = v;
    out[i + 1] = v >>> 8;
    out[i + 2] = v >>> 16;
    out[i + 3] = v >>> 24;
  }
  out.set([0x48, 0x64, 0x72, 0x53], 0x202);
  return out;
}

/** Bytes of a string whose characters are all < 256 (iPXE's byte strings) or any string. */
function bytesOf(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 255) {
      ascii = false;
      break;
    }
    out[i] = c;
  }
  return ascii ? out : new TextEncoder().encode(text);
}

/** One fuzz case: the first script and a fetcher for everything it chains. */
export interface FuzzCase {
  /** The case's seed. */
  seed: number;
  /** The first script. */
  script: string;
  /** The fetcher: a deterministic function of the case seed and the URL. */
  fetch: (
    url: string,
    options: { maxBytes: number; timeoutMs?: number },
  ) => Promise<{ url: string; body: Uint8Array }>;
  /** URLs fetched so far. */
  fetched: string[];
}

/** Builds case `index` of run `seed`. */
export function makeCase(seed: number, index: number): FuzzCase {
  const s = caseSeed(seed, index);
  const rng = new Rng(s);
  const script = rng.chance(0.01)
    ? stressScript(rng)
    : rng.chance(0.5)
    ? generateScript(rng)
    : mutate(rng, rng.pick(SEED_SCRIPTS));
  const fetched: string[] = [];
  const fetch = (u: string, options: { maxBytes: number }) => {
    fetched.push(u);
    const r = new Rng(hashString(u, s) ^ fetched.length);
    const kind = r.int(20);
    const answer = (body: Uint8Array, at = u) =>
      Promise.resolve({ url: at, body });
    if (/garbage|bin/.test(u) || kind === 0) {
      const junk = new Uint8Array(r.int(2048));
      for (let i = 0; i < junk.length; i++) junk[i] = r.int(256);
      return answer(junk);
    }
    if (/empty/.test(u) || kind === 1) return answer(new Uint8Array(0));
    if (/err/.test(u) || kind === 2) {
      return Promise.reject(
        r.chance(0.5)
          ? new BootError(`${u} answered HTTP 404`, 4)
          : new Error(`connection refused: ${u}`),
      );
    }
    if (/big/.test(u) || kind === 3) {
      return answer(
        bytesOf(
          "#!ipxe\n" + "echo big\n".repeat(Math.ceil(options.maxBytes / 9) + 1),
        ),
      );
    }
    if (/vmlinuz|\/k$|initrd/.test(u) || kind < 8) {
      return answer(kernelBytes(r));
    }
    if (kind === 8) {
      return answer(
        bytesOf(mutate(r, r.pick(SEED_SCRIPTS))),
        `${HOST}/redirected/${r.int(4)}.ipxe`,
      );
    }
    return answer(
      bytesOf(
        r.chance(0.5)
          ? generateScript(r, { maxLines: 10 })
          : mutate(r, r.pick(SEED_SCRIPTS)),
      ),
    );
  };
  return { seed: s, script, fetch, fetched };
}

/** Caps every case runs under. */
export const FUZZ_LIMITS = {
  maxSteps: 2000,
  maxChainDepth: 6,
  maxScriptBytes: 64 * 1024,
} as const;

/** How a case ended. */
export type Outcome =
  | { kind: "plan"; plan: BootPlan }
  | { kind: "error"; message: string }
  | { kind: "crash"; error: string };

/** Runs one case; a crash is anything but a one-line {@linkcode BootError} or a well-formed plan. */
export async function runCase(c: FuzzCase): Promise<Outcome> {
  try {
    const plan = await runScriptSource(c.script, {
      url: `${HOST}/start/boot.ipxe`,
      fetch: c.fetch,
      settings: { "net0/mac": "52:54:00:12:34:56", menu: "start" },
      buildarch: "x86_64",
      sleep: () => Promise.resolve(),
      print: () => {},
      ...FUZZ_LIMITS,
    });
    const problem = checkPlan(plan);
    if (problem) return { kind: "crash", error: `malformed plan: ${problem}` };
    return { kind: "plan", plan };
  } catch (err) {
    if (err instanceof BootError) {
      if (err.message.includes("\n") || err.message.trim() === "") {
        return {
          kind: "crash",
          error: `error message is not one line: ${
            JSON.stringify(err.message)
          }`,
        };
      }
      return { kind: "error", message: err.message };
    }
    const text = err instanceof Error
      ? `${err.name}: ${err.message}\n${err.stack ?? ""}`
      : String(err);
    return { kind: "crash", error: text };
  }
}

function checkPlan(plan: BootPlan): string | undefined {
  if (plan.action === "local-boot") {
    if (typeof plan.reason !== "string" || plan.reason.includes("\n")) {
      return "bad local-boot reason";
    }
    return undefined;
  }
  if (plan.action !== "kexec") return "unknown action";
  if (typeof plan.kernel?.url !== "string" || plan.kernel.url === "") {
    return "no kernel URL";
  }
  if (typeof plan.kernel.name !== "string") return "no kernel name";
  if (typeof plan.cmdline !== "string") return "no cmdline";
  if (!Array.isArray(plan.initrds) || !Array.isArray(plan.scripts)) {
    return "no lists";
  }
  for (const initrd of plan.initrds) {
    if (typeof initrd.url !== "string" || typeof initrd.name !== "string") {
      return "bad initrd";
    }
    if (
      initrd.cpio &&
      (typeof initrd.cpio.path !== "string" ||
        !Number.isFinite(initrd.cpio.mode))
    ) {
      return "bad cpio wrap";
    }
  }
  try {
    JSON.stringify(plan);
  } catch (err) {
    return `not JSON: ${err}`;
  }
  return undefined;
}
