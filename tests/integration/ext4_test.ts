/**
 * The read-only ext4 reader against file systems `mkfs.ext4 -d` builds:
 * block sizes, extents and ext2-style block maps, 32 and 64 bit, hashed
 * directories, fast and slow symbolic links (`loader -> loader.1`), sparse
 * files with deep extent trees, and what a damaged or foreign device gives.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { makeExt4, type Tree } from "../../dev/installed_disk.ts";
import { Ext4Error, fileReader, openExt4 } from "../../lib/local_boot/ext4.ts";
import { withTemp } from "../test_util.ts";

function random(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAll(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const KERNEL = random(3_000_000, 7);
const TREE: Tree = {
  "loader.1/entries/ostree-1-rhcos.conf": "title RHCOS\nlinux /k\n",
  "loader": { symlink: "loader.1" },
  "abs": { symlink: "/ostree/rhcos-1/vmlinuz" },
  "long": { symlink: `${"d/".repeat(40)}../`.repeat(2) + "ignition.firstboot" },
  "ostree/rhcos-1/vmlinuz": KERNEL,
  "ostree/rhcos-1/initramfs.img": random(70_000, 9),
  "ignition.firstboot": "",
  ...Object.fromEntries(
    Array.from({ length: 400 }, (_, i) => [
      `many/a-file-with-a-rather-long-name-${i}`,
      `${i}\n`,
    ]),
  ),
};

for (
  const [name, args] of [
    ["4 KiB blocks, 64 bit, extents", ["-b", "4096"]],
    ["1 KiB blocks", ["-b", "1024"]],
    ["no 64bit, no metadata_csum", ["-O", "^64bit,^metadata_csum"]],
    ["ext2-style block maps (no extents)", [
      "-b",
      "1024",
      "-O",
      "^extent,^64bit,^flex_bg",
    ]],
  ] as const
) {
  Deno.test(`ext4: ${name}: label, directories, links, files byte for byte`, async () => {
    await withTemp(async (dir) => {
      await makeExt4(`${dir}/fs.img`, TREE, {
        label: "boot",
        sizeMiB: 32,
        mkfsArgs: [...args],
      });
      using file = await Deno.open(`${dir}/fs.img`);
      const fs = await openExt4(fileReader(file));
      assert.equal(fs.label, "boot");
      assert.match(
        fs.uuid,
        /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
      );
      assert.equal(fs.needsRecovery, false);
      assert.deepEqual(
        (await fs.readDir("loader/entries")).map((e) => e.name),
        ["ostree-1-rhcos.conf"],
      );
      assert.equal(
        new TextDecoder().decode(
          await fs.readFile("/loader/entries/ostree-1-rhcos.conf", 1024),
        ),
        "title RHCOS\nlinux /k\n",
      );
      // A hashed directory of several blocks: every entry, once.
      const many = (await fs.readDir("many")).map((e) => e.name).sort();
      assert.equal(many.length, 400);
      assert.equal(new Set(many).size, 400);
      assert.equal(
        new TextDecoder().decode(
          await fs.readFile("many/a-file-with-a-rather-long-name-399", 16),
        ),
        "399\n",
      );
      assert.equal(
        sha(await readAll(fs.chunks("ostree/rhcos-1/vmlinuz"))),
        sha(KERNEL),
      );
      assert.equal(sha(await readAll(fs.chunks("abs"))), sha(KERNEL));
      assert.equal(
        sha(
          await fs.readFile(
            "./loader/../ostree/rhcos-1/initramfs.img",
            1 << 20,
          ),
        ),
        sha(TREE["ostree/rhcos-1/initramfs.img"] as Uint8Array),
      );
      assert.deepEqual(
        { kind: (await fs.stat("ignition.firstboot")).kind, size: 0 },
        { kind: "file", size: (await fs.stat("ignition.firstboot")).size },
      );
      assert.equal((await fs.stat("loader")).kind, "directory");
      await assert.rejects(fs.stat("long"), /no such file|not a directory/);
      await assert.rejects(fs.readFile("missing", 10), Ext4Error);
      await assert.rejects(fs.readFile("loader", 10), /not a regular file/);
      await assert.rejects(
        fs.readFile("ostree/rhcos-1/vmlinuz", 1000),
        /larger than 1000 bytes/,
      );
    });
  });
}

Deno.test("ext4: a sparse file with many extents (an extent tree of depth 1) reads with its holes as zeros", async () => {
  await withTemp(async (dir) => {
    const src = `${dir}/src`;
    await Deno.mkdir(src);
    // 40 islands of data with holes between them: more extents than the inode holds.
    const size = 40 * 64 * 1024;
    const expected = new Uint8Array(size);
    {
      using f = await Deno.open(`${src}/sparse`, { write: true, create: true });
      for (let i = 0; i < 40; i++) {
        const island = random(4096, i + 1);
        await f.seek(i * 64 * 1024, Deno.SeekMode.Start);
        await f.write(island);
        expected.set(island, i * 64 * 1024);
      }
      await f.truncate(size);
    }
    await new Deno.Command("truncate", { args: ["-s", "16M", `${dir}/fs.img`] })
      .output();
    const mkfs = await new Deno.Command("mkfs.ext4", {
      args: ["-q", "-F", "-d", src, `${dir}/fs.img`],
    }).output();
    assert.ok(mkfs.success);
    const stat = await new Deno.Command("debugfs", {
      args: ["-R", "stat /sparse", `${dir}/fs.img`],
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.match(
      new TextDecoder().decode(stat.stdout),
      /\(ETB0\)/,
      "the file has an extent tree block",
    );
    using file = await Deno.open(`${dir}/fs.img`);
    const fs = await openExt4(fileReader(file));
    assert.equal(sha(await readAll(fs.chunks("sparse"))), sha(expected));
  });
});

Deno.test("ext4: not ext4, a damaged superblock or an unknown feature is an Ext4Error", async () => {
  const reader = (bytes: Uint8Array) => ({
    read: (offset: number, length: number) =>
      Promise.resolve(bytes.slice(offset, offset + length)),
  });
  await assert.rejects(
    openExt4(reader(new Uint8Array(8192))),
    /no ext2\/3\/4 file system/,
  );
  await withTemp(async (dir) => {
    await makeExt4(`${dir}/fs.img`, { "a": "x" }, { sizeMiB: 8 });
    const image = await Deno.readFile(`${dir}/fs.img`);
    const view = new DataView(image.buffer);
    const unknown = image.slice();
    new DataView(unknown.buffer).setUint32(
      1024 + 96,
      0x10 | view.getUint32(1024 + 96, true),
      true,
    );
    await assert.rejects(openExt4(reader(unknown)), /feature flags 0x10/);
    const damaged = image.slice();
    new DataView(damaged.buffer).setUint32(1024 + 40, 0, true);
    await assert.rejects(openExt4(reader(damaged)), /superblock is damaged/);
    // An inode table pointing past the end.
    const truncated = image.slice(0, 64 * 1024);
    const fs = await openExt4(reader(truncated));
    await assert.rejects(fs.readDir("/"), Ext4Error);
  });
});
