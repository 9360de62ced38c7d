/**
 * The initramfs when things go wrong, in QEMU against the mock InfraEnv:
 *
 * - it keeps trying like the disk image's unit: the first attempts fail (the
 *   mock answers 503), the reason and exit code are on the console each
 *   time, and a later attempt kexecs into the served kernel;
 * - an exit code no retry can fix (2, bad configuration) stops the loop;
 * - on a kernel where `kexec_file_load` fails with ENOSYS, the bootloader
 *   loads the same files with kexec-tools' `kexec -l` (`kexec_load`) and the
 *   second kernel starts. The guest kernel has KEXEC_FILE, so the ENOSYS is
 *   made the way systemd's `SystemCallFilter=` would: a seccomp filter
 *   (tests/vm/fixtures/deny_kexec_file_load.c, built static here) installed
 *   before the bootloader starts answers that one system call with ENOSYS and
 *   lets `kexec_load` and `reboot` through. It is added to the test initramfs
 *   as a second cpio archive that wraps `/init-bootloader`; the product
 *   initramfs is unchanged.
 *
 * - a private CA is trusted in the initramfs both ways it can be given: in
 *   its system store (where `make initrd CA_BUNDLE=` puts it; here through a
 *   second archive) and fetched with `assisted.ca_cert_url` +
 *   `assisted.ca_cert_sha256`: the script and the artifacts come over https
 *   from servers signed by each, with `DENO_TLS_CA_STORE` unset.
 *
 * Builds with `make initrd marker-initrd` first (skipped with `VM_TEST_NO_BUILD=1`).
 * Skipped, with a message, only when qemu-system-x86_64 is not installed.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the probe.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createFaults } from "../../dev/faults.ts";
import { type MockOptions, startMock } from "../../dev/mock_infraenv.ts";
import { makeTestCerts } from "../test_util.ts";
import {
  type Accel,
  findQemu,
  type GuestForward,
  type LineMatch,
  probeAccel,
  startVm,
  type Vm,
} from "../../dev/qemu.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const KERNEL = `${BUILD}/vm/vmlinuz`;
const BOOT_INITRD = `${BUILD}/initrd/assisted-bootloader.initrd`;
const MARKER_INITRD = `${BUILD}/vm/marker.initrd`;
const GUEST_ADDRESS = "10.0.2.100";
/** Hard limit per VM (a TCG run with a kexec takes about 25 s on 2 cores). */
const VM_TIMEOUT_MS = 180_000;

const qemu = findQemu();
if (!qemu) {
  console.warn(
    "vm_initramfs_test: SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)",
  );
}

let prepared: Promise<Accel> | undefined;

