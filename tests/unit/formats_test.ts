/**
 * Format sniffing against real compressor output (gzip, xz, zstd, lz4 legacy
 * and frame, bzip2, cpio), kernel checks per architecture, and arm64 unpacking
 * of gzip'd Images and zboot `vmlinuz` files.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  bzImageCmdlineSize,
  checkInitrd,
  checkKernel,
  type Format,
  kernelMinimumSize,
  MAX_ARM64_IMAGE_BYTES,
  readHead,
  sniff,
  unpackArm64Kernel,
  zbootHeader,
} from "../../lib/stage/formats.ts";

const enc = new TextEncoder();

async function pipe(cmd: string, args: string[], input: Uint8Array) {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(input);
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, `${cmd}: ${new TextDecoder().decode(out.stderr)}`);
  return out.stdout;
}

function fakeBzImage(): Uint8Array {
  const b = new Uint8Array(8192);
  b.set([0x4d, 0x5a]);
  b.set(enc.encode("HdrS"), 0x202);
  return b;
}

function fakeArm64Image(size = 70_000): Uint8Array {
  const b = new Uint8Array(size).map((_, i) => (i * 13) & 0xff);
  b.set([0x4d, 0x5a], 0); // EFI stub images start with "MZ" too
  b.set(enc.encode("ARM\x64"), 0x38);
  return b;
}

/** How many file descriptors this process has open. */
function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

const bootError = (code: number, message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BootError, String(err));
  assert.equal(err.exitCode, code);
  assert.match(err.message, message);
  return true;
};

Deno.test("sniff: real compressor output and archive magics", async () => {
  const data = enc.encode("initramfs payload ".repeat(100));
  const table: [Format, Uint8Array][] = [
    ["gzip", await pipe("gzip", ["-c"], data)],
    ["xz", await pipe("xz", ["-c", "--check=crc32"], data)],
    ["zstd", await pipe("zstd", ["-c", "-q"], data)],
    ["lz4-legacy", await pipe("lz4", ["-l", "-c", "-q"], data)],
    ["lz4-frame", await pipe("lz4", ["-c", "-q"], data)],
    ["bzip2", await pipe("bzip2", ["-c"], data)],
    [
      "cpio-newc",
      await pipe("cpio", ["-o", "-H", "newc", "--quiet"], enc.encode("")),
    ],
    [
      "cpio-newc-crc",
      await pipe("cpio", ["-o", "-H", "crc", "--quiet"], enc.encode("")),
    ],
    ["bzimage", fakeBzImage()],
    ["arm64-image", fakeArm64Image()],
    ["elf", new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1])],
    ["html", enc.encode("\n  <!DOCTYPE html><html><body>Login</body></html>")],
    ["html", enc.encode("\uFEFF<HTML><HEAD>")],
    ["empty", new Uint8Array()],
    ["unknown", enc.encode("just text")],
    ["pe", enc.encode("MZ\x90\x00")],
  ];
  for (const [expected, bytes] of table) {
    assert.equal(sniff(bytes.subarray(0, 4096)), expected, expected);
  }
});

Deno.test("checkKernel: x86_64 wants a bzImage; HTML served as a kernel is named", () => {
  assert.equal(
    checkKernel(fakeBzImage(), { url: "http://h/k", arch: "x86_64" }),
    "bzimage",
  );
  assert.throws(
    () =>
      checkKernel(enc.encode("<!doctype html><title>Sign in</title>"), {
        url: "https://h/boot-artifacts/kernel?api_key=SECRET",
        arch: "x86_64",
      }),
    bootError(
      ExitCode.Verify,
      /^Kernel https:\/\/h\/boot-artifacts\/kernel\?api_key=REDACTED is an HTML page, not a kernel$/,
    ),
  );
  assert.throws(
    () => checkKernel(fakeArm64Image(), { url: "http://h/k", arch: "x86_64" }),
    bootError(ExitCode.Verify, /arm64-image file, not an x86_64 bzImage/),
  );
  assert.throws(
    () => checkKernel(new Uint8Array(), { url: "http://h/k", arch: "x86_64" }),
    bootError(ExitCode.Verify, /is empty/),
  );
});

