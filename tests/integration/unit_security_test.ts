/**
 * The sandbox of the one-shot unit, measured on the unit as the Ignition
 * config writes it: `systemd-analyze security --offline=true` rates it at most
 * {@linkcode MAX_EXPOSURE}, the only exposures left are the trade-offs
 * docs/sandbox.md explains, and the system call filter lets through
 * `kexec_file_load` alone of the @reboot group. Whether the sandboxed unit
 * still kexecs is proved by tests/vm/chain_test.ts.
 *
 * The names of the checks are those of this machine's systemd (Debian 12,
 * systemd 252); another version may name or weigh them differently.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { generateIgnition, UNIT_NAME } from "../../ignition/mod.ts";
import { withTemp } from "../test_util.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The goal: `systemd-analyze security` exposure, 0.0 (best) to 10.0. */
const MAX_EXPOSURE = 4.0;
/**
 * Every check `systemd-analyze security` still counts against the unit: each
 * is a trade-off docs/sandbox.md explains. Removing a sandbox directive adds
 * a name here (the test fails and says which); tightening one removes a name.
 */
const ACCEPTED = [
  "CapabilityBoundingSet=~CAP_SYS_BOOT",
  "DeviceAllow=",
  "IPAddressDeny=",
  "MemoryDenyWriteExecute=",
  "PrivateDevices=",
  "PrivateNetwork=",
  "PrivateUsers=",
  "ProcSubset=",
  "ProtectProc=",
  "RestrictAddressFamilies=~AF_(INET|INET6)",
  "RestrictAddressFamilies=~AF_NETLINK",
  "RestrictAddressFamilies=~AF_UNIX",
  "RootDirectory=/RootImage=",
  "SystemCallFilter=~@privileged",
  "SystemCallFilter=~@reboot",
  "User=/DynamicUser=",
];

async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** The unit's text exactly as the generated Ignition config carries it. */
async function generatedUnit(): Promise<string> {
  const config = await generateIgnition({
    bootloaderUrl: "https://example.com/assisted-bootloader",
    bootloaderSha256: "ab".repeat(32),
    ipxeUrl: "https://example.com/boot.ipxe",
  });
  const unit = config.systemd.units.find((u) => u.name === UNIT_NAME);
  assert.ok(unit, `the config installs ${UNIT_NAME}`);
  return unit.contents;
}

/** The unit without the lines matching `drop` (for the checks that must fail). */
function without(unit: string, drop: RegExp): string {
  const kept = unit.split("\n").filter((line) => !drop.test(line));
  assert.ok(kept.length < unit.split("\n").length, `no line matches ${drop}`);
  return kept.join("\n");
}

interface Assessment {
  /** Overall exposure, as printed. */
  exposure: number;
  /** Whether `--threshold` accepted it (systemd's own comparison). */
  withinThreshold: boolean;
  /** Names of the checks that still count against the unit, sorted. */
  exposed: string[];
}

/** Runs `systemd-analyze security --offline=true` on `unit` (its text). */
function assess(unit: string): Promise<Assessment> {
  return withTemp(async (dir) => {
    const path = `${dir}/${UNIT_NAME}`;
    await Deno.writeTextFile(path, unit);
    const common = ["security", "--offline=true", "--no-pager"];
    const text = await run("systemd-analyze", [
      ...common,
      `--threshold=${MAX_EXPOSURE * 10}`,
      path,
    ]);
    const m = new RegExp(
      `Overall exposure level for ${UNIT_NAME}: (\\d+\\.\\d)`,
    ).exec(text.stdout);
    assert.ok(m, `no overall exposure in:\n${text.stdout}${text.stderr}`);
    const json = await run("systemd-analyze", [
      ...common,
      "--json=short",
      path,
    ]);
    assert.equal(json.code, 0, json.stderr);
    const checks = JSON.parse(json.stdout) as {
      name: string;
      set: boolean;
      exposure: string | null;
    }[];
    return {
      exposure: Number(m[1]),
      withinThreshold: text.code === 0,
      exposed: checks.filter((c) => !c.set && c.exposure !== null)
        .map((c) => c.name).sort(),
    };
  });
}

