/**
 * The verified artifact cache of `stage` across runs: reuse only after a HEAD
 * that matches the manifest and a re-hash, never for signed URLs or the
 * assisted `pxe-initrd`, pins still decide. Loopback servers and the mock
 * InfraEnv.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { createScriptClient } from "../../lib/resolve/infraenv.ts";
import { isCacheable } from "../../lib/stage/artifact_url.ts";
import { stage, type StageOptions } from "../../lib/stage/stage.ts";
import type { KexecPlan } from "../../lib/plan.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import { fakeKernel, startMock } from "../../dev/mock_infraenv.ts";
import { createClient } from "../../lib/http/client.ts";
import { staleReason } from "../../lib/stage/cache.ts";
import {
  captureLog,
  makeTestCerts,
  settleWithin,
  withTemp,
} from "../test_util.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const GZIP = new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);

/** What the test server serves at one path; mutable between runs. */
interface Served {
  body: Uint8Array;
  /** `Last-Modified` (none when undefined). */
  lastModified?: string;
  /** Send the body as a stream without `Content-Length`. */
  chunked?: boolean;
  /** Status for HEAD (default 200). */
  headStatus?: number;
  /** `ETag` (none when undefined). */
  etag?: string;
  /** Headers a HEAD leaves out (`content-length`, `last-modified`, `etag`). */
  headDrops?: string[];
  /** Headers a GET leaves out: without a validator, a download is not recorded. */
  getDrops?: string[];
}

/** A loopback server whose files, dates and HEAD behaviour tests change. */
function serve(files: Record<string, Served>) {
  const seen: { method: string; path: string; auth: boolean }[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const url = new URL(req.url);
      seen.push({
        method: req.method,
        path: url.pathname,
        auth: req.headers.has("authorization"),
      });
      const f = files[url.pathname];
      if (!f) return new Response("not found", { status: 404 });
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
      };
      if (f.lastModified) headers["last-modified"] = f.lastModified;
      if (f.etag) headers["etag"] = f.etag;
      if (!f.chunked) headers["content-length"] = String(f.body.length);
      if (req.method === "HEAD") {
        for (const name of f.headDrops ?? []) delete headers[name];
        // A null body would make the server add "content-length: 0".
        const empty = new ReadableStream({ start: (c) => c.close() });
        return new Response(
          headers["content-length"] === undefined ? empty : null,
          { status: f.headStatus ?? 200, headers },
        );
      }
      for (const name of f.getDrops ?? []) delete headers[name];
      const body = f.chunked
        ? new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(f.body.slice());
            c.close();
          },
        })
        : (f.body.slice() as Uint8Array<ArrayBuffer>);
      return new Response(body, { headers });
    },
  );
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    seen,
    /** Requests with `method` for `path` since the last `reset`. */
    count: (method: string, path: string) =>
      seen.filter((r) => r.method === method && r.path === path).length,
    reset: () => seen.splice(0),
    close: () => server.shutdown(),
  };
}

function plan(base: string, kernel: string, initrds: string[]): KexecPlan {
  return {
    action: "kexec",
    kernel: { url: `${base}${kernel}`, name: kernel.slice(1) },
    initrds: initrds.map((p) => ({ url: `${base}${p}`, name: p.slice(1) })),
    cmdline: "console=ttyS0",
    scripts: [],
  };
}

function opts(
  workDir: string,
  extra: Partial<StageOptions> = {},
): StageOptions {
  return {
    workDir,
    progress: "none",
    retries: 0,
    arch: "x86_64",
    ...extra,
  };
}

const LM1 = new Date(Date.UTC(2025, 0, 1)).toUTCString();
const LM2 = new Date(Date.UTC(2025, 5, 1)).toUTCString();

async function cacheNames(workDir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(`${workDir}/cache`)) names.push(e.name);
  } catch {
    // No cache directory.
  }
  return names.sort();
}

async function manifests(workDir: string) {
  const out = [];
  for (const name of await cacheNames(workDir)) {
    if (name.endsWith(".json")) {
      out.push(
        JSON.parse(await Deno.readTextFile(`${workDir}/cache/${name}`)),
      );
    }
  }
  return out;
}

Deno.test("cache: isCacheable refuses signed URLs, user:password and pxe-initrd", () => {
  assert.ok(isCacheable("https://h/boot-artifacts/kernel?arch=x86_64"));
  assert.ok(!isCacheable("https://h/x/kernel?image_token=abc"));
  assert.ok(!isCacheable("https://h/x/kernel?arch=x&api_key=abc"));
  assert.ok(!isCacheable("https://h/images/id/pxe-initrd?arch=x86_64"));
  assert.ok(!isCacheable("https://u:p@h/kernel"));
  assert.ok(!isCacheable("not a url"));
});

