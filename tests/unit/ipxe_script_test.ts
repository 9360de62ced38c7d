import assert from "node:assert/strict";
import { IpxeError, runScriptSource } from "../../lib/ipxe/mod.ts";
import type { KexecPlan, LocalBootPlan } from "../../lib/plan.ts";
import { kexecPlan } from "../test_util.ts";

const URL0 = "http://h/dir/boot.ipxe";
const noFetch = () => Promise.reject(new Error("no network in this test"));

interface Outcome {
  plan?: KexecPlan;
  local?: LocalBootPlan;
  error?: string;
  lines: string[];
}

async function run(
  source: string | Uint8Array,
  settings: Record<string, string> = {},
): Promise<Outcome> {
  const lines: string[] = [];
  try {
    const plan = await runScriptSource(source, {
      url: URL0,
      fetch: noFetch,
      settings,
      print: (l) => lines.push(l),
    });
    if (plan.action === "local-boot") return { local: plan, lines };
    return { plan, lines };
  } catch (e) {
    assert.ok(e instanceof IpxeError, String(e));
    return { error: e.message, lines };
  }
}

Deno.test("magic line: #!ipxe or #!gpxe followed by whitespace", async () => {
  assert.equal(
    (await run("#!gpxe\nkernel http://h/k\nboot\n")).plan?.kernel.url,
    "http://h/k",
  );
  assert.equal(
    (await run("#!ipxe\r\nkernel http://h/k\r\nboot")).plan?.kernel.url,
    "http://h/k",
  );
  assert.match((await run("#!ipxeX\nboot\n")).error!, /is not an iPXE script/);
  assert.match(
    (await run("kernel http://h/k\nboot\n")).error!,
    /is not an iPXE script/,
  );
  assert.match(
    (await run("\uFEFF#!ipxe\nboot\n")).error!,
    /is not an iPXE script/,
  );
});

Deno.test("tokenising: whitespace only, no quoting, literal backslashes", async () => {
  const { plan } = await run(
    "#!ipxe\nkernel http://h/k \"quoted   string\" 'x'\ta\\b\nboot\n",
  );
  assert.equal(plan?.cmdline, `"quoted string" 'x' a\\b`);
});

Deno.test("comments: a token starting with # ends the line anywhere", async () => {
  const { plan, lines } = await run(
    "#!ipxe\n# a comment\necho x#y # c\n  #indented\nkernel http://h/k a #b c\nboot\n",
  );
  assert.deepEqual(lines, ["x#y"]);
  assert.equal(plan?.cmdline, "a");
});

Deno.test("CRLF and backslash continuations", async () => {
  const { plan, lines } = await run(
    "#!ipxe\r\necho a \\\r\nb\r\nkernel http://h/k x\\\ny \\\n z\r\nboot\r\n",
  );
  assert.deepEqual(lines, ["a b"]);
  assert.equal(plan?.cmdline, "xy z");
  const eof = await run("#!ipxe\necho a \\");
  assert.match(
    eof.error!,
    /line 2: the script ends inside a \\ line continuation/,
  );
});

Deno.test("labels: a labelled command runs when reached, indented labels work", async () => {
  const { lines } = await run(
    "#!ipxe\n:first echo one\n   :second\techo two\n:third\necho three\n",
  );
  assert.deepEqual(lines, ["one", "two", "three"]);
});

Deno.test("separators: ||, &&, ; and empty commands", async () => {
  const { lines, error } = await run(
    [
      "#!ipxe",
      "iseq 1 2 || echo or-ran",
      "iseq 1 1 && echo and-ran",
      "iseq 1 2 ; echo always-ran",
      "iseq 1 2 && echo skipped || echo fallback",
      "iseq 1 1 || echo skipped2 || echo skipped3",
      "echo a&&b x;y",
      "iseq 1 2 || ;",
      "echo end",
    ].join("\n"),
  );
  assert.deepEqual(lines.filter((l) => !l.startsWith("iseq")), [
    "or-ran",
    "and-ran",
    "always-ran",
    "fallback",
    "a&&b x;y",
    "end",
  ]);
  assert.match(
    error!,
    /^Script http:\/\/h\/dir\/boot.ipxe ended without booting a kernel$/,
  );
});

Deno.test("status rule: an unhandled failure ends the script with that failure", async () => {
  const a = await run("#!ipxe\niseq 1 2 && echo x\necho not reached\n");
  assert.deepEqual(a.lines, ['iseq: "1" is not "2"']);
  assert.match(
    a.error!,
    /^Script http:\/\/h\/dir\/boot.ipxe line 2: iseq: "1" is not "2"$/,
  );
  const b = await run("#!ipxe\nnosuchcommand arg\necho not reached\n");
  assert.match(b.error!, /line 2: nosuchcommand: command not found$/);
  const c = await run("#!ipxe\nImgfree\n");
  assert.match(c.error!, /Imgfree: command not found/);
  const d = await run("#!ipxe\nimgverify k k.sig\n");
  assert.match(d.error!, /imgverify: command not found/);
});

