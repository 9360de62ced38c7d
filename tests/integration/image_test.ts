/**
 * Offline test of the disk image pipeline (image/): a synthetic disk with the
 * FCOS partition table, labels, BLS entry and `ignition.firstboot` stamp,
 * packed as raw.xz with its sha256 and a signature from a throwaway GPG key,
 * described by stream metadata served on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { BootError } from "../../lib/errors.ts";
import { renderIgnition } from "../../ignition/mod.ts";
import {
  buildImage,
  type BuildImageOptions,
  optionsFromArgs,
  parseSize,
} from "../../image/build_image.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const GUID = "00000000-0000-4000-a000-000000000001";
const MiB = 1 << 20;
const BASE_SIZE = 600 * MiB;
const DISK_SIZE = 1024 * MiB;
const BOOT_START = 264192 * 512;
const OPTIONS_LINE =
  "options rw ignition.platform.id=metal $ignition_firstboot ostree=/ostree/boot.1/fedora-coreos/x/0";
const CONSOLE = ["console=tty0", "console=ttyS0,115200n8"];

async function run(
  cmd: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
) {
  const child = new Deno.Command(cmd, {
    args,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

async function ok(
  cmd: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
) {
  const r = await run(cmd, args, options);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

const sh = (script: string, env?: Record<string, string>) =>
  ok("bash", ["-euo", "pipefail", "-c", script], { env });
const sha256 = (data: Uint8Array) =>
  createHash("sha256").update(data).digest("hex");

/** Builds the synthetic FCOS-like disk in `dir`; returns its path. */
async function syntheticDisk(dir: string): Promise<string> {
  const raw = `${dir}/fedora-coreos-99.1-metal.x86_64.raw`;
  await Deno.truncate(raw, BASE_SIZE).catch(async () => {
    await Deno.writeFile(raw, new Uint8Array());
    await Deno.truncate(raw, BASE_SIZE);
  });
  await ok("sfdisk", ["--quiet", raw], {
    stdin: `label: gpt
label-id: ${GUID.toUpperCase()}
start=2048, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="BIOS-BOOT", attrs="LegacyBIOSBootable"
size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI-SYSTEM"
size=384MiB, type=BC13C2FF-59E6-4262-A352-B275FD6F7172, name="boot"
type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
`,
  });
  await ok("/usr/sbin/mkfs.ext4", [
    "-q",
    "-F",
    "-L",
    "boot",
    "-E",
    `offset=${BOOT_START}`,
    raw,
    "393216k",
  ]);
  await Deno.writeTextFile(
    `${dir}/bls.conf`,
    `title Fedora CoreOS 99.1\nversion 1\n${OPTIONS_LINE}\nlinux /x/vmlinuz\n`,
  );
  await Deno.writeFile(`${dir}/firstboot`, new Uint8Array());
  await ok("/usr/sbin/debugfs", [
    "-w",
    "-f",
    "-",
    `${raw}?offset=${BOOT_START}`,
  ], {
    stdin: [
      "mkdir loader.1",
      "mkdir loader.1/entries",
      `write ${dir}/bls.conf loader.1/entries/ostree-1.conf`,
      "symlink loader loader.1",
      `write ${dir}/firstboot ignition.firstboot`,
    ].join("\n") + "\n",
  });
  return raw;
}

interface Fixture {
  dir: string;
  base: string;
  url: string;
  keys: string;
  ignition: string;
  config: Uint8Array;
  server: Deno.HttpServer;
  requests: string[];
}

