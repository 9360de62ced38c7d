import assert from "node:assert/strict";
import { IpxeError, runScriptSource } from "../../lib/ipxe/mod.ts";
import {
  formatSettingValue,
  parseSettingValue,
} from "../../lib/ipxe/setting_types.ts";
import { Settings } from "../../lib/ipxe/settings.ts";

/** Runs a script body (after the magic line) and returns what it echoed and how it ended. */
async function echoes(body: string, settings: Record<string, string> = {}) {
  const lines: string[] = [];
  let error: string | undefined;
  try {
    await runScriptSource(`#!ipxe\n${body}`, {
      url: "http://h/dir/boot.ipxe",
      fetch: () => Promise.reject(new Error("no network in this test")),
      settings,
      print: (line) => lines.push(line),
    });
  } catch (e) {
    assert.ok(e instanceof IpxeError, String(e));
    error = e.message;
  }
  return { lines, error };
}

Deno.test("expansion: nested, rescanned, and literal dollar forms", async () => {
  const { lines } = await echoes(
    [
      "set b X",
      "set aX nested",
      "echo ${a${b}}",
      "set d $",
      "echo ${d}{b}",
      "echo $$ $${b} $ ${b ${unclosed x}y }${b}",
      "echo ${b${unclosed}",
    ].join("\n"),
  );
  assert.deepEqual(lines, [
    "nested",
    "X",
    "$$ $X $ ${b ${unclosed x}y }X",
    "${b",
  ]);
});

Deno.test("expansion: types of the iPXE table", async () => {
  const { lines } = await echoes(
    [
      "set s hello world/?&=+",
      "echo ${s:uristring}",
      "set ab ab",
      "echo ${ab:hex} ${ab:hexhyp} ${ab:hexraw} ${ab:base64}",
      "echo ${mac} ${mac:hexhyp} ${net0/mac:hexraw} ${netX/mac}",
      "set n:int32 5",
      "echo ${n} ${n:uint32} ${n:hex}",
      "set m:int32 -1",
      "echo = ${m} ${m:uint32} ${m:int8}",
      "set b:uint8 0x2a",
      "echo ${b} ${b:int8}",
      "set a:ipv4 10.1.2.3",
      "echo ${a} ${a:hex}",
      "set u:uuid 01234567-89AB-cdef-0123-456789abcdef",
      "echo ${u}",
      "echo [${s:nosuchtype}] [${net1/mac}] [${nosuchblock/s}] [${unset}]",
    ].join("\n"),
    { "net0/mac": "52:54:00:12:34:56" },
  );
  assert.deepEqual(lines, [
    "hello%20world%2F%3F%26%3D%2B",
    "61:62 61-62 6162 YWI=",
    "52:54:00:12:34:56 52-54-00-12-34-56 525400123456 52:54:00:12:34:56",
    "5 0x5 00:00:00:05",
    "= -1 0xffffffff -1",
    "0x2a 42",
    "10.1.2.3 0a:01:02:03",
    "01234567-89ab-cdef-0123-456789abcdef",
    "[] [] [] []",
  ]);
});

Deno.test("built-ins: buildarch and platform, overridable by presets", async () => {
  const a = await echoes("echo ${buildarch} ${platform} ${cwuri} ${cwduri}");
  assert.match(
    a.lines[0],
    /^(x86_64 pcbios|arm64 efi) http:\/\/h\/dir\/boot.ipxe http:\/\/h\/dir\/$/,
  );
  const b = await echoes("echo ${buildarch} ${platform}", {
    buildarch: "arm64",
    platform: "efi",
  });
  assert.deepEqual(b.lines, ["arm64 efi"]);
});

Deno.test("set: joins words, empty deletes, typed values must parse", async () => {
  const ok = await echoes(
    [
      "set k ${k} x",
      "echo [${k}]",
      "set k",
      "echo [${k}]",
      "set h #",
      "echo [${h}]",
      "set v a   b",
      "echo ${v}",
    ]
      .join("\n"),
  );
  assert.deepEqual(ok.lines, ["[ x]", "[]", "[]", "a b"]);
  const bad = await echoes("set y:int32 abc\necho not reached");
  assert.deepEqual(bad.lines, [
    'set: Could not store "y:int32": invalid integer value "abc"',
  ]);
  assert.match(
    bad.error!,
    /^Script http:\/\/h\/dir\/boot.ipxe line 2: set: Could not store/,
  );
  const badType = await echoes("set y:nosuchtype 1");
  assert.match(badType.error!, /unknown setting type "nosuchtype"/);
  const badMac = await echoes("set net0/mac zz");
  assert.match(badMac.error!, /invalid hex value/);
});

