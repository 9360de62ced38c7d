/**
 * The staging step against the mock InfraEnv (real script → plan → verified
 * files) and small Deno.serve servers for concurrency, pins and arm64.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { createScriptClient } from "../../lib/resolve/infraenv.ts";
import { isSignedUrl } from "../../lib/stage/artifact_url.ts";
import { artifactPin } from "../../lib/stage/pins.ts";
import { MAX_CONCURRENT_DOWNLOADS, stage } from "../../lib/stage/stage.ts";
import { lockWorkDir } from "../../lib/stage/work_dir.ts";
import type { KexecPlan } from "../../lib/plan.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import {
  fakeKernel,
  type MockInfraEnv,
  startMock,
} from "../../dev/mock_infraenv.ts";
import { captureLog, filesLibc, settleWithin, withTemp } from "../test_util.ts";
import { createFaults } from "../../dev/faults.ts";
import { kexecLoad } from "../../lib/kexec/load.ts";

const enc = new TextEncoder();
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Fetches and runs the InfraEnv's script, like main does. */
function resolver(mock: MockInfraEnv): () => Promise<KexecPlan> {
  return async () => {
    const scripts = createScriptClient({
      kind: "infraenv",
      apiUrl: mock.apiUrl,
      infraEnvId: mock.infraEnvId,
      auth: { kind: "token", token: mock.accessToken },
    }, { retries: 0 });
    const plan = await resolvePlan(scripts, { settings: {} });
    assert.equal(plan.action, "kexec");
    return plan as KexecPlan;
  };
}

const bootError = (code: number, message?: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BootError, String(err));
  assert.equal(err.exitCode, code, err.message);
  if (message) assert.match(err.message, message);
  return true;
};

Deno.test("stage: the mock's plan becomes a verified kernel and an assembled initrd; no bearer on the image service", async () => {
  const kernel = fakeKernel(300_000);
  const mock = await startMock({
    kernel,
    extraInitrds: [{
      name: "hello.sh",
      body: enc.encode("#!/bin/sh\necho hi\n"),
      wrapAs: "/usr/local/bin/hello.sh mode=0755",
    }],
  });
  try {
    await withTemp(async (dir) => {
      const plan = await resolver(mock)();
      const workDir = `${dir}/work`;
      const [image] = await captureLog(() =>
        stage(plan, { workDir, progress: "lines", retries: 0 })
      );
      assert.equal((await Deno.stat(workDir)).mode! & 0o777, 0o700);
      assert.equal(image.kernel.sha256, sha(kernel));
      assert.equal(image.kernel.size, kernel.length);
      assert.equal(image.kernel.format, "bzimage");
      assert.deepEqual(await Deno.readFile(image.kernel.path), kernel);
      assert.equal(image.cmdline, plan.cmdline);
      assert.equal(image.plan, plan);
      const initrd = image.initrd!;
      assert.equal(initrd.parts.length, plan.initrds.length);
      assert.equal(initrd.parts.length, 2);
      const bytes = await Deno.readFile(initrd.path);
      assert.equal(initrd.sha256, sha(bytes));
      assert.equal(initrd.size, bytes.length);
      // Part 0 (pxe-initrd) raw at 0, part 1 cpio-wrapped at the next page.
      assert.equal(initrd.parts[0].offset, 0);
      assert.equal(initrd.parts[1].offset % 4096, 0);
      assert.ok(initrd.parts[1].offset >= initrd.parts[0].size);
      assert.equal(
        sha(bytes.subarray(0, initrd.parts[0].size)),
        initrd.parts[0].sha256,
      );
      const wrapped = new TextDecoder().decode(
        bytes.subarray(initrd.parts[1].offset),
      );
      assert.match(wrapped, /^070701/);
      assert.ok(wrapped.includes("/usr/local/bin/hello.sh\0"));
      assert.ok(wrapped.endsWith("#!/bin/sh\necho hi\n"));

      const imageRequests = mock.requests.filter((r) => r.server === "image");
      assert.ok(imageRequests.length >= 3, "kernel, pxe-initrd, extra");
      for (const r of imageRequests) {
        assert.equal(r.headers["authorization"], undefined, r.path);
      }
      assert.ok(
        mock.requests.some((r) =>
          r.server === "api" && r.headers["authorization"]
        ),
        "the API did get the bearer",
      );
    });
  } finally {
    await mock.close();
  }
});