Deno.test("cache: the second run sends HEAD, no GET, and yields the same files", async () => {
  const kernel = fakeKernel(200_000);
  const srv = serve({
    "/vmlinuz": { body: kernel, lastModified: LM1 },
    "/a.gz": { body: GZIP, lastModified: LM1 },
  });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", ["/a.gz"]);
      const [first] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(first.kernel.cached, undefined);
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      const [m] = (await manifests(dir)).filter((m) =>
        m.url.endsWith("/vmlinuz")
      );
      assert.equal(m.sha256, sha(kernel));
      assert.equal(m.size, kernel.length);
      assert.equal(m.contentLength, kernel.length);
      assert.equal(m.lastModified, LM1);
      assert.ok(!Number.isNaN(Date.parse(m.verifiedAt)));
      assert.equal((await Deno.stat(`${dir}/cache`)).mode! & 0o777, 0o700);

      srv.reset();
      const [second, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 0);
      assert.equal(srv.count("GET", "/a.gz"), 0);
      assert.equal(srv.count("HEAD", "/vmlinuz"), 1);
      assert.ok(srv.seen.every((r) => !r.auth));
      assert.equal(second.kernel.sha256, sha(kernel));
      assert.equal(second.kernel.cached, true);
      assert.equal(second.initrd!.parts[0].cached, true);
      assert.equal(second.initrd!.sha256, first.initrd!.sha256);
      assert.deepEqual(
        await Deno.readFile(second.kernel.path),
        kernel,
      );
      assert.ok(
        lines.some((l) =>
          l.includes(
            `kernel (vmlinuz): cached copy verified (sha256 ${
              sha(kernel)
            }), not downloaded`,
          )
        ),
        lines.join("\n"),
      );
      // The JSON shape is unchanged but for "cached".
      const { cached: _c, ...rest } = second.kernel;
      assert.deepEqual(Object.keys(rest).sort(), [
        "format",
        "path",
        "sha256",
        "size",
        "url",
      ]);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a changed Last-Modified or size makes the next run download again", async () => {
  const kernel = fakeKernel(50_000);
  const files: Record<string, Served> = {
    "/vmlinuz": { body: kernel, lastModified: LM1 },
  };
  const srv = serve(files);
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      // Same bytes, new date: downloaded again.
      files["/vmlinuz"].lastModified = LM2;
      srv.reset();
      const [, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.ok(
        lines.some((l) => /Last-Modified changed/.test(l)),
        lines.join("\n"),
      );
      assert.equal((await manifests(dir))[0].lastModified, LM2);
      // Same date, other size: downloaded again, and the new file is cached.
      const bigger = fakeKernel(60_000);
      files["/vmlinuz"].body = bigger;
      srv.reset();
      const [image, lines2] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.ok(lines2.some((l) => /size changed/.test(l)), lines2.join("\n"));
      assert.equal(image.kernel.sha256, sha(bigger));
      assert.equal((await manifests(dir))[0].sha256, sha(bigger));
      // Unchanged now: reused.
      srv.reset();
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 0);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a corrupted cached file is caught by the re-hash and downloaded again", async () => {
  const kernel = fakeKernel(50_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const file = (await cacheNames(dir)).find((n) => !n.endsWith(".json"))!;
      const bytes = await Deno.readFile(`${dir}/cache/${file}`);
      bytes[30_000] ^= 0xff;
      await Deno.writeFile(`${dir}/cache/${file}`, bytes);
      srv.reset();
      const [image, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      // A warning (bytes changed on disk), not the note of a stale copy.
      assert.ok(
        lines.some((l) =>
          /^assisted-bootloader: warn: kernel \(vmlinuz\): cached copy is corrupt \(sha256 [0-9a-f]{64}, expected [0-9a-f]{64}\), downloading$/
            .test(l)
        ),
        lines.join("\n"),
      );
      assert.equal(image.kernel.cached, undefined);
      assert.equal(image.kernel.sha256, sha(kernel));
      assert.deepEqual(await Deno.readFile(`${dir}/cache/${file}`), kernel);
      // A truncated cache file (size differs from the manifest) as well.
      await Deno.truncate(`${dir}/cache/${file}`, 100);
      srv.reset();
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: HEAD refused, or no Content-Length nor Last-Modified, means download", async () => {
  const kernel = fakeKernel(20_000);
  const files: Record<string, Served> = {
    "/vmlinuz": { body: kernel, lastModified: LM1, headStatus: 405 },
    "/plain": { body: kernel, chunked: true },
  };
  const srv = serve(files);
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      srv.reset();
      const [, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("HEAD", "/vmlinuz"), 1);
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.ok(
        lines.some((l) => /HEAD answered 405/.test(l)),
        lines.join("\n"),
      );
      // A server that says nothing about the file: never cached.
      const q = plan(srv.base, "/plain", []);
      await captureLog(() => stage(q, opts(dir)));
      assert.deepEqual(
        (await manifests(dir)).map((m) => m.url),
        [],
        "pruned the other URL, cached nothing for /plain",
      );
      srv.reset();
      await captureLog(() => stage(q, opts(dir)));
      assert.equal(srv.count("GET", "/plain"), 1);
      assert.equal(srv.count("HEAD", "/plain"), 0);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a HEAD answered with an error status keeps the cached copy for a later run (only a 200 can say the file changed)", async () => {
  const kernel = fakeKernel(20_000);
  const file: Served = { body: kernel, lastModified: LM1 };
  const srv = serve({ "/vmlinuz": file });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const kept = await cacheNames(dir);
      assert.equal(kept.length, 2);
      // The download that follows gives no validator: it records nothing
      // over the kept entry.
      file.lastModified = undefined;
      for (const status of [500, 404]) {
        file.headStatus = status;
        const [, lines] = await captureLog(() => stage(p, opts(dir)));
        assert.ok(
          lines.some((l) => l.includes(`(HEAD answered ${status})`)),
          lines.join("\n"),
        );
        assert.deepEqual(await cacheNames(dir), kept, `HEAD ${status}`);
      }
      file.lastModified = LM1;
      file.headStatus = undefined;
      srv.reset();
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 0, "reused");
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a copy refused for what it holds (size, sha256, format) is dropped at once, even when nothing new is recorded over it", async () => {
  const kernel = fakeKernel(20_000);
  const file: Served = { body: kernel, lastModified: LM1 };
  const srv = serve({ "/vmlinuz": file });
  const flip = async (path: string) => {
    const bytes = await Deno.readFile(path);
    bytes[5000] ^= 0xff;
    await Deno.writeFile(path, bytes);
  };
  const cases: [string, (path: string) => Promise<void>, string][] = [
    ["size", (path) => Deno.truncate(path, 100), "x86_64"],
    ["sha256", flip, "x86_64"],
    ["format", () => Promise.resolve(), "aarch64"],
  ];
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      for (const [what, spoil, arch] of cases) {
        file.getDrops = undefined;
        await captureLog(() => stage(p, opts(dir)));
        const names = await cacheNames(dir);
        assert.equal(names.length, 2, what);
        await spoil(`${dir}/cache/${names.find((n) => !n.endsWith(".json"))}`);
        // The download that follows has no validator: it records nothing
        // over the refused entry, which must be gone by itself.
        file.getDrops = ["last-modified"];
        await captureLog(() =>
          stage(p, opts(dir, { arch })).catch(() => undefined)
        );
        assert.deepEqual(await cacheNames(dir), [], what);
      }
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: Content-Length alone (or a weak ETag) is no validator: nothing is kept, and a copy kept on it is never reused", async () => {
  const v1 = fakeKernel(20_000);
  const v2 = fakeKernel(20_000);
  v2[v2.length - 1] ^= 0xff; // the same size, other bytes
  const files: Record<string, Served> = {
    "/vmlinuz": { body: v1 },
    "/weak": { body: v1, etag: 'W/"v1"' },
  };
  const srv = serve(files);
  try {
    await withTemp(async (dir) => {
      for (const path of ["/vmlinuz", "/weak"]) {
        const p = plan(srv.base, path, []);
        await captureLog(() => stage(p, opts(dir)));
        assert.deepEqual(await manifests(dir), [], `${path}: nothing kept`);
      }
      // A copy an earlier version kept on Content-Length alone.
      const p = plan(srv.base, "/vmlinuz", []);
      files["/vmlinuz"].lastModified = LM1;
      await captureLog(() => stage(p, opts(dir)));
      const [kept] = await manifests(dir);
      const name = (await cacheNames(dir)).find((n) => n.endsWith(".json"))!;
      delete kept.lastModified;
      await Deno.writeTextFile(`${dir}/cache/${name}`, JSON.stringify(kept));
      files["/vmlinuz"] = { body: v2 };
      srv.reset();
      const [image, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1, "downloaded again");
      assert.equal(image.kernel.cached, undefined);
      assert.equal(image.kernel.sha256, sha(v2), "the new bytes, not the copy");
      assert.ok(
        lines.some((l) => /kept without a validator/.test(l)),
        lines.join("\n"),
      );
      assert.deepEqual(await manifests(dir), [], "the old entry was dropped");
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: the manifest keeps the ETag; reuse needs the same ETag on HEAD", async () => {
  const kernel = fakeKernel(30_000);
  const files: Record<string, Served> = {
    "/vmlinuz": { body: kernel, lastModified: LM1, etag: '"v1"' },
  };
  const srv = serve(files);
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      assert.equal((await manifests(dir))[0].etag, '"v1"');
      srv.reset();
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 0, "same ETag: reused");
      // Same bytes, size and date, another ETag: the server says it changed.
      files["/vmlinuz"].etag = '"v2"';
      srv.reset();
      const [image, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.equal(image.kernel.cached, undefined);
      assert.ok(
        lines.some((l) => /ETag changed \("v1" → "v2"\)/.test(l)),
        lines.join("\n"),
      );
      assert.equal((await manifests(dir))[0].etag, '"v2"');
      // An ETag that disappears is a change too.
      delete files["/vmlinuz"].etag;
      srv.reset();
      const [, gone] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.ok(gone.some((l) => /ETag changed \("v2" → none\)/.test(l)));
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a HEAD missing a validator the manifest recorded means download", async () => {
  const kernel = fakeKernel(30_000);
  const cases: [string[], RegExp][] = [
    [["content-length", "last-modified"], /Last-Modified changed|neither/],
    [["content-length"], /HEAD gives no Content-Length/],
    [["last-modified"], /Last-Modified changed \(.* → none\)/],
    [
      ["content-length", "last-modified", "etag"],
      /neither a strong ETag nor Last-Modified/,
    ],
  ];
  for (const [drops, reason] of cases) {
    const files: Record<string, Served> = {
      "/vmlinuz": { body: kernel, lastModified: LM1, etag: '"v1"' },
    };
    const srv = serve(files);
    try {
      await withTemp(async (dir) => {
        const p = plan(srv.base, "/vmlinuz", []);
        await captureLog(() => stage(p, opts(dir)));
        const [m] = await manifests(dir);
        assert.equal(m.contentLength, kernel.length);
        assert.equal(m.lastModified, LM1);
        files["/vmlinuz"].headDrops = drops;
        srv.reset();
        const [image, lines] = await captureLog(() => stage(p, opts(dir)));
        assert.equal(srv.count("GET", "/vmlinuz"), 1, drops.join("+"));
        assert.equal(image.kernel.cached, undefined);
        assert.ok(lines.some((l) => reason.test(l)), lines.join("\n"));
      });
    } finally {
      await srv.close();
    }
  }
});

Deno.test("cache: entries that are not regular files of ours are dropped, never hashed through nor linked", async () => {
  const kernel = fakeKernel(30_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  const mkfifo = (path: string) =>
    new Deno.Command("mkfifo", { args: [path] }).output();
  try {
    await withTemp(async (dir) => {
      const work = `${dir}/work`;
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(work)));
      const key = (await cacheNames(work)).find((n) => !n.endsWith(".json"))!;
      const entry = `${work}/cache/${key}`;
      // Outside the cache, the very bytes the manifest names.
      await Deno.writeFile(`${dir}/outside`, kernel);
      const swaps: [string, () => Promise<unknown>][] = [
        ["a link to a file with the right bytes", async () => {
          await Deno.remove(entry);
          await Deno.symlink(`${dir}/outside`, entry);
        }],
        ["a FIFO", async () => {
          await Deno.remove(entry);
          await mkfifo(entry);
        }],
        ["a manifest that is a link", async () => {
          await Deno.rename(`${entry}.json`, `${dir}/manifest`);
          await Deno.symlink(`${dir}/manifest`, `${entry}.json`);
        }],
        ["a manifest that is a FIFO", async () => {
          await Deno.remove(`${entry}.json`);
          await mkfifo(`${entry}.json`);
        }],
      ];
      if (Deno.uid() === 0) {
        swaps.push([
          "a file of another user",
          () => Deno.chown(entry, 65534, 65534),
        ]);
      }
      for (const [what, swap] of swaps) {
        await swap();
        srv.reset();
        const [image, lines] = await captureLog(() =>
          settleWithin(stage(p, opts(work)), {
            ms: 10_000,
            failure: `${what}: hangs`,
          })
        );
        assert.equal(srv.count("GET", "/vmlinuz"), 1, what);
        assert.equal(image.kernel.cached, undefined, what);
        assert.ok(
          lines.some((l) => /cached copy not used/.test(l)),
          `${what}\n${lines.join("\n")}`,
        );
        const kernelInfo = await Deno.lstat(`${work}/kernel`);
        assert.ok(kernelInfo.isFile, what);
        assert.notEqual(
          kernelInfo.ino,
          (await Deno.stat(`${dir}/outside`)).ino,
          `${what}: the kernel is not the file outside`,
        );
        // The entry was replaced by the new download's.
        assert.ok((await Deno.lstat(entry)).isFile, what);
        assert.equal((await Deno.lstat(entry)).uid, Deno.uid(), what);
        assert.ok((await Deno.lstat(`${entry}.json`)).isFile, what);
      }
      assert.deepEqual(await Deno.readFile(`${dir}/outside`), kernel);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: a pin the cached copy does not match is not served from the cache; the download decides", async () => {
  const a = fakeKernel(30_000);
  const b = fakeKernel(30_001);
  const files: Record<string, Served> = {
    "/vmlinuz": { body: a, lastModified: LM1 },
  };
  const srv = serve(files);
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      // The pin names another file; the server still has A: refused.
      srv.reset();
      const [, lines] = await captureLog(() =>
        assert.rejects(
          stage(p, opts(dir, { kernelSha256: sha(b) })),
          (err: unknown) =>
            err instanceof BootError && err.exitCode === ExitCode.Verify &&
            /sha256 mismatch/.test(err.message),
        )
      );
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.ok(lines.some((l) => /does not match the pinned sha256/.test(l)));
      // The cached A is still there and still used with its own pin.
      srv.reset();
      const [image] = await captureLog(() =>
        stage(p, opts(dir, { kernelSha256: sha(a) }))
      );
      assert.equal(srv.count("GET", "/vmlinuz"), 0);
      assert.equal(image.kernel.cached, true);
      // --artifact-sha256 too: a pin for B while the server now has B.
      files["/vmlinuz"] = { body: b, lastModified: LM1 };
      srv.reset();
      const [image2] = await captureLog(() =>
        stage(
          p,
          opts(dir, { artifactSha256: { [`${srv.base}/vmlinuz`]: sha(b) } }),
        )
      );
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.equal(image2.kernel.sha256, sha(b));
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: signed URLs are never cached nor probed", async () => {
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p: KexecPlan = {
        ...plan(srv.base, "/vmlinuz", []),
        kernel: { url: `${srv.base}/vmlinuz?api_key=secret-key`, name: "k" },
      };
      await captureLog(() => stage(p, opts(dir)));
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 2);
      assert.equal(srv.count("HEAD", "/vmlinuz"), 0);
      assert.deepEqual(await cacheNames(dir), []);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: with the mock InfraEnv the kernel is reused, pxe-initrd is fetched every run and never stored", async () => {
  const kernel = fakeKernel(100_000);
  const mock = await startMock({ kernel });
  try {
    await withTemp(async (dir) => {
      const resolve = async () => {
        const scripts = createScriptClient({
          kind: "infraenv",
          apiUrl: mock.apiUrl,
          infraEnvId: mock.infraEnvId,
          auth: { kind: "token", token: mock.accessToken },
        }, { retries: 0 });
        return (await resolvePlan(scripts, { settings: {} })) as KexecPlan;
      };
      const image = (method: string, suffix: string) =>
        mock.requests.filter((r) =>
          r.server === "image" && r.method === method &&
          r.path.split("?")[0].endsWith(suffix)
        ).length;
      const first = await resolve();
      assert.match(first.initrds[0].url, /pxe-initrd\?.*image_token=/);
      const [one] = await captureLog(() => stage(first, opts(dir)));
      const [two, lines] = await captureLog(async () =>
        stage(await resolve(), opts(dir))
      );
      assert.equal(image("GET", "/boot-artifacts/kernel"), 1);
      assert.equal(image("HEAD", "/boot-artifacts/kernel"), 1);
      assert.equal(image("GET", "/pxe-initrd"), 2);
      assert.equal(image("HEAD", "/pxe-initrd"), 0);
      assert.equal(two.kernel.sha256, one.kernel.sha256);
      assert.equal(two.kernel.cached, true);
      assert.equal(two.initrd!.parts[0].cached, undefined);
      assert.ok(lines.some((l) => /kernel: cached copy verified/.test(l)));
      const ms = await manifests(dir);
      assert.deepEqual(ms.map((m) => m.url), [first.kernel.url]);
      for (const name of await cacheNames(dir)) {
        const text = new TextDecoder().decode(
          await Deno.readFile(`${dir}/cache/${name}`),
        );
        assert.ok(!text.includes("image_token"), name);
      }
      assert.equal((await cacheNames(dir)).length, 2);
    });
  } finally {
    await mock.close();
  }
});

Deno.test("cache: cache: false neither reads nor keeps anything, and frees what an earlier run kept", async () => {
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir, { cache: false })));
      assert.deepEqual(await cacheNames(dir), []);
      await captureLog(() => stage(p, opts(dir)));
      assert.equal((await manifests(dir)).length, 1);
      srv.reset();
      await captureLog(() => stage(p, opts(dir, { cache: false })));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.equal(srv.count("HEAD", "/vmlinuz"), 0);
      assert.deepEqual(await cacheNames(dir), [], "the old entry is freed");
      // A cache/ that is not a directory of ours is left alone.
      await Deno.remove(`${dir}/cache`, { recursive: true });
      const elsewhere = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${elsewhere}/${"a".repeat(32)}`, "x");
        await Deno.symlink(elsewhere, `${dir}/cache`);
        await captureLog(() => stage(p, opts(dir, { cache: false })));
        assert.deepEqual(
          [...Deno.readDirSync(elsewhere)].map((e) => e.name),
          ["a".repeat(32)],
        );
      } finally {
        await Deno.remove(elsewhere, { recursive: true });
      }
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: entries the new plan does not use are freed before it downloads a byte (a small disk is not held by the old plan)", async () => {
  const v1 = fakeKernel(20_000);
  const v2 = fakeKernel(24_000);
  await withTemp(async (dir) => {
    const seenAtDownload: string[][] = [];
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => {
        const path = new URL(req.url).pathname;
        const body = path === "/v1" ? v1 : path === "/v2" ? v2 : undefined;
        if (!body) return new Response("not found", { status: 404 });
        if (req.method === "GET" && path === "/v2") {
          seenAtDownload.push(
            [...Deno.readDirSync(`${dir}/cache`)].map((e) => e.name),
          );
        }
        return new Response(req.method === "HEAD" ? null : body.slice(), {
          headers: {
            "content-length": String(body.length),
            "last-modified": LM1,
          },
        });
      },
    );
    const base = `http://127.0.0.1:${server.addr.port}`;
    try {
      await captureLog(() => stage(plan(base, "/v1", []), opts(dir)));
      assert.equal((await manifests(dir)).length, 1);
      await captureLog(() => stage(plan(base, "/v2", []), opts(dir)));
      assert.deepEqual(seenAtDownload, [[]], "v1 was still cached");
      assert.deepEqual((await manifests(dir)).map((m) => m.url), [
        `${base}/v2`,
      ]);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("cache: leftovers of an interrupted cache write are never reused and get pruned", async () => {
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const names = await cacheNames(dir);
      const manifest = names.find((n) => n.endsWith(".json"))!;
      // As if a run died after linking the file but before the manifest.
      await Deno.rename(
        `${dir}/cache/${manifest}`,
        `${dir}/cache/${manifest}.part`,
      );
      await Deno.writeTextFile(`${dir}/cache/${"0".repeat(32)}.part`, "x");
      srv.reset();
      await captureLog(() => stage(p, opts(dir)));
      assert.equal(srv.count("GET", "/vmlinuz"), 1);
      assert.equal(srv.count("HEAD", "/vmlinuz"), 0);
      assert.deepEqual(await cacheNames(dir), names);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: the same URL twice in a plan is recorded once, without a race, and reused whole by the next run", async () => {
  const kernel = fakeKernel(200_000);
  const srv = serve({
    "/vmlinuz": { body: kernel, lastModified: LM1 },
    "/a.gz": { body: GZIP, etag: '"a1"' },
  });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", ["/a.gz", "/a.gz", "/a.gz"]);
      for (let run = 0; run < 2; run++) {
        const [staged, lines] = await captureLog(() => stage(p, opts(dir)));
        assert.ok(
          !lines.some((l) => /Cannot cache|cached copy not used/.test(l)),
          lines.join("\n"),
        );
        assert.equal(staged.initrd!.parts.length, 3);
        if (run === 1) {
          assert.ok(staged.initrd!.parts.every((part) => part.cached));
        }
      }
      assert.equal(
        srv.count("GET", "/a.gz"),
        3,
        "downloaded by the first run only",
      );
      assert.equal(
        (await cacheNames(dir)).filter((n) => n.endsWith(".part")).length,
        0,
      );
    });
  } finally {
    await srv.close();
  }
});

async function secondRun(
  edit: (entry: string) => Promise<void>,
  extra: Partial<StageOptions> = {},
  served: Partial<Served> = {},
) {
  const kernel = fakeKernel(20_000);
  const srv = serve({
    "/vmlinuz": { body: kernel, lastModified: LM1, ...served },
  });
  try {
    return await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      const [, first] = await captureLog(() => stage(p, opts(dir)));
      const key = (await cacheNames(dir)).find((n) => !n.endsWith(".json"));
      if (key) await edit(`${dir}/cache/${key}`);
      srv.reset();
      const result = await captureLog(() =>
        stage(p, opts(dir, extra)).then(
          (image) => ({ image, error: undefined }),
          (error: unknown) => ({ image: undefined, error }),
        )
      );
      return {
        ...result[0],
        first,
        lines: result[1],
        gets: srv.count("GET", "/vmlinuz"),
        heads: srv.count("HEAD", "/vmlinuz"),
        names: await cacheNames(dir),
        dir,
      };
    });
  } finally {
    await srv.close();
  }
}