Deno.test("clear, inc, isset, iseq", async () => {
  const { lines, error } = await echoes(
    [
      "set x 1",
      "clear x",
      "isset ${x} || echo x is unset",
      "isset literal && echo literal is set",
      "inc i",
      "inc i 4",
      "echo i=${i}",
      "set j:int32 -1",
      "inc j",
      "echo j=${j}",
      "iseq ${nothing} ${nope} && echo empty equals empty",
      "iseq A a || echo case matters",
      "iseq a || echo usage fails",
      "set s 5",
      "inc s || echo inc of a string fails",
    ].join("\n"),
  );
  assert.deepEqual(lines.filter((l) => !l.includes(":")), [
    "x is unset",
    "literal is set",
    "i=5",
    "j=0",
    "empty equals empty",
    "case matters",
    "usage fails",
    "inc of a string fails",
  ]);
  assert.match(error!, /ended without booting a kernel/);
});

Deno.test("expansion is bounded for self-referencing values", async () => {
  const loop = await echoes("echo ${a}", { a: "x${a}" });
  assert.match(
    loop.error!,
    /line 2: expanding "\$\{a\}" needed more than 10000 substitutions/,
  );
  const grow = await echoes("echo ${a}", { a: "${a}${a}" });
  assert.match(
    grow.error!,
    /line 2: expanding .* (grew past|needed more than)/,
  );
});

Deno.test("Settings: search order and typed storage", () => {
  const s = new Settings();
  s.storeFormatted("net0/ip", "10.0.0.2");
  s.storeFormatted("net0.dhcp/hostname", "from-dhcp");
  assert.equal(
    s.expand("${ip} ${net0/hostname} ${hostname}"),
    "10.0.0.2 from-dhcp from-dhcp",
  );
  s.storeFormatted("hostname", "user");
  assert.equal(s.expand("${hostname} ${net0/hostname}"), "user from-dhcp");
  assert.equal(
    formatSettingValue("uint16", parseSettingValue("uint16", "0")),
    "0x0",
  );
  assert.throws(() => parseSettingValue("ipv4", "1.2.3"), /invalid IPv4/);
  assert.equal(
    formatSettingValue("ipv6", parseSettingValue("ipv6", "fe80::1")),
    "fe80::1",
  );
});

Deno.test("settings memory and command size are bounded", async () => {
  const doubling = await echoes(
    "set a 0123456789abcdef\n:l\nset a ${a}${a}\ngoto l\n",
  );
  assert.match(
    doubling.error!,
    /line 4: expanding "\$\{a\}\$\{a\}" grew past 1048576 bytes/,
  );
  const hoard = await echoes(
    "set a 0123456789abcdef\nset n:int32 0\n:g\niseq ${n} 16 && goto fill ||\ninc n\nset a ${a}${a}\ngoto g\n" +
      ":fill\ninc i\nset v${i} ${a}\ngoto fill\n",
  );
  assert.match(
    hoard.error!,
    /line 11: settings would hold more than 16777216 bytes/,
  );
  const wide = await echoes(
    "set a 0123456789abcdef\nset n:int32 0\n:g\niseq ${n} 15 && goto wide ||\ninc n\nset a ${a}${a}\ngoto g\n" +
      `:wide\necho ${"${a} ".repeat(10)}\n`,
  );
  assert.match(
    wide.error!,
    /line 10: the command grew past 4194304 bytes after expansion/,
  );
});

Deno.test("expand matches iPXE's character-by-character scan on random strings", () => {
  const values: Record<string, string> = {
    a: "A",
    b: "${",
    c: "}",
    ab: "X${a}",
    "": "E",
  };
  const s = new Settings();
  for (const [k, v] of Object.entries(values)) {
    if (k !== "") s.storeFormatted(k, v);
  }
  // Reference: expand_settings() of core/settings.c, transcribed literally.
  const reference = (text: string): string => {
    let str = text;
    for (let n = 0; n < 1000; n++) {
      let start = -1;
      let end = -1;
      for (let i = 0; i < str.length; i++) {
        if (str[i] === "$" && str[i + 1] === "{") start = i;
        if (start >= 0 && str[i] === "}") {
          end = i;
          break;
        }
      }
      if (end < 0) return str;
      const name = str.slice(start + 2, end);
      const value = name === "" ? "" : values[name] ?? "";
      str = str.slice(0, start) + value + str.slice(end + 1);
    }
    return "LOOP";
  };
  const alphabet = ["$", "{", "}", "a", "b", "c", "${", "}"];
  let seed = 0x9e3779b9;
  const rand = (n: number) => {
    // xorshift32
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let t = 0; t < 5000; t++) {
    let text = "";
    const len = rand(12);
    for (let i = 0; i < len; i++) text += alphabet[rand(alphabet.length)];
    const want = reference(text);
    if (want === "LOOP") continue;
    assert.equal(s.expand(text), want, JSON.stringify(text));
  }
});