Deno.test("stage: an expired signed initrd URL (401) makes stage fetch the script again", async () => {
  const mock = await startMock();
  try {
    await withTemp(async (dir) => {
      const resolve = resolver(mock);
      const plan = await resolve();
      mock.expireImageTokens(); // the 4 h signature "expires"
      let refetches = 0;
      const [image, lines] = await captureLog(() =>
        stage(plan, {
          workDir: dir,
          progress: "none",
          retries: 0,
          refetchPlan: () => {
            refetches++;
            return resolve();
          },
        })
      );
      assert.equal(refetches, 1);
      assert.notEqual(image.plan, plan);
      assert.notEqual(image.plan.initrds[0].url, plan.initrds[0].url);
      const initrdRequests = mock.requests.filter((r) =>
        r.path.includes("/pxe-initrd")
      );
      assert.deepEqual(initrdRequests.map((r) => r.status), [401, 200]);
      assert.ok(
        lines.some((l) =>
          /image_token=REDACTED.* answered 401: .*fetching the script again/
            .test(l)
        ),
        lines.join("\n"),
      );
      assert.ok(!lines.join("\n").includes("imgtok-"), "token redacted");
    });
  } finally {
    await mock.close();
  }
});

Deno.test("stage: refetching is bounded; without refetchPlan the 401 is a Download error", async () => {
  const mock = await startMock();
  try {
    await withTemp(async (dir) => {
      const plan = await resolver(mock)();
      mock.expireImageTokens();
      let refetches = 0;
      await captureLog(() =>
        assert.rejects(
          stage(plan, {
            workDir: dir,
            progress: "none",
            retries: 0,
            refetchPlan: () => {
              refetches++;
              return Promise.resolve(plan); // still the expired URL
            },
          }),
          bootError(
            ExitCode.Download,
            /pxe-initrd.*image_token=REDACTED.*HTTP 401/,
          ),
        )
      );
      assert.equal(refetches, 2);
      await captureLog(() =>
        assert.rejects(
          stage(plan, { workDir: dir, progress: "none", retries: 0 }),
          bootError(ExitCode.Download, /HTTP 401/),
        )
      );
    });
  } finally {
    await mock.close();
  }
});

Deno.test("stage: an HTML page served as the kernel (status 200) is rejected, naming the URL", async () => {
  const mock = await startMock({
    kernel: enc.encode(
      "<!DOCTYPE html><html><body>Please log in</body></html>",
    ),
  });
  try {
    await withTemp(async (dir) => {
      const plan = await resolver(mock)();
      await captureLog(() =>
        assert.rejects(
          stage(plan, {
            workDir: dir,
            progress: "none",
            retries: 0,
            arch: "x86_64",
          }),
          bootError(
            ExitCode.Verify,
            /^Kernel http:\/\/127\.0\.0\.1:\d+\/api\/assisted-images\/boot-artifacts\/kernel\?arch=x86_64&version=[\d.]+ is an HTML page, not a kernel$/,
          ),
        )
      );
    });
  } finally {
    await mock.close();
  }
});

/** A tiny artifact server: path → bytes (or a status to answer); `gate` can hold a response. */
function serve(
  files: Record<string, Uint8Array | number>,
  gate?: (path: string) => Promise<void>,
) {
  const seen: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      seen.push(path);
      await gate?.(path);
      const body = files[path];
      if (typeof body === "number") {
        return new Response("refused", { status: body });
      }
      return body
        ? new Response(body as Uint8Array<ArrayBuffer>)
        : new Response("not found", { status: 404 });
    },
  );
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    seen,
    close: () => server.shutdown(),
  };
}

function plan(base: string, initrds: string[]): KexecPlan {
  return {
    action: "kexec",
    kernel: { url: `${base}/vmlinuz`, name: "vmlinuz" },
    initrds: initrds.map((p) => ({ url: `${base}${p}`, name: p.slice(1) })),
    cmdline: "console=ttyS0",
    scripts: [],
  };
}