Deno.test(`the generated unit's exposure is at most ${MAX_EXPOSURE.toFixed(1)}`, async () => {
  const unit = await generatedUnit();
  const { exposure, withinThreshold } = await assess(unit);
  console.log(`systemd-analyze security: ${UNIT_NAME} ${exposure}`);
  assert.ok(
    exposure <= MAX_EXPOSURE,
    `exposure ${exposure} > ${MAX_EXPOSURE.toFixed(1)}`,
  );
  assert.ok(withinThreshold, "systemd-analyze --threshold refused the unit");
  // The check can fail: the same unit without its sandbox is far above it.
  const bare = await assess(
    unit.replace(/^# Sandbox:[^]*?(?=^\[Install\])/m, ""),
  );
  assert.ok(bare.exposure > MAX_EXPOSURE, `bare unit: ${bare.exposure}`);
  assert.equal(bare.withinThreshold, false);
});

Deno.test("every exposure left is a trade-off docs/sandbox.md explains", async () => {
  const unit = await generatedUnit();
  assert.deepEqual((await assess(unit)).exposed, ACCEPTED);
  // (A "|" in a Markdown table cell is written "\|".)
  const docs = (await Deno.readTextFile(`${ROOT}/docs/sandbox.md`))
    .replaceAll("\\|", "|");
  for (const name of ACCEPTED) {
    assert.ok(docs.includes(`\`${name}\``), `docs/sandbox.md names ${name}`);
  }
  // One directive less is one more exposure, named.
  const eroded = await assess(without(unit, /^NoNewPrivileges=/));
  assert.deepEqual(
    eroded.exposed,
    [...ACCEPTED, "NoNewPrivileges="].sort(),
  );
});

/** The system calls of a `systemd-analyze syscall-filter` set, groups expanded. */
async function expand(
  set: string,
  cache = new Map<string, string[]>(),
): Promise<string[]> {
  if (!set.startsWith("@")) return [set];
  const known = cache.get(set);
  if (known) return known;
  const r = await run("systemd-analyze", ["syscall-filter", "--no-pager", set]);
  assert.equal(r.code, 0, r.stderr);
  const calls: string[] = [];
  for (const line of r.stdout.split("\n").slice(1)) {
    const name = line.trim();
    if (!name || name.startsWith("#")) continue;
    calls.push(...await expand(name, cache));
  }
  cache.set(set, calls);
  return calls;
}

/**
 * What the unit's `SystemCallFilter=` lines allow: the first line is an allow
 * list, each later `~` line removes from it and each plain line adds to it.
 */
async function allowedCalls(unit: string): Promise<Set<string>> {
  const lines = [...unit.matchAll(/^SystemCallFilter=(.*)$/gm)].map((m) =>
    m[1].trim()
  );
  assert.ok(lines.length > 0 && !lines[0].startsWith("~"), "an allow list");
  const allowed = new Set<string>();
  for (const line of lines) {
    const deny = line.startsWith("~");
    for (const set of line.replace(/^~/, "").split(/\s+/)) {
      for (const call of await expand(set)) {
        if (deny) allowed.delete(call);
        else allowed.add(call);
      }
    }
  }
  return allowed;
}

Deno.test("the system call filter lets through kexec_file_load alone of @reboot", async () => {
  const reboot = await expand("@reboot");
  assert.deepEqual(reboot.sort(), ["kexec_file_load", "kexec_load", "reboot"]);
  // Not in the services' set: the unit has to name it.
  assert.ok(!(await expand("@system-service")).includes("kexec_file_load"));
  const unit = await generatedUnit();
  const allowed = await allowedCalls(unit);
  assert.deepEqual(reboot.filter((c) => allowed.has(c)), ["kexec_file_load"]);
  for (const call of ["pkey_alloc", "pkey_mprotect", "mprotect", "clone3"]) {
    assert.ok(allowed.has(call), `${call} is allowed (V8, threads)`);
  }
  for (
    const call of [
      "setpriority", // @resources
      "sched_setaffinity",
      "chown", // @privileged
      "setuid",
      "capset",
      "mount",
      "ptrace", // not in @system-service
      "init_module",
    ]
  ) {
    assert.ok(!allowed.has(call), `${call} is refused`);
  }
  assert.match(unit, /^SystemCallErrorNumber=EPERM$/m);
  // The check can fail: with the whole @reboot group, reboot gets through.
  const broad = await allowedCalls(
    unit.replace(
      /^SystemCallFilter=kexec_file_load$/m,
      "SystemCallFilter=@reboot",
    ),
  );
  assert.ok(broad.has("reboot"));
});
