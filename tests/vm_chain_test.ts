/**
 * The real chain in a VM (issue 6): Debian's real `ignition` applies the config
 * of `ignition/` to a Debian + systemd root filesystem, QEMU boots it, systemd
 * starts `assisted-bootloader.service` after network-online.target, the unit's
 * script downloads the bootloader from the mock, checks its sha256 and runs it,
 * the bootloader fetches the InfraEnv's iPXE script (API + SSO refresh token,
 * like the SaaS), verifies the kernel and initrd and hands off with
 * `systemctl kexec`; the kexec'd kernel's marker initrd prints its marker.
 *
 * The "binary" the unit downloads is the `deno bundle` output with a
 * `#!/usr/bin/env -S deno run -A` line (no `deno compile` here); the rootfs has
 * Deno at /usr/local/bin/deno. The unit and its script only check the sha256
 * and the executable bit.
 *
 * Cases: the happy path; a wrong sha256 for the binary (the unit fails, says
 * why, is restarted, never runs the binary, no kexec); the mock down (503) for
 * the first minute (the download is retried and the chain completes).
 *
 * Builds with image/rootfs/prepare_chain.sh (cached by checksum) and
 * apply_ignition.sh; needs root (debootstrap, device nodes in the rootfs).
 * Skipped with a message only when QEMU is missing or not running as root.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the
 * accelerator probe. Serial logs: build/chain/*.serial.log.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type MockInfraEnv, startMock } from "./mock_infraenv.ts";
import { renderIgnition } from "../ignition/mod.ts";
import {
  type Accel,
  findQemu,
  type LineMatch,
  probeAccel,
  startVm,
  type Vm,
} from "./vm/qemu.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const OUT = `${BUILD}/chain`;
const GUEST_ADDRESS = "10.0.2.100";
const GUEST_BASE = `http://${GUEST_ADDRESS}`;
const BINARY_ROUTE = "/chain/assisted-bootloader";
const INFRA_ENV_ID = "0c7e9a52-6b1d-4f3e-8a27-5d9c1b4e7f60";
const REFRESH_TOKEN = "chain-offline-token-" + crypto.randomUUID();
/** Karg from the Ignition config (`EXTRA_KARGS`): proves the bootloader read config.env. */
const CONFIG_KARG = "assisted_chain=from-ignition";
/** How long the mock answers 503 in the "mock down" case (the issue: "the first minute"). */
const DOWN_MS = 60_000;

const skipReason = !findQemu()
  ? "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)"
  : Deno.uid() !== 0
  ? "the rootfs build needs root (debootstrap)"
  : undefined;
if (skipReason) console.warn(`vm_chain_test: SKIPPED: ${skipReason}`);

function stage(name: string, ms: number): void {
  console.log(`vm_chain: ${name}: ${(ms / 1000).toFixed(1)} s`);
}