Deno.test("stage: kernel and initrds download concurrently", async () => {
  const initrdAsked = Promise.withResolvers<void>();
  const gzip = new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
  const srv = serve(
    { "/vmlinuz": fakeKernel(), "/initrd.img": gzip },
    async (path) => {
      if (path === "/initrd.img") initrdAsked.resolve();
      if (path === "/vmlinuz") {
        // Sequential downloads would never get here: fail instead of hanging.
        await settleWithin(initrdAsked.promise, {
          ms: 5000,
          failure: "not concurrent",
        });
      }
    },
  );
  try {
    await withTemp(async (dir) => {
      const [image] = await captureLog(() =>
        stage(plan(srv.base, ["/initrd.img"]), {
          workDir: dir,
          progress: "none",
          retries: 0,
          arch: "x86_64",
        })
      );
      assert.equal(image.initrd!.size, gzip.length);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: the first failure aborts the other downloads", async () => {
  const released = Promise.withResolvers<void>();
  const srv = serve({ "/vmlinuz": fakeKernel() }, async (path) => {
    if (path === "/vmlinuz") await released.promise; // a stalled kernel
  });
  try {
    await withTemp(async (dir) => {
      const started = Date.now();
      await captureLog(() =>
        assert.rejects(
          stage(plan(srv.base, ["/missing.img"]), {
            workDir: dir,
            progress: "none",
            retries: 0,
            timeoutMs: 20_000,
          }),
          bootError(ExitCode.Download, /missing\.img: HTTP 404/),
        )
      );
      assert.ok(Date.now() - started < 5000, "did not wait for the kernel");
    });
  } finally {
    released.resolve();
    await srv.close();
  }
});

Deno.test("stage: pins — kernel, artifact (bare URL key) and assembled initrd", async () => {
  const kernel = fakeKernel();
  const cpio = enc.encode("070701" + "0".repeat(200));
  const srv = serve({ "/vmlinuz": kernel, "/a.cpio": cpio });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, ["/a.cpio"]);
      p.initrds[0].url += "?image_token=SECRET";
      const base = { workDir: dir, progress: "none" as const, retries: 0 };
      await captureLog(() =>
        assert.rejects(
          stage(p, { ...base, kernelSha256: "ab".repeat(32) }),
          bootError(
            ExitCode.Verify,
            /sha256 mismatch for .*\/vmlinuz: expected (ab){32}/,
          ),
        )
      );
      await captureLog(() =>
        assert.rejects(
          stage(p, {
            ...base,
            artifactSha256: { [`${srv.base}/a.cpio`]: "cd".repeat(32) },
          }),
          bootError(
            ExitCode.Verify,
            /a\.cpio\?image_token=REDACTED: expected (cd){32}/,
          ),
        )
      );
      await captureLog(() =>
        assert.rejects(
          stage(p, { ...base, initrdSha256: "ef".repeat(32) }),
          bootError(
            ExitCode.Verify,
            /assembled initrd: expected (ef){32}, got/,
          ),
        )
      );
      const [ok] = await captureLog(() =>
        stage(p, {
          ...base,
          kernelSha256: sha(kernel),
          artifactSha256: { [p.initrds[0].url]: sha(cpio) },
          initrdSha256: sha(cpio), // one raw part: the same bytes
        })
      );
      assert.equal(ok.initrd!.sha256, sha(cpio));
      const noInitrd = plan(srv.base, []);
      await captureLog(() =>
        assert.rejects(
          stage(noInitrd, { ...base, initrdSha256: sha(cpio) }),
          bootError(ExitCode.Verify, /no initrd/),
        )
      );
      const [bare] = await captureLog(() => stage(noInitrd, base));
      assert.equal(bare.initrd, undefined);
    });
  } finally {
    await srv.close();
  }
  assert.equal(artifactPin("http://h/a?x=1", { "http://h/a": "aa" }), "aa");
  assert.equal(
    artifactPin("http://h/a?x=1", { "http://h/a?x=2": "aa" }),
    undefined,
  );
  assert.ok(isSignedUrl("http://h/i?arch=x&image_token=t"));
  assert.ok(isSignedUrl("http://h/i?api_key=k"));
  assert.ok(!isSignedUrl("http://h/i?arch=x"));
});

