/**
 * Initrd assembly: newc headers byte by byte (iPXE's rules), the 4096-byte
 * layout with zero padding, and Debian's `cpio` reading every part.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  assembleInitrd,
  cpioHeaders,
  INITRD_ALIGN,
} from "../../lib/stage/initrd.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

interface Entry {
  mode: number;
  nlink: number;
  filesize: number;
  namesize: number;
  name: string;
  /** Header + name + padding length. */
  length: number;
  fields: string[];
}

/** Parses consecutive newc headers (test-side reader, independent of the writer). */
function parseHeaders(bytes: Uint8Array): Entry[] {
  const out: Entry[] = [];
  let at = 0;
  while (at < bytes.length) {
    const head = text(bytes.subarray(at, at + 110));
    assert.equal(head.slice(0, 6), "070701");
    const fields = Array.from(
      { length: 13 },
      (_, i) => head.slice(6 + i * 8, 14 + i * 8),
    );
    const num = (i: number) => parseInt(fields[i], 16);
    const namesize = num(11);
    const name = text(bytes.subarray(at + 110, at + 110 + namesize - 1));
    assert.equal(bytes[at + 110 + namesize - 1], 0, "name is NUL-terminated");
    const length = (110 + namesize + 3) & ~3;
    for (let i = at + 110 + namesize; i < at + length; i++) {
      assert.equal(bytes[i], 0, "name padding is NUL");
    }
    out.push({
      mode: num(1),
      nlink: num(4),
      filesize: num(6),
      namesize,
      name,
      length,
      fields,
    });
    at += length;
  }
  return out;
}

Deno.test("cpio header: one file entry with iPXE's fields", () => {
  const h = cpioHeaders({ path: "/etc/x.conf", mode: 0o600, mkdir: 0 }, 5);
  assert.equal(h.length, 124); // 110 + 11 + NUL = 122 → 124
  assert.equal(
    text(h.subarray(0, 110)),
    "070701" + "00000000" + "00008180" + "00000000" + "00000000" +
      "00000001" + "00000000" + "00000005" + "00000000" + "00000000" +
      "00000000" + "00000000" + "0000000c" + "00000000",
  );
  const [e] = parseHeaders(h);
  assert.equal(e.name, "/etc/x.conf");
  assert.equal(e.mode, 0o100600);
});

Deno.test("cpio header: padding always leaves at least one NUL", () => {
  // 110 + 2 = 112 is a multiple of 4: the NUL needs 4 more bytes.
  const h = cpioHeaders({ path: "ab", mode: 0o644, mkdir: 0 }, 0);
  assert.equal(h.length, 116);
  assert.deepEqual([...h.subarray(112)], [0, 0, 0, 0]);
});

Deno.test("cpio header: mkdir=N adds the nearest N parents, mkdir=-1 all", () => {
  const one = parseHeaders(
    cpioHeaders({ path: "/a/b/c/f", mode: 0o755, mkdir: 1 }, 9),
  );
  assert.deepEqual(one.map((e) => [e.name, e.mode, e.filesize]), [
    ["/a/b/c", 0o40755, 0],
    ["/a/b/c/f", 0o100755, 9],
  ]);
  const all = parseHeaders(
    cpioHeaders({ path: "/a/b/c/f", mode: 0o644, mkdir: -1 }, 9),
  );
  assert.deepEqual(all.map((e) => [e.name, e.mode, e.filesize]), [
    ["/a", 0o40755, 0],
    ["/a/b", 0o40755, 0],
    ["/a/b/c", 0o40755, 0],
    ["/a/b/c/f", 0o100644, 9],
  ]);
  // More than there are parents: capped.
  const many = parseHeaders(
    cpioHeaders({ path: "/a/f", mode: 0o644, mkdir: 7 }, 1),
  );
  assert.deepEqual(many.map((e) => e.name), ["/a", "/a/f"]);
  for (const e of [...one, ...all]) assert.equal(e.nlink, 1);
});

Deno.test("cpio header: a path ending in / is a directory entry", () => {
  const entries = parseHeaders(
    cpioHeaders({ path: "/var/lib/", mode: 0o644, mkdir: 1 }, 0),
  );
  assert.deepEqual(entries.map((e) => [e.name, e.mode]), [
    ["/var", 0o40755],
    ["/var/lib", 0o40755],
  ]);
});