function sha256(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

async function run(cmd: string, args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(cmd, {
    args,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** What every case shares: built once per run. */
interface Prepared {
  accel: Accel;
  binary: string;
  binarySha: string;
  /** Rootfs image with the good config. */
  goodImage: string;
  /** Rootfs image whose config names a wrong sha256 for the binary. */
  badShaImage: string;
}

/** The config the chain test applies, as `make generate-ignition` would write it. */
function ignitionFor(mock: MockInfraEnv, binarySha: string): Promise<string> {
  const guest = (url: string) => {
    const u = new URL(url);
    return GUEST_BASE + u.pathname + u.search;
  };
  return renderIgnition({
    bootloaderUrl: GUEST_BASE + BINARY_ROUTE,
    bootloaderSha256: binarySha,
    apiUrl: guest(mock.apiUrl),
    infraEnvId: mock.infraEnvId,
    refreshToken: REFRESH_TOKEN + "\n",
    ssoUrl: guest(mock.ssoUrl),
    extraKargs: [CONFIG_KARG],
    settings: { ASSISTED_PROGRESS: "lines" },
  });
}

async function prepare(mock: MockInfraEnv): Promise<Prepared> {
  let t = performance.now();
  await Deno.mkdir(OUT, { recursive: true });
  const assets = await run(`${ROOT}/image/rootfs/prepare_chain.sh`, [
    OUT,
    `${BUILD}/cache`,
  ]);
  for (const line of assets.split("\n")) {
    if (line.startsWith("prepare_chain:")) console.log(`vm_chain: ${line}`);
  }
  stage("assets (kernel, initramfs, rootfs, marker)", performance.now() - t);

  t = performance.now();
  await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    "-o",
    `${OUT}/assisted-bootloader.js`,
    `${ROOT}/main.ts`,
  ], { DENO_TLS_CA_STORE: "system", DENO_NO_UPDATE_CHECK: "1" });
  const bundle = await Deno.readTextFile(`${OUT}/assisted-bootloader.js`);
  const binary = `${OUT}/assisted-bootloader`;
  await Deno.writeTextFile(
    binary,
    "#!/usr/bin/env -S deno run -A\n" + bundle,
    { mode: 0o755 },
  );
  const binarySha = sha256(await Deno.readFile(binary));
  stage("bootloader bundle", performance.now() - t);

  t = performance.now();
  const deno = Deno.execPath();
  const images: string[] = [];
  for (
    const [name, sha] of [
      ["good", binarySha],
      ["bad-sha", sha256("not the bootloader")],
    ]
  ) {
    const config = `${OUT}/${name}.ign`;
    await Deno.writeTextFile(config, await ignitionFor(mock, sha), {
      mode: 0o600,
    });
    await run("ignition-validate", [config]);
    const image = `${OUT}/${name}.ext4`;
    await run(`${ROOT}/image/rootfs/apply_ignition.sh`, [
      `${OUT}/rootfs.tar.zst`,
      config,
      image,
      deno,
    ]);
    await checkApplied(image, sha);
    images.push(image);
  }
  stage("ignition applied to 2 rootfs copies", performance.now() - t);

  t = performance.now();
  const accel = await probeAccel(`${OUT}/vmlinuz`, {
    cacheFile: `${OUT}/accel.json`,
  });
  stage(`accelerator probe: ${accel}`, performance.now() - t);
  return {
    accel,
    binary,
    binarySha,
    goodImage: images[0],
    badShaImage: images[1],
  };
}

/** Reads what Ignition wrote from the ext4 image (debugfs, no mount). */
async function checkApplied(image: string, sha: string): Promise<void> {
  const stat = async (path: string) =>
    await run("debugfs", ["-R", `stat ${path}`, image]);
  const mode = (text: string) => /Mode:\s+(\d+)/.exec(text)?.[1];
  assert.equal(mode(await stat("/etc/assisted-bootloader")), "0700");
  assert.equal(
    mode(await stat("/etc/assisted-bootloader/refresh-token")),
    "0600",
  );
  assert.equal(
    mode(await stat("/usr/local/bin/assisted-bootloader-run")),
    "0755",
  );
  const dump = await run("debugfs", [
    "-R",
    "cat /etc/assisted-bootloader/download.env",
    image,
  ]);
  assert.match(dump, new RegExp(`BOOTLOADER_SHA256="${sha}"`));
  const preset = await run("debugfs", [
    "-R",
    "cat /etc/systemd/system-preset/20-ignition.preset",
    image,
  ]);
  assert.match(preset, /^enable assisted-bootloader\.service$/m);
}

/** The rootfs boot: Debian kernel + chain initramfs, systemd status by unit name. */
function bootVm(p: Prepared, image: string, label: string, hostPort: number) {
  return startVm({
    kernel: `${OUT}/vmlinuz`,
    initrd: `${OUT}/initramfs.cpio`,
    append: [
      "console=ttyS0",
      "root=/dev/vda",
      "panic=-1",
      "systemd.show_status=1",
      "systemd.status_unit_format=name",
    ].join(" "),
    disk: image,
    accel: p.accel,
    memoryMiB: 1024,
    forwards: [{ guestAddress: GUEST_ADDRESS, guestPort: 80, hostPort }],
    // The discovery kargs add console=tty1: without a VGA card that console
    // costs nothing under TCG.
    extraArgs: ["-vga", "none"],
    serialLog: `${OUT}/${label}.serial.log`,
    timeoutMs: 300_000,
  });
}

async function reach(
  vm: Vm,
  label: string,
  name: string,
  pattern: RegExp,
  from = 0,
  timeoutMs?: number,
): Promise<LineMatch> {
  const hit = await vm.waitFor(pattern, { from, timeoutMs }).catch((err) => {
    throw new Error(
      `${label}: no line matching ${pattern} (${err}); serial log: ${vm.serialLog}\n` +
        vm.lines().slice(-40).join("\n"),
    );
  });
  stage(`${label}: ${name}`, hit.atMs);
  return hit;
}

/** The happy-path sequence after a good boot; returns the marker line. */
async function expectChain(
  vm: Vm,
  label: string,
  marker: string,
  binarySha: string,
): Promise<void> {
  const rootfs = await reach(
    vm,
    label,
    "initramfs mounted the rootfs",
    /chain-initramfs: \/dev\/vda mounted/,
  );
  const online = await reach(
    vm,
    label,
    "network-online.target",
    /Reached target .*network-online\.target/,
    rootfs.index,
  );
  const started = await reach(
    vm,
    label,
    "unit started",
    /Starting .*assisted-bootloader\.service/,
  );
  assert.ok(
    started.index > online.index,
    "the unit started before network-online.target",
  );
  const installed = await reach(
    vm,
    label,
    "binary downloaded and verified",
    /assisted-bootloader-run: installed \S+ \(sha256 ([0-9a-f]{64})\)/,
    started.index,
  );
  assert.equal(installed.match[1], binarySha);
  const script = await reach(
    vm,
    label,
    "bootloader fetches the iPXE script",
    /assisted-bootloader: fetching the iPXE script/,
    installed.index,
  );
  const kexec = await reach(
    vm,
    label,
    "kexec into the new kernel",
    /kexec_core: Starting new kernel/,
    script.index,
  );
  const hit = await reach(
    vm,
    label,
    "marker kernel",
    new RegExp(`assisted-marker: marker=${marker}\\b`),
    kexec.index,
  );
  const cmdline = vm.lines().slice(kexec.index).find((l) =>
    l.includes("assisted-marker: cmdline:")
  );
  assert.ok(
    cmdline?.includes(CONFIG_KARG),
    `cmdline lacks ${CONFIG_KARG}: ${cmdline}`,
  );
  void hit;
}

function binaryRequests(mock: MockInfraEnv, from: number) {
  return mock.requests.slice(from).filter((r) => r.path === BINARY_ROUTE);
}

Deno.test({
  name: "vm chain: Ignition config -> systemd unit -> bootloader -> kexec",
  ignore: skipReason !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const t0 = performance.now();
    const files: Record<string, string> = {};
    const mock = await startMock({
      infraEnvId: INFRA_ENV_ID,
      refreshToken: REFRESH_TOKEN,
      sameOrigin: true,
      publicBaseUrl: GUEST_BASE,
      kernel: `${OUT}/kernel/vmlinuz`,
      initrd: `${OUT}/marker.img`,
      files,
    });
    const port = Number(new URL(mock.baseUrl).port);
    try {
      const p = await prepare(mock);
      files[BINARY_ROUTE] = p.binary;
      files[BINARY_ROUTE + ".sha256"] = `${OUT}/assisted-bootloader.sha256`;
      await Deno.writeTextFile(
        `${OUT}/assisted-bootloader.sha256`,
        `${p.binarySha}  assisted-bootloader\n`,
      );
      mock.update({ files });

      await t.step("happy path", async () => {
        const marker = crypto.randomUUID().slice(0, 8);
        mock.update({ extraKargs: [`assisted_marker=${marker}`] });
        const vm = bootVm(p, p.goodImage, "happy", port);
        try {
          await expectChain(vm, "happy", marker, p.binarySha);
        } finally {
          await vm.kill();
        }
      });

      await t.step("wrong sha256 for the binary", async () => {
        const from = mock.requests.length;
        const vm = bootVm(p, p.badShaImage, "bad-sha", port);
        try {
          const label = "bad-sha";
          const started = await reach(
            vm,
            label,
            "unit started",
            /Starting .*assisted-bootloader\.service/,
          );
          const first = await reach(
            vm,
            label,
            "first attempt refused",
            /assisted-bootloader-run: error: sha256 mismatch .*refusing to run it/,
            started.index,
          );
          await reach(
            vm,
            label,
            "unit failed",
            /Failed to start .*assisted-bootloader\.service/,
            first.index,
          );
          // RestartSec=30s: the second attempt comes about 30 s later.
          await reach(
            vm,
            label,
            "restarted and refused again",
            /assisted-bootloader-run: error: sha256 mismatch .*refusing to run it/,
            first.index + 1,
            90_000,
          );
          const text = vm.text();
          assert.doesNotMatch(text, /assisted-bootloader-run: running/);
          assert.doesNotMatch(text, /assisted-bootloader-run: installed/);
          // the bootloader's own log lines ("<unit>[pid]: assisted-bootloader: …")
          assert.doesNotMatch(text, /\]: assisted-bootloader: /);
          assert.doesNotMatch(text, /kexec_core|assisted-marker/);
          assert.ok(binaryRequests(mock, from).length >= 2);
          assert.ok(
            !mock.requests.slice(from).some((r) => r.path !== BINARY_ROUTE),
            "something other than the binary was requested: the bootloader ran",
          );
        } finally {
          await vm.kill();
        }
      });

      await t.step("mock down for the first minute", async () => {
        const from = mock.requests.length;
        const marker = crypto.randomUUID().slice(0, 8);
        const downUntil = Date.now() + DOWN_MS;
        mock.update({ extraKargs: [`assisted_marker=${marker}`], downUntil });
        const vm = bootVm(p, p.goodImage, "mock-down", port);
        try {
          await reach(
            vm,
            "mock-down",
            "download retried",
            /assisted-bootloader-run: download of \S+ failed \(attempt 1 of/,
          );
          await expectChain(vm, "mock-down", marker, p.binarySha);
          const tries = binaryRequests(mock, from);
          assert.ok(tries.some((r) => r.status === 503), "no 503 seen");
          assert.equal(tries.at(-1)?.status, 200);
          assert.ok(Date.now() > downUntil);
        } finally {
          await vm.kill();
          mock.update({ downUntil: 0 });
        }
      });
    } finally {
      await mock.close();
      stage("whole VM chain test", performance.now() - t0);
    }
  },
});