Deno.test("staleReason: one validator is enough when it agrees; the reason names both sides", () => {
  const m = { size: 10 };
  // Content-Length alone is no validator; any single real one that agrees allows reuse.
  assert.match(
    staleReason(m, { status: 200, contentLength: 10 }) ?? "",
    /kept without a validator/,
  );
  assert.equal(
    staleReason({ ...m, lastModified: LM1 }, {
      status: 200,
      lastModified: LM1,
    }),
    undefined,
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"' }, { status: 200, etag: '"a"' }),
    undefined,
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"' }, { status: 200, etag: '"b"' }),
    'ETag changed ("a" → "b")',
  );
  // Kept without a validator: never reused, whatever the HEAD says.
  for (const head of [{ etag: '"b"' }, { lastModified: LM2 }]) {
    assert.equal(
      staleReason(m, { status: 200, ...head }),
      "it was kept without a validator (a strong ETag or Last-Modified)",
    );
  }
  // A validator the manifest has and the HEAD lacks: Content-Length cannot stand in.
  assert.match(
    staleReason({ ...m, lastModified: LM1 }, {
      status: 200,
      contentLength: 10,
    }) ?? "",
    /neither a strong ETag nor Last-Modified/,
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"' }, {
      status: 200,
      etag: '"a"',
      contentLength: 11,
    }),
    "the size changed (10 → 11 bytes)",
  );
});