async function setup(): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "image-test-" });
  const raw = await syntheticDisk(dir);
  const name = raw.slice(dir.length + 1);
  const uncompressed = (await sh(`sha256sum "${raw}"`)).slice(0, 64);
  await ok("xz", ["-T0", "-1", "-k", raw]);
  const xz = await Deno.readFile(`${raw}.xz`);
  // Throwaway keys: "good" signs the image, "other" is not trusted.
  const gpgEnv = (home: string) => ({ GNUPGHOME: home, PATH: "/usr/bin:/bin" });
  for (const who of ["good", "other"]) {
    await Deno.mkdir(`${dir}/gnupg-${who}`, { mode: 0o700 });
    const env = gpgEnv(`${dir}/gnupg-${who}`);
    await ok("gpg", [
      "--batch",
      "--passphrase",
      "",
      "--quick-gen-key",
      `${who} <${who}@example.invalid>`,
      "ed25519",
      "sign",
      "never",
    ], { env });
    await ok("gpg", [
      "--batch",
      "--yes",
      "--detach-sign",
      "-o",
      `${dir}/${who}.sig`,
      `${raw}.xz`,
    ], { env });
  }
  await ok("gpg", ["--batch", "--armor", "--export", "-o", `${dir}/keys.asc`], {
    env: gpgEnv(`${dir}/gnupg-good`),
  });
  for (const who of ["good", "other"]) {
    await run("gpgconf", ["--kill", "all"], {
      env: gpgEnv(`${dir}/gnupg-${who}`),
    });
  }
  const tampered = xz.slice();
  tampered[tampered.length >> 1] ^= 0xff;
  const files: Record<string, Uint8Array<ArrayBuffer>> = {
    [`/good/${name}.xz`]: xz,
    [`/good/${name}.xz.sig`]: await Deno.readFile(`${dir}/good.sig`),
    [`/tampered/${name}.xz`]: tampered,
    [`/tampered/${name}.xz.sig`]: await Deno.readFile(`${dir}/good.sig`),
    [`/badsig/${name}.xz`]: xz,
    [`/badsig/${name}.xz.sig`]: await Deno.readFile(`${dir}/other.sig`),
  };
  const requests: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const path = new URL(req.url).pathname;
      const range = req.headers.get("range");
      requests.push(`${path}${range ? ` ${range}` : ""}`);
      const body = files[path];
      if (!body) return new Response("not found", { status: 404 });
      const m = range && /^bytes=(\d+)-$/.exec(range);
      if (m) {
        const from = Number(m[1]);
        if (from >= body.length) return new Response(null, { status: 416 });
        return new Response(body.slice(from), {
          status: 206,
          headers: {
            "content-range": `bytes ${from}-${body.length - 1}/${body.length}`,
          },
        });
      }
      return new Response(body);
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  for (const kind of ["good", "tampered", "badsig"]) {
    const disk = {
      location: `${url}/${kind}/${name}.xz`,
      signature: `${url}/${kind}/${name}.xz.sig`,
      sha256: sha256(xz),
      "uncompressed-sha256": uncompressed,
    };
    const stream = {
      stream: "stable",
      architectures: {
        x86_64: {
          artifacts: {
            metal: { release: "99.1", formats: { "raw.xz": { disk } } },
          },
        },
      },
    };
    files[`/${kind}.json`] = new TextEncoder().encode(JSON.stringify(stream));
  }
  const ignition = `${dir}/config.ign`;
  const text = await renderIgnition({
    bootloaderUrl: "http://10.0.2.100/assisted-bootloader",
    bootloaderSha256: "ab".repeat(32),
    ipxeUrl: "http://10.0.2.100/ipxe",
  });
  await Deno.writeTextFile(ignition, text);
  await Deno.remove(raw);
  return {
    dir,
    base: name,
    url,
    keys: `${dir}/keys.asc`,
    ignition,
    config: new TextEncoder().encode(text),
    server,
    requests,
  };
}

function options(
  f: Fixture,
  kind: string,
  extra: Partial<BuildImageOptions> = {},
): BuildImageOptions & { lines: string[] } {
  const lines: string[] = [];
  return {
    ignition: f.ignition,
    output: `${f.dir}/out-${kind}/assisted-bootloader.raw`,
    cacheDir: `${f.dir}/cache-${kind}`,
    streamUrl: `${f.url}/${kind}.json`,
    arch: "x86_64",
    diskSize: DISK_SIZE,
    consoleKargs: CONSOLE,
    verifySignature: true,
    fedoraKeys: f.keys,
    fedoraKeysUrl: "http://127.0.0.1:9/unused",
    compressLevel: 1,
    log: (l) => lines.push(l),
    lines,
    ...extra,
  };
}