Deno.test("checkKernel: aarch64 takes Image, gzip and gzip zboot; refuses zstd zboot and bzImage", async () => {
  const opts = { url: "http://h/k", arch: "aarch64" };
  assert.equal(checkKernel(fakeArm64Image(), opts), "arm64-image");
  assert.equal(
    checkKernel(await pipe("gzip", ["-c"], fakeArm64Image()), opts),
    "gzip",
  );
  assert.equal(checkKernel(zboot(new Uint8Array(100), "gzip"), opts), "zboot");
  assert.throws(
    () => checkKernel(zboot(new Uint8Array(100), "zstd"), opts),
    bootError(ExitCode.Verify, /zboot image compressed with zstd; only gzip/),
  );
  assert.throws(
    () => checkKernel(fakeBzImage(), opts),
    bootError(ExitCode.Verify, /not an arm64 Image/),
  );
});

Deno.test("checkInitrd: compressed and cpio pass, anything else is named", async () => {
  const url = "http://h/initrd.img";
  assert.equal(
    checkInitrd(await pipe("zstd", ["-c", "-q"], enc.encode("x")), { url }),
    "zstd",
  );
  assert.throws(
    () => checkInitrd(enc.encode("<html>error</html>"), { url }),
    bootError(
      ExitCode.Verify,
      /^Initrd http:\/\/h\/initrd\.img is an HTML page, not a newc cpio/,
    ),
  );
  assert.throws(
    () => checkInitrd(fakeBzImage(), { url }),
    bootError(ExitCode.Verify, /is a bzimage file/),
  );
});

/** A minimal EFI zboot file: header fields as zboot-header.S lays them out. */
function zboot(payload: Uint8Array, type: string): Uint8Array {
  const offset = 0x200;
  const out = new Uint8Array(offset + payload.length + 64);
  const view = new DataView(out.buffer);
  out.set(enc.encode("MZ"), 0);
  out.set(enc.encode("zimg"), 4);
  view.setUint32(8, offset, true);
  view.setUint32(12, payload.length, true);
  out.set(enc.encode(type + "\0"), 24);
  view.setUint32(0x3c, 0x40, true);
  out.set(payload, offset);
  return out;
}