Deno.test("goto: rescans from the top, abandons the rest of the line, fails on a missing label", async () => {
  const { lines, error } = await run(
    [
      "#!ipxe",
      "set n:int32 0",
      ":top",
      "inc n",
      "iseq ${n} 3 && goto done ||",
      "goto top ; echo never",
      ":done echo done at ${n}",
      "goto ${missing}",
    ].join("\n"),
  );
  assert.deepEqual(
    lines.filter((l) => !l.startsWith("iseq") && !l.startsWith("goto")),
    ["done at 3"],
  );
  assert.match(error!, /line 8: goto: label "" not found$/);
});

Deno.test("exit: ends the script with its status", async () => {
  // From the first script, iPXE ends and the firmware boots its next device.
  const a = await run("#!ipxe\necho before\nexit\necho after\n");
  assert.deepEqual(a.lines, ["before"]);
  assert.equal(a.error, undefined);
  assert.deepEqual(a.local, {
    action: "local-boot",
    reason:
      "Script http://h/dir/boot.ipxe line 3: exit: the script handed the machine back to the firmware's next boot device",
  });
  // Falling off the end is not an exit: nothing booted is an error.
  const end = await run("#!ipxe\necho nothing\n");
  assert.match(end.error!, /ended without booting a kernel/);
  const b = await run("#!ipxe\nexit 3 ; echo after\n");
  assert.deepEqual(b.lines, []);
  assert.match(b.error!, /line 2: exit: the script exited with status 3$/);
  const c = await run("#!ipxe\nexit x\n");
  assert.match(c.error!, /exit: "x": invalid integer value/);
});

Deno.test("echo: getopt -n and --", async () => {
  const { lines } = await run(
    "#!ipxe\necho -n a\necho -n b\necho c\necho -- -n\necho --\necho -x || echo bad option\n",
  );
  assert.deepEqual(lines.slice(0, 3), ["abc", "-n", ""]);
  assert.match(lines[3], /^echo: unrecognised option "-x"/);
  assert.equal(lines[4], "bad option");
});

Deno.test("empty expansions keep their spaces; no command line gives an empty one", async () => {
  const a = await run("#!ipxe\nkernel http://h/k ${a} ${b} x ${c}\nboot\n");
  assert.equal(a.plan?.cmdline, "  x ");
  const b = await run("#!ipxe\nkernel http://h/k\nboot\n");
  assert.equal(b.plan?.cmdline, "");
});

Deno.test("UTF-8 and odd bytes stay byte-exact", async () => {
  const source = new Uint8Array([
    ...new TextEncoder().encode(
      "#!ipxe\nset s é\necho ${s:hex}\nkernel http://h/k ",
    ),
    0xc3,
    0xa9,
    10,
    ...new TextEncoder().encode("boot\n"),
  ]);
  const { plan, lines } = await run(source);
  assert.deepEqual(lines, ["c3:a9"]);
  assert.equal(plan?.cmdline, "é");
});

Deno.test("interactive commands never block", async () => {
  const slept: number[] = [];
  const lines: string[] = [];
  const plan = kexecPlan(
    await runScriptSource(
      [
        "#!ipxe",
        "menu Pick one",
        "item --gap Section",
        "item first First entry",
        "item --default second Second entry",
        "choose --default first sel",
        "echo chose ${sel}",
        "menu Again",
        "item a A",
        "item b B",
        "choose --timeout 100 sel2",
        "echo timed out to ${sel2}",
        "menu Third",
        "item x X",
        "choose sel3 || echo choose needs a default",
        "menu Fourth",
        "item p P",
        "item --default q Q",
        "choose sel4",
        "echo item default ${sel4}",
        "menu Fifth",
        "item r R",
        "choose --default nosuch sel5 || echo unknown default fails",
        "prompt --timeout 10 Press a key || echo prompt failed",
        "read v || echo read failed",
        "sleep 2",
        "sleep 0x1",
        "sleep two || echo bad sleep",
        "sleep 3600",
        "sleep 3601 || echo long sleep refused",
        "sleep 4294967295 || echo huge sleep refused",
        "dhcp && ifopen net0 && ifconf && ifstat && route && ntp pool.ntp.org && sync && echo network ok",
        "kernel http://h/k",
        "boot",
      ].join("\n"),
      {
        url: URL0,
        fetch: noFetch,
        sleep: (ms) => {
          slept.push(ms);
          return Promise.resolve();
        },
        print: (l) => lines.push(l),
      },
    ),
  );
  assert.equal(plan.kernel.url, "http://h/k");
  assert.deepEqual(slept, [2000, 1000, 3_600_000]);
  for (
    const want of [
      "chose first",
      "timed out to a",
      "choose needs a default",
      "item default q",
      "unknown default fails",
      "Press a key",
      "prompt failed",
      "read failed",
      "bad sleep",
      "sleep: 3601 s is longer than the 3600 s a script may sleep",
      "long sleep refused",
      "huge sleep refused",
      "network ok",
    ]
  ) {
    assert.ok(
      lines.includes(want),
      `missing ${want} in ${JSON.stringify(lines)}`,
    );
  }
});