Deno.test({
  name: "make image pipeline on a synthetic FCOS disk served on 127.0.0.1",
  fn: async (t) => {
    const f = await setup();
    try {
      await t.step(
        "builds the image: config 0700/0600, clean fs, GUID kept, size, console karg",
        async () => {
          const o = options(f, "good");
          // An interrupted earlier download: the first half is already there.
          await Deno.mkdir(o.cacheDir, { recursive: true });
          const xz = await Deno.readFile(`${f.dir}/${f.base}.xz`);
          await Deno.writeFile(
            `${o.cacheDir}/${f.base}.xz.part`,
            xz.subarray(0, xz.length >> 1),
          );
          // `make` (default target image), as a user runs it.
          const cli = await run("make", [
            "-s",
            "-C",
            ROOT,
            `STREAM_URL=${o.streamUrl}`,
            `IGNITION_OUT=${f.ignition}`,
            `IMAGE_OUT=${o.output}`,
            `IMAGE_CACHE=${o.cacheDir}`,
            "DISK_SIZE=1G",
            `FEDORA_KEYS=${f.keys}`,
            "ARCH=x86_64",
            "COMPRESS_LEVEL=1",
          ]);
          assert.equal(cli.code, 0, cli.stderr);
          assert.match(cli.stderr, /resuming at 0\.\d MiB|resuming at/);
          assert.ok(
            f.requests.some((r) =>
              r.startsWith(`/good/${f.base}.xz bytes=${xz.length >> 1}-`)
            ),
            f.requests.join(),
          );
          assert.match(cli.stderr, /good signature from key [0-9A-F]{40}/);
          assert.match(cli.stderr, /uncompressed-sha256 [0-9a-f]{64} verified/);

          const img = o.output;
          assert.equal((await Deno.stat(img)).size, DISK_SIZE);
          assert.ok(
            (await Deno.stat(img)).blocks! * 512 < BASE_SIZE,
            "the image stays sparse",
          );
          const spec = `${img}?offset=${BOOT_START}`;
          const root = await ok("/usr/sbin/debugfs", ["-R", "ls -p /", spec]);
          assert.match(root, /^\/\d+\/040700\/0\/0\/ignition\/\/$/m);
          const dir = await ok("/usr/sbin/debugfs", [
            "-R",
            "ls -p /ignition",
            spec,
          ]);
          assert.match(
            dir,
            new RegExp(
              `^/\\d+/100600/0/0/config\\.ign/${f.config.length}/$`,
              "m",
            ),
          );
          const config = await ok("/usr/sbin/debugfs", [
            "-R",
            "cat /ignition/config.ign",
            spec,
          ]);
          assert.equal(config, new TextDecoder().decode(f.config));
          assert.equal((await run("/usr/sbin/e2fsck", ["-fn", spec])).code, 0);
          const bls = await ok("/usr/sbin/debugfs", [
            "-R",
            "cat /loader/entries/ostree-1.conf",
            spec,
          ]);
          assert.match(
            bls,
            new RegExp(
              `^${OPTIONS_LINE.replace(/[$.]/g, "\\$&")} ${CONSOLE.join(" ")}$`,
              "m",
            ),
          );
          const table =
            JSON.parse(await ok("/usr/sbin/sfdisk", ["--json", img]))
              .partitiontable;
          assert.equal(table.id.toLowerCase(), GUID);
          assert.deepEqual(
            table.partitions.map((p: { name: string }) => p.name),
            ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"],
          );
          assert.match(
            await ok("/usr/sbin/sfdisk", ["--verify", img]),
            /No errors detected/,
          );
          // The checksums, recomputed with independent tools; the xz copy decompresses to the image.
          const rawSha = (await sh(`sha256sum "${img}"`)).slice(0, 64);
          assert.equal(
            await Deno.readTextFile(`${img}.sha256`),
            `${rawSha}  assisted-bootloader.raw\n`,
          );
          assert.equal(
            (await sh(`xz -dc "${img}.xz" | sha256sum`)).slice(0, 64),
            rawSha,
          );
          await sh(
            `cd "$(dirname "${img}")" && sha256sum --quiet -c assisted-bootloader.raw.xz.sha256`,
          );

          // Second run: everything from the cache, nothing downloaded again.
          const before = f.requests.filter((r) => r.endsWith(".xz")).length;
          const again = await buildImage(o);
          assert.equal(again.cached, true);
          assert.equal(again.raw.sha256, rawSha);
          assert.equal(again.diskGuid, GUID);
          assert.equal(
            f.requests.filter((r) => r.endsWith(".xz")).length,
            before,
          );
        },
      );

      await t.step("refuses a tampered raw.xz (sha256 mismatch)", async () => {
        const o = options(f, "tampered");
        await assert.rejects(buildImage(o), (err: unknown) => {
          assert.ok(err instanceof BootError);
          assert.equal(err.exitCode, 6);
          assert.match(
            err.message,
            /^sha256 mismatch for fedora-coreos-99\.1-metal\.x86_64\.raw\.xz: expected [0-9a-f]{64}, got/,
          );
          return true;
        });
        await assert.rejects(Deno.stat(o.output), Deno.errors.NotFound);
        assert.deepEqual(
          [...Deno.readDirSync(o.cacheDir)].map((e) => e.name),
          [],
        );
      });

      await t.step("refuses a signature from an untrusted key", async () => {
        const o = options(f, "badsig");
        await assert.rejects(
          buildImage(o),
          /GPG signature check failed for .*\.raw\.xz \((ERRSIG|NO_PUBKEY)\)/,
        );
        await assert.rejects(Deno.stat(o.output), Deno.errors.NotFound);
        // VERIFY_SIGNATURE=0 is explicit and loud; it then builds from the sha256 alone.
        const skip = options(f, "badsig", {
          verifySignature: false,
          diskSize: BASE_SIZE,
        });
        const res = await buildImage(skip);
        assert.ok(skip.lines.some((l) => /NOT checked/.test(l)));
        assert.equal(res.raw.size, BASE_SIZE);
      });

      await t.step(
        "parameters: sizes, VERIFY_SIGNATURE, smaller DISK_SIZE refused",
        async () => {
          assert.equal(parseSize("120G"), 120 * 1024 ** 3);
          assert.equal(parseSize("512M"), 512 * MiB);
          assert.throws(
            () => parseSize("big"),
            /DISK_SIZE "big" is not a size/,
          );
          assert.throws(
            () => optionsFromArgs([], { VERIFY_SIGNATURE: "no" }),
            /VERIFY_SIGNATURE must be 0 or 1/,
          );
          const d = optionsFromArgs([], { ARCH: "aarch64" });
          assert.equal(
            d.streamUrl,
            "https://builds.coreos.fedoraproject.org/streams/stable.json",
          );
          assert.equal(d.diskSize, 120 * 1024 ** 3);
          assert.equal(d.verifySignature, true);
          assert.deepEqual(d.consoleKargs, [
            "console=tty0",
            "console=ttyAMA0,115200n8",
          ]);
          const alias = optionsFromArgs(["--arch", "arm64"], {});
          assert.equal(alias.arch, "aarch64");
          assert.deepEqual(alias.consoleKargs, d.consoleKargs);
          const o = options(f, "good", {
            output: `${f.dir}/small/x.raw`,
            diskSize: 100 * MiB,
          });
          await assert.rejects(
            buildImage(o),
            /DISK_SIZE 104857600 is smaller than the image/,
          );
        },
      );
    } finally {
      await f.server.shutdown();
      await Deno.remove(f.dir, { recursive: true });
    }
  },
});