Deno.test("unpackArm64Kernel: gzip'd Image and gzip zboot become the plain Image", async () => {
  const dir = await Deno.makeTempDir({ prefix: "formats_test_" });
  try {
    const image = fakeArm64Image(300_000);
    const gz = await pipe("gzip", ["-c", "-n"], image);
    const opts = { url: "http://h/vmlinuz", arch: "aarch64" };

    await Deno.writeFile(`${dir}/plain`, image);
    assert.equal(
      await unpackArm64Kernel(`${dir}/plain`, `${dir}/out0`, opts),
      `${dir}/plain`,
    );

    await Deno.writeFile(`${dir}/gz`, gz);
    assert.equal(
      await unpackArm64Kernel(`${dir}/gz`, `${dir}/out1`, opts),
      `${dir}/out1`,
    );
    assert.deepEqual(await Deno.readFile(`${dir}/out1`), image);

    const z = zboot(gz, "gzip");
    assert.deepEqual(zbootHeader(z), {
      payloadOffset: 0x200,
      payloadSize: gz.length,
      compression: "gzip",
    });
    await Deno.writeFile(`${dir}/zboot`, z);
    assert.equal(sniff(await readHead(`${dir}/zboot`)), "zboot");
    assert.equal(
      await unpackArm64Kernel(`${dir}/zboot`, `${dir}/out2`, opts),
      `${dir}/out2`,
    );
    assert.deepEqual(await Deno.readFile(`${dir}/out2`), image);

    // A payload that does not unpack to an arm64 Image is refused.
    await Deno.writeFile(
      `${dir}/bad`,
      zboot(await pipe("gzip", ["-c"], enc.encode("nope")), "gzip"),
    );
    await assert.rejects(
      unpackArm64Kernel(`${dir}/bad`, `${dir}/out3`, opts),
      bootError(ExitCode.Verify, /does not unpack to an arm64 Image/),
    );
    // A header pointing past the end of the file.
    const broken = zboot(gz, "gzip").subarray(0, 0x300);
    await Deno.writeFile(`${dir}/broken`, broken);
    await assert.rejects(
      unpackArm64Kernel(`${dir}/broken`, `${dir}/out4`, opts),
      bootError(ExitCode.Verify, /outside the file/),
    );
    // Corrupt gzip data.
    const corrupt = gz.slice();
    corrupt.fill(0x55, 20, 200);
    await Deno.writeFile(`${dir}/corrupt`, corrupt);
    await assert.rejects(
      unpackArm64Kernel(`${dir}/corrupt`, `${dir}/out5`, opts),
      bootError(
        ExitCode.Verify,
        /^Kernel http:\/\/h\/vmlinuz cannot be unpacked: it could not be decompressed/,
      ),
    );
    // Bytes after the gzip stream: trailing garbage, a second member.
    for (
      const [name, bytes] of [
        ["trailing", new Uint8Array([...gz, 1, 2, 3])],
        ["two-members", new Uint8Array([...gz, ...gz])],
      ] as const
    ) {
      await Deno.writeFile(`${dir}/${name}`, bytes);
      await assert.rejects(
        unpackArm64Kernel(`${dir}/${name}`, `${dir}/out-${name}`, opts),
        bootError(
          ExitCode.Verify,
          /cannot be unpacked: it has data after the end of its gzip stream \(trailing bytes, or a second gzip member/,
        ),
      );
      await assert.rejects(Deno.lstat(`${dir}/out-${name}.part`));
    }
    // The output is bounded: 300 000 bytes do not fit in 100 000.
    await assert.rejects(
      unpackArm64Kernel(`${dir}/gz`, `${dir}/out6`, {
        ...opts,
        maxBytes: 100_000,
      }),
      bootError(
        ExitCode.Verify,
        /unpacks to more than 100000 bytes, the most an arm64 Image may be$/,
      ),
    );
    await assert.rejects(Deno.lstat(`${dir}/out6.part`));
    // An output that cannot be created (a directory at the .part name): a
    // Disk error saying what to do, and the kernel file is closed.
    await Deno.mkdir(`${dir}/out7.part`);
    const fds = openFds();
    await assert.rejects(
      unpackArm64Kernel(`${dir}/gz`, `${dir}/out7`, opts),
      bootError(
        ExitCode.Disk,
        /\/out7\.part is a directory where the bootloader writes a file: remove it$/,
      ),
    );
    assert.equal(openFds(), fds, "a file descriptor was left open");
    await assert.rejects(Deno.lstat(`${dir}/out7`));
    assert.equal(MAX_ARM64_IMAGE_BYTES, 256 << 20);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bzImageCmdlineSize: cmdline_size from protocol 2.06+, 255 before, 0 when unknown", () => {
  const head = fakeBzImage();
  const view = new DataView(head.buffer);
  assert.equal(bzImageCmdlineSize(head), 0); // no protocol version: unknown
  view.setUint16(0x206, 0x205, true);
  assert.equal(bzImageCmdlineSize(head), 255);
  view.setUint16(0x206, 0x20f, true);
  view.setUint32(0x238, 2047, true);
  assert.equal(bzImageCmdlineSize(head), 2047);
  assert.equal(bzImageCmdlineSize(head.subarray(0, 0x200)), 0);
});

/** A bzImage header: `setup_sects` sectors of setup after the boot sector, `syssize` paragraphs of code. */
function bzImageHead(
  setupSects: number,
  syssize: number,
  version = 0x20f,
): Uint8Array {
  const b = fakeBzImage();
  const view = new DataView(b.buffer);
  b[0x1f1] = setupSects;
  view.setUint16(0x206, version, true);
  view.setUint32(0x1f4, syssize, true);
  return b;
}

/** An arm64 Image header with the EFI stub's PE section table (as arch/arm64/kernel/efi-header.S lays it out). */
function arm64PeHead(sections: [rawPointer: number, rawSize: number][]) {
  const b = new Uint8Array(4096);
  const view = new DataView(b.buffer);
  b.set([0x4d, 0x5a], 0);
  b.set(enc.encode("ARM\x64"), 0x38);
  view.setUint32(0x3c, 0x40, true); // PE header offset
  b.set(enc.encode("PE\0\0"), 0x40);
  view.setUint16(0x46, sections.length, true);
  view.setUint16(0x54, 0xa0, true); // size of the optional header
  view.setBigUint64(0x10, 1n << 32n, true); // image_size: memory, BSS included
  const table = 0x40 + 24 + 0xa0;
  sections.forEach(([pointer, size], i) => {
    view.setUint32(table + 40 * i + 16, size, true);
    view.setUint32(table + 40 * i + 20, pointer, true);
  });
  return b;
}

Deno.test("kernelMinimumSize: bzImage setup_sects + syssize (32 bits from 2.04, 16 before); arm64 PE sections; image_size is not a file size", () => {
  assert.equal(kernelMinimumSize(bzImageHead(27, 1000)), 28 * 512 + 16_000);
  assert.equal(kernelMinimumSize(bzImageHead(0, 10)), 5 * 512 + 160); // 0 means 4
  assert.equal(kernelMinimumSize(bzImageHead(1, 0x10000)), 1024 + 0x100000);
  // Protocol 2.03: syssize is 16 bits (the next two bytes are another field).
  assert.equal(kernelMinimumSize(bzImageHead(1, 0x10010, 0x203)), 1024 + 0x100);
  // The real Debian x86_64 bzImage the VM tests boot: setup_sects 39,
  // syssize 514080 → 8245760 bytes, the end of its PE .data section too.
  assert.equal(kernelMinimumSize(bzImageHead(39, 514080)), 8_245_760);
  assert.equal(
    kernelMinimumSize(
      arm64PeHead([[0x10000, 0x1730000], [0x1740000, 0x82da00]]),
    ),
    0x1f6da00,
  );
  // No PE header (no EFI stub), or a section table beyond the head: unknown.
  assert.equal(kernelMinimumSize(fakeArm64Image()), 0);
  assert.equal(kernelMinimumSize(arm64PeHead([]).subarray(0, 0x100)), 0);
  assert.equal(kernelMinimumSize(enc.encode("not a kernel")), 0);
});

Deno.test("checkKernel: a kernel shorter than its header says is truncated (exit 6); exact and signed (longer) files pass", () => {
  const x86 = { url: "http://h/vmlinuz?image_token=SECRET", arch: "x86_64" };
  const head = bzImageHead(27, 1000);
  const exact = 28 * 512 + 16_000;
  assert.equal(checkKernel(head, { ...x86, size: exact }), "bzimage");
  assert.equal(checkKernel(head, { ...x86, size: exact + 1472 }), "bzimage");
  assert.equal(checkKernel(head, x86), "bzimage", "no size: no size check");
  assert.throws(
    () => checkKernel(head, { ...x86, size: exact - 1 }),
    bootError(
      ExitCode.Verify,
      new RegExp(
        `^Kernel http://h/vmlinuz\\?image_token=REDACTED is truncated: ${
          exact - 1
        } bytes, but its bzimage header says at least ${exact}$`,
      ),
    ),
  );
  const arm = { url: "http://h/Image", arch: "aarch64" };
  const image = arm64PeHead([[0x1000, 0x1000], [0x2000, 0x800]]);
  assert.equal(checkKernel(image, { ...arm, size: 0x2800 }), "arm64-image");
  assert.throws(
    () => checkKernel(image, { ...arm, size: 0x27ff }),
    bootError(ExitCode.Verify, /truncated: 10239 bytes, .* at least 10240/),
  );
});

Deno.test("unpackArm64Kernel: an Image shorter than its PE sections say is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "formats_test_" });
  try {
    const image = arm64PeHead([[0x1000, 0x1000], [0x2000, 0x1000]]);
    await Deno.writeFile(`${dir}/gz`, await pipe("gzip", ["-c"], image));
    await assert.rejects(
      unpackArm64Kernel(`${dir}/gz`, `${dir}/out`, {
        url: "http://h/Image.gz",
        arch: "aarch64",
      }),
      bootError(
        ExitCode.Verify,
        /unpacks to a truncated arm64 Image: 4096 bytes, but its header says at least 12288/,
      ),
    );
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name),
      ["gz"],
      "no Image, no .part left",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bzImageCmdlineSize: protocol 2.06 is the first to carry cmdline_size; 2.00 the first with a command line", () => {
  const head = fakeBzImage();
  const view = new DataView(head.buffer);
  view.setUint32(0x238, 4095, true);
  for (
    const [version, size] of [
      [0x1ff, 0],
      [0x200, 255],
      [0x205, 255],
      [0x206, 4095],
      [0x207, 4095],
    ]
  ) {
    view.setUint16(0x206, version, true);
    assert.equal(bzImageCmdlineSize(head), size, version.toString(16));
  }
  // The header must reach past cmdline_size (0x238..0x23c) to be read at all.
  assert.equal(bzImageCmdlineSize(head.subarray(0, 0x23c)), 4095);
  assert.equal(bzImageCmdlineSize(head.subarray(0, 0x23b)), 0);
});