/** A load that caches /vmlinuz, then `edit` on the cache entry's names, then a second load. */
Deno.test("cache: a manifest that is not a valid one of ours is dropped and the artifact downloaded, before any HEAD", async () => {
  const edits: [string, (m: Record<string, unknown>) => unknown, RegExp][] = [
    ["not JSON", () => "{not json", /the manifest is not JSON/],
    ["too large", (m) => ({ ...m, pad: " ".repeat(70_000) }), /too large/],
    ["another version", (m) => ({ ...m, version: 2 }), /not valid/],
    ["another URL", (m) => ({ ...m, url: "http://h/x" }), /not valid/],
    ["a size as text", (m) => ({ ...m, size: String(m.size) }), /not valid/],
    ["a size of 0", (m) => ({ ...m, size: 0 }), /not valid/],
    ["no sha256", (m) => ({ ...m, sha256: 5 }), /not valid/],
    ["a short sha256", (m) => ({ ...m, sha256: "ab" }), /not valid/],
    [
      "a sha256 with more",
      (m) => ({ ...m, sha256: `${m.sha256}00` }),
      /not valid/,
    ],
    [
      "a sha256 with a prefix",
      (m) => ({ ...m, sha256: `00${m.sha256}` }),
      /not valid/,
    ],
    [
      "a Last-Modified that is a number",
      (m) => ({ ...m, lastModified: 5 }),
      /not valid/,
    ],
    ["an ETag that is a number", (m) => ({ ...m, etag: 5 }), /not valid/],
    [
      "a Content-Length as text",
      (m) => ({ ...m, contentLength: "20000" }),
      /not valid/,
    ],
    ["null", () => null, /not valid/],
  ];
  for (const [what, change, reason] of edits) {
    const run = await secondRun(async (entry) => {
      const m = JSON.parse(await Deno.readTextFile(`${entry}.json`));
      const edited = change(m);
      await Deno.writeTextFile(
        `${entry}.json`,
        typeof edited === "string" ? edited : JSON.stringify(edited),
      );
    });
    assert.equal(run.error, undefined, `${what}: ${run.error}`);
    assert.equal(run.gets, 1, what);
    assert.equal(run.heads, 0, what);
    assert.ok(
      run.lines.some((l) =>
        /kernel \(vmlinuz\): cached copy not used \(/.test(l) && reason.test(l)
      ),
      `${what}\n${run.lines.join("\n")}`,
    );
  }
  // The manifests the first runs wrote were accepted as they were.
  const untouched = await secondRun(() => Promise.resolve());
  assert.equal(untouched.gets, 0);
  assert.ok(
    !untouched.first.some((l) => /cached copy/.test(l)),
    `nothing to say about a cache that is empty\n${untouched.first.join("\n")}`,
  );
});

Deno.test("cache: a cached file of the wrong size is dropped without a HEAD", async () => {
  const run = await secondRun((entry) => Deno.truncate(entry, 100));
  assert.equal(run.gets, 1);
  assert.equal(run.heads, 0);
  assert.ok(
    run.lines.some((l) =>
      /cached copy not used \(its size on disk is wrong\)/.test(l)
    ),
    run.lines.join("\n"),
  );
});

Deno.test("cache: a HEAD that gets no answer in time means download, and the entry is kept for a later run", async () => {
  const kernel = fakeKernel(20_000);
  const { promise: stop, resolve: release } = Promise.withResolvers<void>();
  let gets = 0;
  let missing = false;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const headers = {
        "content-length": String(kernel.length),
        "last-modified": LM1,
      };
      if (req.method === "HEAD") {
        await stop;
        return new Response(null, { headers });
      }
      if (missing) return new Response("gone for now", { status: 404 });
      gets++;
      return new Response(kernel.slice(), { headers });
    },
  );
  try {
    await withTemp(async (dir) => {
      const p = plan(`http://127.0.0.1:${server.addr.port}`, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const [image, lines] = await captureLog(() =>
        stage(p, opts(dir, { timeoutMs: 300 }))
      );
      assert.equal(image.kernel.cached, undefined);
      assert.equal(gets, 2);
      assert.ok(
        lines.some((l) =>
          /cached copy not used \(HEAD failed: .*no answer within 0\.3 s/.test(
            l,
          )
        ),
        lines.join("\n"),
      );
      // No answer to the HEAD and a failed download: the boot fails, and the
      // entry stays for the next run, which reuses it once the server
      // answers again.
      missing = true;
      const [failed] = await captureLog(() =>
        stage(p, opts(dir, { timeoutMs: 300 })).then(
          () => undefined,
          (err: unknown) => err,
        )
      );
      assert.ok(failed instanceof BootError, String(failed));
      missing = false;
      release();
      const [again, after] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(again.kernel.cached, true, after.join("\n"));
      assert.equal(gets, 2);
    });
  } finally {
    release();
    await server.shutdown();
  }
});

Deno.test("cache: a cached copy must pass this run's format check too", async () => {
  // Cached for x86_64 (a bzImage), then asked for by an aarch64 run.
  const run = await secondRun(() => Promise.resolve(), { arch: "aarch64" });
  assert.ok(run.error instanceof BootError, String(run.error));
  assert.equal(run.gets, 1);
  assert.ok(
    run.lines.some((l) =>
      /kernel \(vmlinuz\): cached copy not used \(.* not an arm64 Image/.test(l)
    ),
    run.lines.join("\n"),
  );
});

Deno.test("cache: only a Last-Modified, or only an ETag, is enough to cache and reuse", async () => {
  for (const served of [{ lastModified: LM1 }, { etag: '"e1"' }]) {
    const run = await secondRun(() => Promise.resolve(), {}, {
      chunked: true,
      lastModified: undefined,
      ...served,
    });
    assert.equal(run.error, undefined, String(run.error));
    assert.equal(run.gets, 0, JSON.stringify(served));
    assert.equal(run.image?.kernel.cached, true);
  }
});

Deno.test("cache: no descriptor stays open on the work directory after a run that wrote or used the cache", async () => {
  const openIn = (dir: string) =>
    [...Deno.readDirSync("/proc/self/fd")].map((e) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      } catch {
        return "";
      }
    }).filter((target) => target.startsWith(dir));
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      assert.deepEqual(openIn(dir), [], "after writing the cache");
      const [image] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(image.kernel.cached, true);
      assert.deepEqual(openIn(dir), [], "after using the cache");
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: an entry that cannot be written is a warning, leaves no .part, and the boot goes on", async () => {
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const key = (await cacheNames(dir)).find((n) => !n.endsWith(".json"))!;
      // A directory where the entry goes: the rename onto it fails.
      await Deno.remove(`${dir}/cache/${key}`);
      await Deno.remove(`${dir}/cache/${key}.json`);
      await Deno.mkdir(`${dir}/cache/${key}/in`, { recursive: true });
      const [image, lines] = await captureLog(() => stage(p, opts(dir)));
      assert.equal(image.kernel.sha256, sha(kernel));
      assert.ok(
        lines.some((l) =>
          /warn: Cannot cache http:\/\/127\.0\.0\.1:\d+\/vmlinuz: /.test(l)
        ),
        lines.join("\n"),
      );
      assert.deepEqual(await cacheNames(dir), [key]);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: pruning removes only names of cache entries, never other files", async () => {
  const kernel = fakeKernel(20_000);
  const srv = serve({ "/vmlinuz": { body: kernel, lastModified: LM1 } });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, "/vmlinuz", []);
      await captureLog(() => stage(p, opts(dir)));
      const entries = await cacheNames(dir);
      const key = "0".repeat(32);
      const foreign = ["notes.txt", `x${key}`, `${key}.json.bak`, `${key}x`];
      // Other URLs' entries before and after the foreign names, whatever
      // order the directory lists them in: all of them go.
      const stale = (c: string) => `${c.repeat(32)}`;
      for (const c of ["2", "3"]) {
        await Deno.writeTextFile(`${dir}/cache/${stale(c)}`, "old");
        await Deno.writeTextFile(`${dir}/cache/${stale(c)}.json`, "{}");
      }
      for (const name of foreign) {
        await Deno.writeTextFile(`${dir}/cache/${name}`, "keep");
      }
      await Deno.mkdir(`${dir}/cache/${"1".repeat(32)}`);
      await Deno.writeTextFile(`${dir}/cache/${key}`, "another URL's entry");
      await Deno.writeTextFile(`${dir}/cache/${stale("4")}.part`, "x");
      await captureLog(() => stage(p, opts(dir)));
      assert.deepEqual(
        await cacheNames(dir),
        [...entries, ...foreign, "1".repeat(32)].sort(),
      );
    });
  } finally {
    await srv.close();
  }
});

Deno.test("cache: reuse over https with a private CA (--ca-cert): the HEAD uses the same client", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const kernel = fakeKernel(20_000);
    let gets = 0;
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    }, (req) => {
      if (req.method === "GET") gets++;
      return new Response(req.method === "HEAD" ? null : kernel.slice(), {
        headers: {
          "content-length": String(kernel.length),
          "last-modified": LM1,
        },
      });
    });
    const client = createClient({ caCertFiles: [`${dir}/ca.pem`] })!;
    try {
      const p = plan(`https://127.0.0.1:${server.addr.port}`, "/vmlinuz", []);
      const work = `${dir}/work`;
      await captureLog(() => stage(p, opts(work, { client })));
      const [image, lines] = await captureLog(() =>
        stage(p, opts(work, { client }))
      );
      assert.equal(image.kernel.cached, true, lines.join("\n"));
      assert.equal(gets, 1);
    } finally {
      client.close();
      await server.shutdown();
    }
  });
});