Deno.test("cpio header: relative name and empty path", () => {
  const [e] = parseHeaders(
    cpioHeaders({ path: "config.ign", mode: 0o644, mkdir: 0 }, 3),
  );
  assert.equal(e.name, "config.ign");
  assert.equal(cpioHeaders({ path: "/", mode: 0o644, mkdir: 0 }, 3).length, 0);
});

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; stdin?: Uint8Array } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin) {
    const w = child.stdin.getWriter();
    await w.write(options.stdin);
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("assembled initrd: layout, zero padding, sha256, and cpio reads every part", async () => {
  const dir = await Deno.makeTempDir({ prefix: "initrd_test_" });
  try {
    // Part 0: a gzip'd newc archive made by Debian's cpio (with trailer).
    await Deno.mkdir(`${dir}/src/etc`, { recursive: true });
    await Deno.writeTextFile(`${dir}/src/etc/os-release`, "ID=test\n");
    const made = await run("sh", [
      "-c",
      "cd src && echo etc/os-release | cpio -o -H newc --quiet | gzip -n > ../p0.gz",
    ], { cwd: dir });
    assert.equal(made.code, 0, made.stderr);
    // Part 1: a script wrapped by us, mode 0755, one parent directory.
    const script = "#!/bin/sh\necho hi\n"; // 18 bytes: data not 4-aligned
    await Deno.writeTextFile(`${dir}/p1`, script);
    // Part 2: odd-sized raw data wrapped with all parents.
    const raw = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
    await Deno.writeFile(`${dir}/p2`, raw);

    const result = await assembleInitrd([
      { path: `${dir}/p0.gz` },
      {
        path: `${dir}/p1`,
        cpio: { path: "/usr/bin/hi", mode: 0o755, mkdir: 1 },
      },
      {
        path: `${dir}/p2`,
        cpio: { path: "/opt/x/data.bin", mode: 0o600, mkdir: -1 },
      },
    ], `${dir}/initrd`);

    const bytes = await Deno.readFile(`${dir}/initrd`);
    assert.equal(result.size, bytes.length);
    assert.equal(
      result.sha256,
      createHash("sha256").update(bytes).digest("hex"),
    );
    const p0 = await Deno.readFile(`${dir}/p0.gz`);
    // Offsets: 0, then the next multiples of 4096.
    assert.equal(result.layout[0].offset, 0);
    assert.equal(result.layout[0].headerSize, 0);
    assert.deepEqual(bytes.subarray(0, p0.length), p0);
    let prevEnd = 0;
    for (const part of result.layout) {
      assert.equal(part.offset % INITRD_ALIGN, 0);
      assert.ok(part.offset >= prevEnd);
      assert.ok(part.offset - prevEnd < INITRD_ALIGN, "no wasted page");
      assert.ok(
        bytes.subarray(prevEnd, part.offset).every((b) => b === 0),
        "padding is zeros",
      );
      prevEnd = part.dataOffset + part.size;
    }
    assert.equal(prevEnd, bytes.length, "no padding after the last image");
    assert.equal(result.layout[1].offset, 4096);
    assert.equal(result.layout[2].offset, 8192);
    assert.deepEqual(
      bytes.subarray(result.layout[2].dataOffset),
      raw,
    );

    // Part 0 as is: gunzip | cpio -t lists it.
    const list0 = await run("sh", [
      "-c",
      `head -c ${p0.length} initrd | gunzip | cpio -t --quiet`,
    ], { cwd: dir });
    assert.equal(list0.code, 0, list0.stderr);
    assert.equal(list0.stdout.trim(), "etc/os-release");

    // Parts 1 and 2 have no trailer (like iPXE): add one, then cpio -i must
    // find every header, name and data where newc says they are.
    const trailer = (await new Deno.Command("sh", {
      args: ["-c", "cpio -o -H newc --quiet < /dev/null"],
      stdout: "piped",
    }).output()).stdout;
    for (
      const [i, expected] of [[1, ["usr/bin", "usr/bin/hi"]], [2, [
        "opt",
        "opt/x",
        "opt/x/data.bin",
      ]]] as const
    ) {
      const part = result.layout[i];
      const end = (part.dataOffset + part.size + 3) & ~3;
      const slice = new Uint8Array(end - part.offset + trailer.length);
      slice.set(bytes.subarray(part.offset, part.dataOffset + part.size));
      slice.set(trailer, end - part.offset);
      const out = `${dir}/out${i}`;
      await Deno.mkdir(out);
      const listed = await run("cpio", ["-t", "--quiet"], { stdin: slice });
      assert.equal(listed.code, 0, listed.stderr);
      assert.deepEqual(
        listed.stdout.trim().split("\n").map((n) => n.replace(/^\//, "")),
        expected,
      );
      const extracted = await run("cpio", [
        "-i",
        "-d",
        "--quiet",
        "--no-absolute-filenames",
      ], { cwd: out, stdin: slice });
      assert.equal(extracted.code, 0, extracted.stderr);
    }
    assert.equal(await Deno.readTextFile(`${dir}/out1/usr/bin/hi`), script);
    assert.equal(
      (await Deno.stat(`${dir}/out1/usr/bin/hi`)).mode! & 0o777,
      0o755,
    );
    assert.ok((await Deno.stat(`${dir}/out1/usr/bin`)).isDirectory);
    assert.deepEqual(await Deno.readFile(`${dir}/out2/opt/x/data.bin`), raw);
    assert.equal(
      (await Deno.stat(`${dir}/out2/opt/x/data.bin`)).mode! & 0o777,
      0o600,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assembled initrd: a single raw image is copied unchanged", async () => {
  const dir = await Deno.makeTempDir({ prefix: "initrd_test_" });
  try {
    const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => i % 251);
    await Deno.writeFile(`${dir}/a`, data);
    const r = await assembleInitrd([{ path: `${dir}/a` }], `${dir}/initrd`);
    assert.equal(r.size, data.length);
    assert.deepEqual(await Deno.readFile(`${dir}/initrd`), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assembled initrd: one verified raw image is moved into place, not copied; the pin and its identity are checked first", async () => {
  const dir = await Deno.makeTempDir({ prefix: "initrd_test_" });
  try {
    const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => i % 251);
    const sha256 = createHash("sha256").update(data).digest("hex");
    const write = async (name: string) => {
      await Deno.writeFile(`${dir}/${name}`, data);
      const { dev, ino, size, mtime } = await Deno.lstat(`${dir}/${name}`);
      return { dev, ino: ino!, size, mtimeMs: mtime!.getTime() };
    };
    const names = () => [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    // A pin that does not match: Verify, nothing moved.
    const identity = await write("a");
    await assert.rejects(
      assembleInitrd(
        [{ path: `${dir}/a`, sha256: sha256.toUpperCase(), identity }],
        `${dir}/initrd`,
        { sha256: "0".repeat(64) },
      ),
      (err) =>
        err instanceof BootError && err.exitCode === ExitCode.Verify &&
        err.message ===
          `sha256 mismatch for the assembled initrd: expected ${
            "0".repeat(64)
          }, got ${sha256}`,
    );
    assert.deepEqual(names(), ["a"]);
    // Not the file that was verified: Disk, nothing moved.
    await assert.rejects(
      assembleInitrd(
        [{ path: `${dir}/a`, sha256, identity: { ...identity, ino: 1 } }],
        `${dir}/initrd`,
      ),
      (err) =>
        err instanceof BootError && err.exitCode === ExitCode.Disk &&
        /a is not the file that was verified/.test(err.message),
    );
    assert.deepEqual(names(), ["a"]);
    const r = await assembleInitrd(
      [{ path: `${dir}/a`, sha256: sha256.toUpperCase(), identity }],
      `${dir}/initrd`,
      { sha256 },
    );
    assert.deepEqual(r, {
      path: `${dir}/initrd`,
      size: data.length,
      sha256,
      identity,
      layout: [{ offset: 0, headerSize: 0, dataOffset: 0, size: data.length }],
    });
    // The same file, under its new name; the old name is gone.
    assert.equal((await Deno.lstat(`${dir}/initrd`)).ino, identity.ino);
    assert.deepEqual(names(), ["initrd"]);
    assert.deepEqual(await Deno.readFile(`${dir}/initrd`), data);
    // Wrapped in cpio, or one of two: assembled (a new file) as before.
    const b = await write("b");
    const wrapped = await assembleInitrd(
      [{
        path: `${dir}/b`,
        sha256,
        identity: b,
        cpio: { path: "x", mode: 0o644, mkdir: 0 },
      }],
      `${dir}/initrd2`,
    );
    assert.notEqual(wrapped.identity.ino, b.ino);
    assert.ok(wrapped.size > data.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assembled initrd: a part that is a link, or not the verified file, is refused (Disk) and nothing is left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "initrd_test_" });
  try {
    await Deno.writeTextFile(`${dir}/a`, "verified bytes");
    const { dev, ino, size, mtime } = await Deno.lstat(`${dir}/a`);
    const identity = { dev, ino: ino!, size, mtimeMs: mtime!.getTime() };
    await Deno.symlink(`${dir}/a`, `${dir}/link`);
    await Deno.writeTextFile(`${dir}/b`, "other bytes");
    for (
      const [part, why] of [
        [{ path: `${dir}/link` }, /link is not a regular file$/],
        [{ path: `${dir}/b`, identity }, /b is not the file that was verified/],
      ] as const
    ) {
      await assert.rejects(
        assembleInitrd([{ path: `${dir}/a` }, part], `${dir}/initrd`),
        (err: unknown) => {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Disk);
          assert.match(err.message, why);
          return true;
        },
      );
      const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(left, ["a", "b", "link"]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("assembled initrd: no descriptor stays open on it (kexec_file_load refuses a file open for writing)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "initrd_test_" });
  const openFiles = () =>
    [...Deno.readDirSync("/proc/self/fd")].map((e) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      } catch {
        return "";
      }
    }).filter((target) => target.startsWith(dir));
  try {
    await Deno.writeTextFile(`${dir}/a`, "bytes");
    await assembleInitrd([{ path: `${dir}/a` }], `${dir}/initrd`);
    assert.deepEqual(openFiles(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