Deno.test("commands that leave the loader fail and say so", async () => {
  for (
    const [cmd, text] of [
      ["poweroff", "the script asked to power off"],
      ["reboot", "the script asked to reboot"],
      ["shell", "interactive shell"],
      ["sanboot http://san/disk", "booting from a SAN target is not supported"],
      ["sanhook iscsi:10.0.0.1::::iqn.x", "SAN devices are not supported"],
      ["login", "interactive login"],
    ]
  ) {
    const { error } = await run(`#!ipxe\n${cmd}\n`);
    assert.ok(error?.includes(text), `${cmd}: ${error}`);
    assert.ok(error?.includes(`line 2: ${cmd.split(" ")[0]}:`), error);
  }
  const handled = await run(
    "#!ipxe\nsanboot http://san/disk || echo no SAN\nkernel http://h/k\nboot\n",
  );
  assert.equal(handled.plan?.kernel.url, "http://h/k");
});

Deno.test("sanboot without a root path boots the local disk, from any depth", async () => {
  const a = await run("#!ipxe\nsanboot --no-describe --drive 0x80\nboot\n");
  assert.deepEqual(a.local, {
    action: "local-boot",
    reason:
      "Script http://h/dir/boot.ipxe line 2: sanboot: boot from the local disk (drive 0x80)",
  });
  // Like a kernel boot, it unwinds every script: `||` does not run.
  const b = await run("#!ipxe\nsanboot || kernel http://h/k\nboot\n");
  assert.match(b.local!.reason, /line 2: sanboot: boot from the local disk$/);
  const bad = await run("#!ipxe\nsanboot --bogus\n");
  assert.match(bad.error!, /sanboot: unrecognised option "--bogus"/);
});

Deno.test("caps: an endless goto loop ends with an error naming the cap", async () => {
  const started = Date.now();
  const lines: string[] = [];
  await assert.rejects(
    runScriptSource("#!ipxe\n:loop\necho spin\ngoto loop\n", {
      url: URL0,
      fetch: noFetch,
      maxSteps: 500,
      print: (l) => lines.push(l),
    }),
    (e) =>
      e instanceof IpxeError &&
      /more than 500 commands executed/.test(e.message),
  );
  // Three commands per turn: the (empty) `:loop` line, echo and goto.
  assert.equal(lines.length, 166);
  assert.ok(Date.now() - started < 5000);
});

Deno.test("error messages are redacted", async () => {
  const { error } = await runScriptSource("#!ipxe\nexit 1\n", {
    url: "http://h/x?api_key=SECRETSECRET&arch=x86_64",
    fetch: noFetch,
  }).then(() => ({ error: "" }), (e: Error) => ({ error: e.message }));
  assert.ok(!error.includes("SECRETSECRET"), error);
  assert.match(error, /api_key=REDACTED/);
});

Deno.test("cpuid: long mode on x86_64, command not found elsewhere", async () => {
  const script =
    "#!ipxe\ncpuid --ext 29 && set arch x86_64 || set arch i386\necho ${arch}\n";
  const seen: string[] = [];
  for (const buildarch of ["x86_64", "arm64"]) {
    const lines: string[] = [];
    await runScriptSource(script, {
      url: URL0,
      fetch: noFetch,
      buildarch,
      print: (l) => lines.push(l),
    })
      .catch(() => {});
    seen.push(lines.at(-1)!);
  }
  assert.deepEqual(seen, ["x86_64", "i386"]);
});

Deno.test("NUL bytes end a line like in iPXE's C strings", async () => {
  const { lines } = await run(
    "#!ipxe\necho a\0b\nset x:hex 61:00:62\necho [${x:string}]\n",
  );
  assert.deepEqual(lines, ["a", "[a]"]);
});

Deno.test("goto in a large script stays fast", async () => {
  const filler = "echo filler\n".repeat(20_000);
  const started = Date.now();
  const { error } = await run(
    `#!ipxe\nset n:int32 0\n:top\ninc n\niseq \${n} 2000 && exit 5 ||\ngoto end\n${filler}:end goto top\n`,
  );
  assert.match(error!, /exited with status 5/);
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});

Deno.test("error messages stay on one line", async () => {
  const { error } = await run("#!ipxe\nbad\x1b[31mcommand\n");
  assert.equal(
    error,
    "Script http://h/dir/boot.ipxe line 2: bad\\x1b[31mcommand: command not found",
  );
  const fetchError = await runScriptSource("#!ipxe\nchain http://h/x\n", {
    url: URL0,
    fetch: () => Promise.reject(new Error("first line\nsecond line")),
  }).catch((e: Error) => e.message);
  assert.equal(
    fetchError,
    "Script http://h/dir/boot.ipxe line 2: chain http://h/x: first line\\x0asecond line",
  );
});