Deno.test("stage: an initrd that is not an initramfs is refused unless cpio-wrapped", async () => {
  const srv = serve({
    "/vmlinuz": fakeKernel(),
    "/conf": enc.encode("key=value\n"),
  });
  try {
    await withTemp(async (dir) => {
      const base = {
        workDir: dir,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
      };
      await captureLog(() =>
        assert.rejects(
          stage(plan(srv.base, ["/conf"]), base),
          bootError(
            ExitCode.Verify,
            /^Initrd http:\/\/127\.0\.0\.1:\d+\/conf is of an unknown format/,
          ),
        )
      );
      const wrapped = plan(srv.base, ["/conf"]);
      wrapped.initrds[0].cpio = { path: "/etc/conf", mode: 0o644, mkdir: 0 };
      const [image] = await captureLog(() => stage(wrapped, base));
      assert.equal(image.initrd!.parts[0].size, 10);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: on aarch64 a gzip'd Image is unpacked for kexec_file_load", async () => {
  const arm = new Uint8Array(100_000).map((_, i) => i & 0xff);
  arm.set(enc.encode("ARM\x64"), 0x38);
  const gz = new Uint8Array(
    await new Response(
      new Blob([arm]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const srv = serve({ "/vmlinuz": gz });
  try {
    await withTemp(async (dir) => {
      const [image] = await captureLog(() =>
        stage(plan(srv.base, []), {
          workDir: dir,
          progress: "none",
          retries: 0,
          arch: "aarch64",
          kernelSha256: sha(gz), // the pin is on the downloaded file
        })
      );
      assert.equal(image.kernel.format, "gzip");
      assert.equal(image.kernel.path, `${dir}/kernel.Image`);
      assert.equal(image.kernel.sha256, sha(arm));
      assert.equal(image.kernel.download!.sha256, sha(gz));
      assert.deepEqual(await Deno.readFile(image.kernel.path), arm);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: a work dir that cannot be created is a Disk error", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    await assert.rejects(
      stage(plan("http://127.0.0.1:9", []), {
        workDir: `${dir}/file/work`,
        progress: "none",
      }),
      bootError(ExitCode.Disk),
    );
  });
});

Deno.test("stage: an unsupported scheme is refused before anything is fetched, without retries", async () => {
  await withTemp(async (dir) => {
    const started = Date.now();
    await assert.rejects(
      stage(plan("nfs://10.0.0.1/casper", ["/initrd"]), {
        workDir: `${dir}/w`,
        progress: "none",
      }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Download &&
        err.message ===
          'Unsupported URL scheme "nfs" in nfs://10.0.0.1/casper/vmlinuz (artifacts are fetched over http, https or file)',
    );
    assert.ok(Date.now() - started < 1000, "no retries");
    await assert.rejects(
      Deno.stat(`${dir}/w`),
      Deno.errors.NotFound,
      "nothing was prepared",
    );
  });
});

Deno.test("stage: a work dir that is a file, or writable by others, is refused; a new one is 0700", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    await assert.rejects(
      stage(plan("http://127.0.0.1:9", []), {
        workDir: `${dir}/file`,
        progress: "none",
      }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Disk &&
        /exists and is not a directory/.test(err.message),
    );
    await Deno.mkdir(`${dir}/shared`);
    await Deno.chmod(`${dir}/shared`, 0o777);
    await assert.rejects(
      stage(plan("http://127.0.0.1:9", []), {
        workDir: `${dir}/shared`,
        progress: "none",
      }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Disk &&
        /writable by other users/.test(err.message),
    );
    assert.equal(
      (await Deno.stat(`${dir}/shared`)).mode! & 0o777,
      0o777,
      "an existing directory keeps its mode",
    );
    await assert.rejects(
      stage(plan("http://127.0.0.1:9", []), {
        workDir: `${dir}/new/work`,
        progress: "none",
        retries: 0,
      }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Download,
    );
    assert.equal((await Deno.stat(`${dir}/new/work`)).mode! & 0o777, 0o700);
  });
});

Deno.test("stage: a failure leaves no file that could pass for verified; stale files are removed first", async () => {
  const kernel = fakeKernel();
  const srv = serve({
    "/vmlinuz": kernel,
    "/a.gz": new Uint8Array([0x1f, 0x8b, 8, 0]),
  });
  try {
    await withTemp(async (dir) => {
      const base = {
        workDir: dir,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
      };
      // A previous run's files, and a file that is not ours.
      for (
        const name of [
          "kernel",
          "initrd",
          "kernel.Image",
          "initrd-part-3",
          "kernel.part",
        ]
      ) {
        await Deno.writeTextFile(`${dir}/${name}`, "stale");
      }
      await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
      // The kernel verifies, the initrd 404s: nothing of ours may remain.
      await captureLog(() =>
        assert.rejects(
          stage(plan(srv.base, ["/a.gz", "/missing"]), base),
          bootError(ExitCode.Download, /missing: HTTP 404/),
        )
      );
      const names = [];
      for await (const e of Deno.readDir(dir)) names.push(e.name);
      // The kernel and /a.gz may have been aborted or verified; what is
      // cached is whole: no .part, and each manifest names a file that hashes
      // to it. The initrd that failed is not there. (The lock file stays.)
      assert.deepEqual(
        names.filter((n) => n !== "cache" && n !== ".lock"),
        ["notes.txt"],
      );
      const cached: string[] = [];
      if (names.includes("cache")) {
        for await (const e of Deno.readDir(`${dir}/cache`)) {
          cached.push(e.name);
        }
      }
      assert.ok(cached.every((n) => /^[0-9a-f]{32}(\.json)?$/.test(n)));
      for (const name of cached.filter((n) => n.endsWith(".json"))) {
        const m = JSON.parse(await Deno.readTextFile(`${dir}/cache/${name}`));
        const served: Record<string, Uint8Array> = {
          [`${srv.base}/vmlinuz`]: kernel,
          [`${srv.base}/a.gz`]: new Uint8Array([0x1f, 0x8b, 8, 0]),
        };
        assert.ok(served[m.url], m.url);
        assert.equal(m.sha256, sha(served[m.url]));
        const file = await Deno.readFile(
          `${dir}/cache/${name.replace(".json", "")}`,
        );
        assert.equal(sha(file), m.sha256);
      }
      // Success: only the final files, no parts, no .part.
      const [image] = await captureLog(() =>
        stage(plan(srv.base, ["/a.gz"]), base)
      );
      const after = [];
      for await (const e of Deno.readDir(dir)) after.push(e.name);
      // (This server gives no validator: nothing is cached.)
      assert.deepEqual(after.sort(), [
        ".lock",
        "initrd",
        "kernel",
        "notes.txt",
      ]);
      assert.equal(image.initrd!.path, `${dir}/initrd`);
      assert.equal((await Deno.stat(`${dir}/initrd`)).mode! & 0o777, 0o600);
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: a command line longer than the bzImage's cmdline_size is refused before kexec", async () => {
  const kernel = fakeKernel();
  const view = new DataView(kernel.buffer);
  view.setUint16(0x206, 0x20f, true);
  view.setUint32(0x238, 64, true);
  const srv = serve({ "/vmlinuz": kernel });
  try {
    await withTemp(async (dir) => {
      const p = plan(srv.base, []);
      const base = {
        workDir: dir,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
      };
      p.cmdline = "x".repeat(64);
      await captureLog(() => stage(p, base));
      p.cmdline = "x".repeat(65);
      await captureLog(() =>
        assert.rejects(
          stage(p, base),
          bootError(
            ExitCode.Verify,
            /command line is 65 bytes; this kernel accepts at most 64$/,
          ),
        )
      );
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage → kexecLoad: after a reset mid-kernel, kexec gets exactly the bytes the servers sent completely", async () => {
  const kernel = fakeKernel(400_000);
  const faults = createFaults();
  faults.add({
    match: { server: "image", method: "GET", path: "/boot-artifacts/kernel" },
    fault: { kind: "reset", afterBytes: 100_000 },
    times: 1,
  });
  const mock = await startMock({ kernel, faults });
  try {
    await withTemp(async (dir) => {
      const plan = await resolver(mock)();
      const [image] = await captureLog(() =>
        stage(plan, {
          workDir: `${dir}/work`,
          progress: "none",
          retries: 2,
          cache: false,
        })
      );
      // A libc on the real files: what kexec would get.
      const { libc, opened } = filesLibc();
      kexecLoad(image, { libc, arch: "x86_64" });
      assert.equal(opened.length, 2);
      assert.equal(
        sha(opened[0]),
        sha(kernel),
        "the kernel is the served kernel, whole",
      );
      const cut = faults.served.filter((r) =>
        r.path.includes("/boot-artifacts/kernel")
      );
      assert.deepEqual(
        cut.map((r) => r.complete),
        [false, true],
        "one cut answer, then a complete one",
      );
      const initrd = faults.served.find((r) =>
        r.path.includes("/pxe-initrd") && r.complete
      )!;
      assert.equal(
        sha(opened[1]),
        initrd.sha256,
        "the initrd is the one complete pxe-initrd answer",
      );
    });
  } finally {
    await mock.close();
  }
});

Deno.test("stage → kexecLoad: a kernel or initrd replaced after verification is never loaded", async () => {
  const kernel = fakeKernel(50_000);
  const srv = serve({
    "/vmlinuz": kernel,
    "/a.gz": new Uint8Array([0x1f, 0x8b, 8, 0, 1, 2, 3]),
  });
  try {
    await withTemp(async (dir) => {
      const base = {
        workDir: dir,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
        cache: false,
      };
      const swaps: [
        string,
        (
          image: { kernel: { path: string }; initrd?: { path: string } },
        ) => Promise<void>,
      ][] = [
        ["kernel renamed over", async (image) => {
          await Deno.writeFile(`${dir}/evil`, fakeKernel(50_000).fill(7, 4096));
          await Deno.rename(`${dir}/evil`, image.kernel.path);
        }],
        ["kernel made a symbolic link", async (image) => {
          await Deno.writeFile(`${dir}/evil`, kernel);
          await Deno.remove(image.kernel.path);
          await Deno.symlink(`${dir}/evil`, image.kernel.path);
        }],
        ["initrd rewritten to a new file of the same size", async (image) => {
          // The file system may hand the freed inode straight back; the new
          // file's modification time is later (wait so it is, at ms precision).
          await new Promise((resolve) => setTimeout(resolve, 3));
          const bytes = await Deno.readFile(image.initrd!.path);
          await Deno.remove(image.initrd!.path);
          await Deno.writeFile(image.initrd!.path, bytes.fill(9, 4));
        }],
      ];
      for (const [what, swap] of swaps) {
        const [image] = await captureLog(() =>
          stage(plan(srv.base, ["/a.gz"]), base)
        );
        // Unchanged: loads, and the syscall gets exactly the verified bytes.
        const ok = filesLibc();
        kexecLoad(image, { libc: ok.libc, arch: "x86_64" });
        assert.equal(sha(ok.opened[0]), sha(kernel));
        assert.equal(sha(ok.opened[1]), image.initrd!.sha256);
        await swap(image);
        const { libc } = filesLibc();
        let called = false;
        libc.syscall = () => {
          called = true;
          return 0n;
        };
        assert.throws(
          () => kexecLoad(image, { libc, arch: "x86_64" }),
          bootError(
            ExitCode.Disk,
            /not the file that was verified|symbolic link/,
          ),
          what,
        );
        assert.equal(called, false, `${what}: kexec_file_load is never called`);
        await Deno.remove(`${dir}/evil`).catch(() => {});
      }
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: leftovers at our names (links, FIFOs) are removed, never written through nor opened; a directory is exit 8", async () => {
  const kernel = fakeKernel(40_000);
  const gz = new Uint8Array([0x1f, 0x8b, 8, 0, 1, 2, 3]);
  const srv = serve({ "/vmlinuz": kernel, "/a.gz": gz });
  const mkfifo = (path: string) =>
    new Deno.Command("mkfifo", { args: [path] }).output();
  try {
    await withTemp(async (dir) => {
      const work = `${dir}/work`;
      await Deno.mkdir(work, { mode: 0o700 });
      await Deno.writeTextFile(`${dir}/victim`, "precious");
      await Deno.symlink(`${dir}/victim`, `${work}/kernel.part`);
      await Deno.symlink(`${dir}/victim`, `${work}/initrd`);
      await mkfifo(`${work}/initrd-part-0.part`);
      await mkfifo(`${work}/initrd.part`);
      await mkfifo(`${work}/kernel`);
      const base = {
        workDir: work,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
        cache: false,
      };
      const [image] = await captureLog(() =>
        settleWithin(stage(plan(srv.base, ["/a.gz"]), base), {
          ms: 10_000,
          failure: "stage hangs on a FIFO",
        })
      );
      assert.equal(await Deno.readTextFile(`${dir}/victim`), "precious");
      assert.deepEqual(await Deno.readFile(`${work}/kernel`), kernel);
      for (const name of ["kernel", "initrd"]) {
        const info = await Deno.lstat(`${work}/${name}`);
        assert.ok(info.isFile && !info.isSymlink, name);
      }
      assert.equal(image.initrd!.parts[0].sha256, sha(gz));

      for (const name of ["kernel.part", "kernel", "initrd-part-0", "initrd"]) {
        await Deno.remove(`${work}/${name}`).catch(() => {});
        await Deno.mkdir(`${work}/${name}`);
        await captureLog(() =>
          assert.rejects(
            stage(plan(srv.base, ["/a.gz"]), base),
            bootError(
              ExitCode.Disk,
              new RegExp(
                `work/${
                  name.replace(".", "\\.")
                } is a directory where the bootloader writes a file`,
              ),
            ),
          )
        );
        await Deno.remove(`${work}/${name}`);
      }
    });
  } finally {
    await srv.close();
  }
});

Deno.test({
  name: "stage: a work dir owned by another user is refused (exit 8)",
  ignore: Deno.uid() !== 0,
  async fn() {
    await withTemp(async (dir) => {
      await Deno.mkdir(`${dir}/theirs`, { mode: 0o755 });
      await Deno.chown(`${dir}/theirs`, 65534, 65534);
      await assert.rejects(
        stage(plan("http://127.0.0.1:9", []), {
          workDir: `${dir}/theirs`,
          progress: "none",
        }),
        bootError(ExitCode.Disk, /belongs to uid 65534, not to this user/),
      );
    });
  },
});

Deno.test("stage: a second stage on a locked work dir is refused at once (exit 9); the lock is released after", async () => {
  const srv = serve({ "/vmlinuz": fakeKernel() });
  try {
    await withTemp(async (dir) => {
      const base = {
        workDir: dir,
        progress: "none" as const,
        retries: 0,
        arch: "x86_64",
      };
      const held = await lockWorkDir(dir);
      try {
        await assert.rejects(
          stage(plan(srv.base, []), base),
          bootError(ExitCode.Locked, /Another instance .* work directory/),
        );
        assert.deepEqual(srv.seen, [], "nothing fetched");
        // The holder itself loads with its lock.
        await captureLog(() =>
          stage(plan(srv.base, []), { ...base, lock: held })
        );
      } finally {
        held.release();
      }
      await captureLog(() => stage(plan(srv.base, []), base));
      await captureLog(() => stage(plan(srv.base, []), base));
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: after a 401 and a script re-fetch, the old plan's files are gone (signed parts at once)", async () => {
  const kernel = fakeKernel(30_000);
  const gz = (n: number) => new Uint8Array([0x1f, 0x8b, 8, 0, n]);
  let refused = 0;
  const srv = serve({
    "/vmlinuz": kernel,
    "/old-a.gz": gz(1),
    "/old-b.gz": 401,
    "/old-c.gz": gz(3),
    "/new.gz": gz(4),
  }, async (path) => {
    // The expired URL answers once the others are on disk.
    if (path === "/old-b.gz") {
      await new Promise((r) => setTimeout(r, 300));
      refused++;
    }
  });
  const signed = (p: string, token: string) => `${p}?image_token=${token}`;
  try {
    await withTemp(async (dir) => {
      const old = plan(srv.base, [
        signed("/old-a.gz", "old"),
        signed("/old-b.gz", "old"),
        "/old-c.gz",
      ]);
      const fresh = plan(srv.base, [signed("/new.gz", "new")]);
      const duringRefetch: string[] = [];
      const listing = async () => {
        const names = [];
        for await (const e of Deno.readDir(dir)) names.push(e.name);
        return names.sort();
      };
      const [image] = await captureLog(() =>
        stage(old, {
          workDir: dir,
          progress: "none",
          retries: 0,
          arch: "x86_64",
          refetchPlan: async () => {
            duringRefetch.push(...await listing());
            return fresh;
          },
        })
      );
      assert.equal(refused, 1);
      // While the script is fetched again, the signed part that downloaded
      // (old-a) is already gone; the unsigned ones may wait for the new plan.
      assert.ok(
        !duringRefetch.includes("initrd-part-0"),
        duringRefetch.join(" "),
      );
      assert.ok(duringRefetch.every((n) => !n.endsWith(".part")));
      // After: the new plan's files only (old-c's part is not in it).
      // (This server gives no validator: nothing is cached.)
      assert.deepEqual(await listing(), [".lock", "initrd", "kernel"]);
      assert.equal(image.initrd!.parts.length, 1);
      assert.equal(image.initrd!.parts[0].sha256, sha(gz(4)));
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: at most MAX_CONCURRENT_DOWNLOADS artifacts are fetched at once", async () => {
  const gz = new Uint8Array([0x1f, 0x8b, 8, 0, 0]);
  const files: Record<string, Uint8Array> = { "/vmlinuz": fakeKernel() };
  for (let i = 0; i < 200; i++) files[`/i${i}.gz`] = gz;
  let inFlight = 0;
  let most = 0;
  const srv = serve(files, async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 1));
    inFlight--;
  });
  try {
    await withTemp(async (dir) => {
      const [image] = await captureLog(() =>
        stage(plan(srv.base, Object.keys(files).slice(1)), {
          workDir: dir,
          progress: "none",
          retries: 0,
          arch: "x86_64",
          cache: false,
        })
      );
      assert.equal(image.initrd!.parts.length, 200);
      assert.ok(most <= MAX_CONCURRENT_DOWNLOADS, `${most} at once`);
      assert.ok(most > 1, "still concurrent");
    });
  } finally {
    await srv.close();
  }
});

Deno.test("stage: hundreds of initrds under a low open-file limit (ulimit -n 64) do not run out of descriptors", async () => {
  await withTemp(async (dir) => {
    const script = `${dir}/many.ts`;
    await Deno.writeTextFile(
      script,
      `import { stage } from ${
        JSON.stringify(import.meta.resolve("../../lib/stage/stage.ts"))
      };
const gz = new Uint8Array([0x1f, 0x8b, 8, 0, 0]);
const kernel = new Uint8Array(4096);
kernel.set([0x48, 0x64, 0x72, 0x53], 0x202);
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} },
  (req) => new Response(new URL(req.url).pathname === "/k" ? kernel : gz));
const base = "http://127.0.0.1:" + server.addr.port;
const image = await stage({
  action: "kexec",
  kernel: { url: base + "/k", name: "k" },
  initrds: Array.from({ length: 500 }, (_, i) => ({ url: base + "/i" + i, name: "i" + i })),
  cmdline: "",
  scripts: [],
}, { workDir: Deno.args[0], progress: "none", retries: 0, arch: "x86_64", cache: false });
await server.shutdown();
console.log(image.initrd.parts.length);
`,
    );
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'ulimit -n 64 && exec "$0" run -A --no-config "$1" "$2"',
        Deno.execPath(),
        script,
        `${dir}/work`,
      ],
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "500");
  });
});

Deno.test("stage: an expired signed initrd URL is not retried with backoff before the script is fetched again", async () => {
  const mock = await startMock();
  try {
    await withTemp(async (dir) => {
      const resolve = resolver(mock);
      const plan = await resolve();
      mock.expireImageTokens();
      let refetches = 0;
      await captureLog(() =>
        stage(plan, {
          workDir: dir,
          progress: "none",
          retries: 3,
          refetchPlan: () => {
            refetches++;
            return resolve();
          },
        })
      );
      assert.equal(refetches, 1);
      const initrdRequests = mock.requests.filter((r) =>
        r.path.includes("/pxe-initrd")
      );
      assert.deepEqual(initrdRequests.map((r) => r.status), [401, 200]);
    });
  } finally {
    await mock.close();
  }
});