/** Builds the kernel and both initrds and probes the accelerator, once per run. */
function prepare(): Promise<Accel> {
  prepared ??= (async () => {
    if (Deno.env.get("VM_TEST_NO_BUILD") !== "1") {
      const out = await new Deno.Command("make", {
        args: ["-s", "-C", ROOT, "initrd", "marker-initrd"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(
        out.success,
        `make initrd marker-initrd failed:\n${
          new TextDecoder().decode(out.stderr)
        }`,
      );
    }
    return await probeAccel(KERNEL, { cacheFile: `${BUILD}/vm/accel.json` });
  })();
  return prepared;
}

function stage(name: string, ms: number): void {
  console.log(`vm_initramfs: ${name}: ${(ms / 1000).toFixed(1)} s`);
}

async function reach(
  vm: Vm,
  name: string,
  pattern: RegExp,
  from = 0,
): Promise<LineMatch> {
  const hit = await vm.waitFor(pattern, { from });
  stage(name, hit.atMs);
  return hit;
}

/** Boots `initrd` against a mock made with `options`, runs `body`, always stops both. */
async function withGuest(
  label: string,
  options: {
    mock: MockOptions;
    initrd?: string;
    kargs: string[];
    /** The script URL (default: the mock's). */
    ipxeUrl?: string;
    /** More guest addresses forwarded to host ports. */
    forwards?: GuestForward[];
  },
  body: (vm: Vm, mock: Awaited<ReturnType<typeof startMock>>) => Promise<void>,
): Promise<void> {
  const accel = await prepare();
  const mock = await startMock({
    authMode: "none",
    sameOrigin: true,
    publicBaseUrl: `http://${GUEST_ADDRESS}`,
    kernel: KERNEL,
    initrd: MARKER_INITRD,
    ...options.mock,
  });
  const serialLog = `${BUILD}/vm/${label}.serial.log`;
  const vm = startVm({
    kernel: KERNEL,
    initrd: options.initrd ?? BOOT_INITRD,
    append: [
      "console=ttyS0",
      "panic=-1",
      `assisted.ipxe_url=${options.ipxeUrl ?? mock.ipxeScriptUrl}`,
      "assisted.progress=lines",
      ...options.kargs,
    ].join(" "),
    accel,
    forwards: [{
      guestAddress: GUEST_ADDRESS,
      guestPort: 80,
      hostPort: Number(new URL(mock.baseUrl).port),
    }, ...(options.forwards ?? [])],
    serialLog,
    timeoutMs: VM_TIMEOUT_MS,
  });
  try {
    await body(vm, mock);
  } catch (err) {
    const tail = vm.lines().slice(-60).join("\n");
    throw new Error(
      `${
        err instanceof Error ? err.message : err
      }\n--- last serial lines (${serialLog}) ---\n${tail}`,
    );
  } finally {
    await vm.kill();
    await mock.close();
  }
}

/** The marker kernel ran with our marker in its command line, and the VM powered off by itself. */
async function assertSecondKernel(
  vm: Vm,
  marker: string,
  from: number,
): Promise<void> {
  await reach(vm, "second kernel started", /Linux version/, from);
  const hit = await reach(
    vm,
    "marker printed",
    /assisted-marker: marker=(\S+)/,
    from,
  );
  assert.equal(hit.match[1], marker);
  const exit = await vm.exited;
  stage("VM powered off", exit.atMs);
  assert.equal(exit.killed, false, "the VM did not power off by itself");
}

Deno.test({
  name:
    "vm: the initramfs retries by default, the reason and exit code on the console each time, and the retry kexecs",
  ignore: !qemu,
  async fn() {
    const faults = createFaults();
    // The first two script requests get 503; with assisted.retries=0 and no busy budget
    // (assisted.busy_timeout=0) each one is a failed attempt.
    faults.add({
      match: { path: "file_name=ipxe-script" },
      fault: { kind: "status", status: 503, body: "down for maintenance" },
      times: 2,
    });
    const marker = `retry-${crypto.randomUUID().slice(0, 8)}`;
    await withGuest("retry", {
      mock: {
        faults,
        extraKargs: ["console=ttyS0", "panic=-1", `assisted_marker=${marker}`],
      },
      kargs: [
        "assisted.retries=0",
        "assisted.busy_timeout=0",
        "assisted.retry_delay=1",
      ],
    }, async (vm) => {
      const first = await reach(
        vm,
        "attempt 1",
        /assisted-initrd: starting the bootloader \(attempt 1\)/,
      );
      for (const n of [1, 2]) {
        const failed = await reach(
          vm,
          `attempt ${n} failed`,
          new RegExp(
            `assisted-initrd: error: the bootloader failed with exit code 4 \\(attempt ${n}\\): .*HTTP 503`,
          ),
          first.index,
        );
        await vm.waitFor(
          new RegExp(
            `assisted-initrd: assisted.on_failure=retry: trying again in 1 s \\(attempt ${
              n + 1
            }\\)`,
          ),
          { from: failed.index },
        );
      }
      const third = await reach(
        vm,
        "attempt 3",
        /assisted-initrd: starting the bootloader \(attempt 3\)/,
        first.index,
      );
      await assertSecondKernel(vm, marker, third.index);
      const scripts = faults.served.filter((s) =>
        s.path.includes("file_name=ipxe-script")
      );
      assert.deepEqual(scripts.slice(0, 3).map((s) => s.status), [
        503,
        503,
        200,
      ]);
      assert.ok(
        !vm.lines().some((l) => /dropping to a shell/.test(l)),
        "the retry mode dropped to a shell",
      );
    });
    faults.release();
  },
});

Deno.test({
  name:
    "vm: an exit code no retry can fix (2, bad configuration) stops the retry loop and says so",
  ignore: !qemu,
  async fn() {
    await withGuest("retry-stop", {
      mock: {},
      kargs: ["assisted.timeout=soon", "assisted.retry_delay=1"],
    }, async (vm) => {
      const failed = await reach(
        vm,
        "attempt 1 failed",
        /assisted-initrd: error: the bootloader failed with exit code 2 \(attempt 1\): Kernel command line parameter assisted\.timeout must be a number/,
      );
      await reach(
        vm,
        "not retried",
        /assisted-initrd: exit code 2 \(bad configuration\): retrying cannot fix it, not retrying/,
        failed.index,
      );
      await reach(
        vm,
        "shell",
        /assisted-initrd: dropping to a shell/,
        failed.index,
      );
      // A moment later still no second attempt.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      assert.ok(
        !vm.lines().some((l) =>
          /starting the bootloader \(attempt 2\)/.test(l)
        ),
        "a second attempt started",
      );
    });
  },
});

/**
 * The boot initramfs followed by a second archive made of the files of `dir`
 * (written as `build/vm/NAME.initrd`): the kernel unpacks concatenated
 * archives in order, later files replacing earlier ones; an uncompressed
 * archive must start on a 4-byte boundary (zero padding is skipped).
 */
async function withOverlay(name: string, dir: string): Promise<string> {
  const cpio = await new Deno.Command("sh", {
    args: [
      "-c",
      "find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0",
    ],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(cpio.success, new TextDecoder().decode(cpio.stderr));
  const base = await Deno.readFile(BOOT_INITRD);
  const pad = (4 - (base.length % 4)) % 4;
  const out = `${BUILD}/vm/${name}.initrd`;
  const file = await Deno.open(out, {
    write: true,
    create: true,
    truncate: true,
  });
  try {
    await file.write(base);
    await file.write(new Uint8Array(pad + 512));
    await file.write(cpio.stdout);
  } finally {
    file.close();
  }
  return out;
}

async function freshDir(name: string): Promise<string> {
  const dir = `${BUILD}/vm/${name}`;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** The boot initramfs plus a second archive that runs the bootloader under the seccomp filter. */
async function denyKexecFileLoadInitrd(): Promise<string> {
  const dir = await freshDir("deny-kexec-file-load");
  const cc = await new Deno.Command("gcc", {
    args: [
      "-static",
      "-O2",
      "-Wall",
      "-Werror",
      "-o",
      `${dir}/deny_kexec_file_load`,
      `${ROOT}/tests/vm/fixtures/deny_kexec_file_load.c`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err) => {
    throw new Error(
      `gcc cannot run (${err}): install gcc and libc6-dev (packages.txt)`,
    );
  });
  assert.ok(
    cc.success,
    `gcc -static failed (packages gcc, libc6-dev):\n${
      new TextDecoder().decode(cc.stderr)
    }`,
  );
  // /init runs /init-bootloader: the wrapper puts the real one under the filter.
  await Deno.copyFile(
    `${ROOT}/image/initrd/init-bootloader`,
    `${dir}/init-bootloader.real`,
  );
  await Deno.writeTextFile(
    `${dir}/init-bootloader`,
    '#!/bin/sh\nexec /deny_kexec_file_load /init-bootloader.real "$@"\n',
  );
  for (const f of ["init-bootloader", "init-bootloader.real"]) {
    await Deno.chmod(`${dir}/${f}`, 0o755);
  }
  return await withOverlay("deny-kexec-file-load", dir);
}

Deno.test({
  name:
    "vm: kexec_file_load failing with ENOSYS falls back to kexec-tools (kexec_load), and the second kernel starts",
  ignore: !qemu,
  async fn() {
    await prepare();
    const initrd = await denyKexecFileLoadInitrd();
    const id = crypto.randomUUID().slice(0, 8);
    const marker = `fallback-${id}`;
    const appended = `assisted_appended="a b ${id}"`;
    await withGuest("kexec-fallback", {
      mock: {
        extraKargs: ["console=ttyS0", "panic=-1", `assisted_marker=${marker}`],
      },
      initrd,
      kargs: [
        "assisted.on_failure=poweroff",
        "assisted.verbose=1",
        `assisted.append_karg=${appended}`,
      ],
    }, async (vm, mock) => {
      const first = await reach(
        vm,
        "bootloader under the filter",
        /deny_kexec_file_load: kexec_file_load now fails with ENOSYS/,
      );
      await reach(
        vm,
        "kexec_file_load called",
        /kexec_file_load\(/,
        first.index,
      );
      await reach(
        vm,
        "fallback",
        /warn: kexec_file_load failed: .*\(Function not implemented\): loading the same files with \/bin\/kexec -l \(kexec_load\) instead/,
        first.index,
      );
      const loaded = await reach(
        vm,
        "loaded by kexec-tools",
        /kernel loaded with kexec-tools \(\/bin\/kexec -l, kexec_load\)/,
        first.index,
      );
      await assertSecondKernel(vm, marker, loaded.index);
      // The same command line, a quoted value with spaces included.
      const cmdline = (await vm.waitFor(/assisted-marker: cmdline: (.*)/, {
        from: loaded.index,
      })).match[1];
      assert.ok(
        cmdline.includes(`assisted_marker=${marker}`),
        `marker missing from ${cmdline}`,
      );
      // Exactly the plan's command line: what --print-plan says against the
      // same mock, with the consoles of the guest's command line (the
      // initramfs passes --console host).
      const hostCmdline = await Deno.makeTempFile();
      await Deno.writeTextFile(hostCmdline, "console=ttyS0 panic=-1\n");
      const plan = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}/main.ts`,
          "--print-plan",
          "--no-host-settings",
          "--ipxe-url",
          mock.ipxeScriptUrl.replace(`http://${GUEST_ADDRESS}`, mock.baseUrl),
          "--append-karg",
          `assisted_appended=a b ${id}`,
          "--console",
          "host",
        ],
        env: {
          ASSISTED_KERNEL_CMDLINE_FILE: hostCmdline,
          ASSISTED_CONFIG: "/dev/null",
        },
        stdout: "piped",
        stderr: "piped",
      }).output().finally(() => Deno.remove(hostCmdline));
      assert.ok(plan.success, new TextDecoder().decode(plan.stderr));
      const expected =
        JSON.parse(new TextDecoder().decode(plan.stdout)).cmdline;
      assert.ok(expected.includes(appended), expected);
      assert.equal(cmdline, expected);
    });
  },
});

/** An HTTPS server on 127.0.0.1 with the leaf of `dir`; `routes` maps paths to bodies. */
async function serveTls(dir: string, routes: Record<string, () => BodyInit>) {
  const seen: string[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    cert: await Deno.readTextFile(`${dir}/leaf.pem`),
    key: await Deno.readTextFile(`${dir}/leaf.key`),
  }, (req) => {
    const path = new URL(req.url).pathname;
    seen.push(req.method === "GET" ? path : `${req.method} ${path}`);
    const route = routes[path];
    return route
      ? new Response(route())
      : new Response("not found", { status: 404 });
  });
  return { port: server.addr.port, seen, close: () => server.shutdown() };
}

Deno.test({
  name:
    "vm: the initramfs trusts a CA in its system store and one fetched with assisted.ca_cert_url (digest checked), and kexecs over https",
  ignore: !qemu,
  async fn() {
    await prepare();
    const certs = await freshDir("trust-certs");
    // Store CA: signs the script's server; fetched CA: signs the artifacts' server.
    for (const name of ["store", "fetched"]) {
      await Deno.mkdir(`${certs}/${name}`);
      await makeTestCerts(`${certs}/${name}`, [GUEST_ADDRESS]);
    }
    const fetchedCa = await Deno.readFile(`${certs}/fetched/ca.pem`);
    const caSha = createHash("sha256").update(fetchedCa).digest("hex");
    const storeDir = await freshDir("trust-store");
    await Deno.mkdir(`${storeDir}/etc/ssl/certs`, { recursive: true });
    await Deno.copyFile(
      `${certs}/store/ca.pem`,
      `${storeDir}/etc/ssl/certs/ca-certificates.crt`,
    );
    const initrd = await withOverlay("trust-store", storeDir);
    const marker = `trust-${crypto.randomUUID().slice(0, 8)}`;
    const artifacts = `https://${GUEST_ADDRESS}:8443`;
    const scripts = await serveTls(`${certs}/store`, {
      "/boot.ipxe": () =>
        `#!ipxe\nkernel ${artifacts}/kernel console=ttyS0 panic=-1 assisted_marker=${marker}\ninitrd ${artifacts}/initrd\nboot\n`,
    });
    const files = await serveTls(`${certs}/fetched`, {
      "/kernel": () => Deno.readFileSync(KERNEL),
      "/initrd": () => Deno.readFileSync(MARKER_INITRD),
    });
    try {
      await withGuest("trust", {
        mock: { files: { "/ca.pem": fetchedCa } },
        initrd,
        ipxeUrl: `https://${GUEST_ADDRESS}/boot.ipxe`,
        forwards: [
          {
            guestAddress: GUEST_ADDRESS,
            guestPort: 443,
            hostPort: scripts.port,
          },
          {
            guestAddress: GUEST_ADDRESS,
            guestPort: 8443,
            hostPort: files.port,
          },
        ],
        kargs: [
          "assisted.on_failure=poweroff",
          `assisted.ca_cert_url=http://${GUEST_ADDRESS}/ca.pem`,
          `assisted.ca_cert_sha256=${caSha}`,
        ],
      }, async (vm) => {
        const first = await reach(
          vm,
          "CA fetched and checked",
          /trusting 1 CA certificate\(s\) from http:\/\/10\.0\.2\.100\/ca\.pem \(sha256 [0-9a-f]{64}\)/,
        );
        await reach(
          vm,
          "script over https (store CA)",
          /plan: kernel https:\/\/10\.0\.2\.100:8443\/kernel/,
          first.index,
        );
        const loaded = await reach(
          vm,
          "artifacts over https (fetched CA), loaded",
          /kernel loaded with kexec_file_load/,
          first.index,
        );
        await assertSecondKernel(vm, marker, loaded.index);
      });
      assert.deepEqual(scripts.seen, ["/boot.ipxe"]);
      // The memory preflight's HEADs went through the fetched CA too.
      assert.deepEqual(files.seen.toSorted(), [
        "/initrd",
        "/kernel",
        "HEAD /initrd",
        "HEAD /kernel",
      ]);
    } finally {
      await scripts.close();
      await files.close();
    }
  },
});

Deno.test({
  name:
    "vm: a CA whose bytes do not have assisted.ca_cert_sha256 is not trusted: exit 6, nothing else fetched",
  ignore: !qemu,
  async fn() {
    await prepare();
    await withGuest("trust-mismatch", {
      mock: {
        files: {
          // Bytes, not a path: any PEM-looking text whose digest is not the one given.
          "/ca.pem": new TextEncoder().encode(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
          ),
        },
      },
      kargs: [
        "assisted.on_failure=poweroff",
        `assisted.ca_cert_url=http://${GUEST_ADDRESS}/ca.pem`,
        `assisted.ca_cert_sha256=${"0".repeat(64)}`,
      ],
    }, async (vm, mock) => {
      await reach(
        vm,
        "digest refused",
        /assisted-initrd: error: the bootloader failed with exit code 6 \(attempt 1\): The CA certificate http:\/\/10\.0\.2\.100\/ca\.pem has sha256 [0-9a-f]{64}, not 0{64} \(--ca-cert-sha256\): not trusted/,
      );
      const exit = await vm.exited;
      assert.equal(exit.killed, false, "the VM did not power off by itself");
      assert.deepEqual(mock.requests.map((r) => r.path), ["/ca.pem"]);
    });
  },
});
