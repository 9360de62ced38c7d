/**
 * The real chain in a VM: Debian's real `ignition` applies the config
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
 * and the executable bit. Before the bundle, a probe prints one line on the
 * sandbox the process runs in (capabilities, seccomp, what it may write), so
 * the test proves the chain ran inside the unit's sandbox (docs/sandbox.md).
 * The rootfs has Fedora CoreOS's /usr/local -> /var/usrlocal link.
 *
 * Cases: the happy path; a host the InfraEnv installed (the service's 404 to
 * the MAC request, a second disk with an installed system whose default entry
 * the unit's bootloader reads and kexecs); a wrong sha256 for the binary (the
 * unit fails, says why, is restarted, never runs the binary, no kexec); the
 * mock down (503) for the first minute (the download is retried and the chain
 * completes).
 *
 * Builds with image/rootfs/prepare_chain.sh (cached by checksum) and
 * apply_ignition.sh; they need root (debootstrap, device nodes in the rootfs):
 * the test runs them directly as root, else through passwordless `sudo`.
 * Skipped with a message only when QEMU is missing or neither works.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the
 * accelerator probe. Serial logs: build/chain/*.serial.log.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { argText, parseKernelCmdline } from "../../lib/resolve/kargs.ts";
import {
  coreosBootTree,
  makeExt4,
  makeGptDisk,
} from "../../dev/installed_disk.ts";
import {
  type MockInfraEnv,
  type MockOptions,
  startMock,
} from "../../dev/mock_infraenv.ts";
import { renderIgnition } from "../../ignition/mod.ts";
import {
  type Accel,
  findQemu,
  type LineMatch,
  probeAccel,
  startVm,
  type Vm,
} from "../../dev/qemu.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
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

/**
 * Runs in the guest, in the bootloader's process, before the bootloader: one
 * `chain-sandbox:` line with what the unit's sandbox leaves it (its source is
 * prepended to the bundle). A path's entry is `rw` when a file can be created
 * in it (a file: opened for appending, nothing written), else the errno; the
 * `:read` entry is `r` when the device opens read-only, else the errno.
 */
function sandboxProbe(): void {
  const status = Deno.readTextFileSync("/proc/self/status");
  const field = (name: string) =>
    new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(status)?.[1] ?? "?";
  const errno = (err: unknown) =>
    (err as { code?: string }).code ?? (err as Error).name;
  const writable = (path: string) => {
    try {
      if (Deno.statSync(path).isDirectory) {
        Deno.removeSync(Deno.makeTempFileSync({ dir: path }));
      } else {
        Deno.openSync(path, { append: true }).close();
      }
      return "rw";
    } catch (err) {
      return errno(err);
    }
  };
  const readOnly = (path: string) => {
    try {
      Deno.openSync(path, { read: true }).close();
      return "r";
    } catch (err) {
      return errno(err);
    }
  };
  const readable = (path: string) => {
    try {
      return Deno.readTextFileSync(path).trim();
    } catch (err) {
      return errno(err);
    }
  };
  const facts = [
    ...["CapBnd", "CapEff", "NoNewPrivs", "Seccomp"].map((f) =>
      `${f}=${field(f)}`
    ),
    `pid1=${readable("/proc/1/comm")}`,
    ...[
      "/etc",
      "/usr",
      "/usr/local/bin",
      "/usr/local/bin/assisted-bootloader-run",
      "/var/lib/assisted-bootloader",
      "/var/cache",
      "/tmp",
      "/root",
      "/dev/vda",
    ].map((p) => `${p}=${writable(p)}`),
    `/dev/vda:read=${readOnly("/dev/vda")}`,
  ];
  console.error(`chain-sandbox: ${facts.join(" ")}`);
}

/**
 * What {@linkcode sandboxProbe} must report under the unit's sandbox: only
 * CAP_SYS_BOOT (bit 22), no new privileges, a seccomp filter, PID 1 visible
 * (the hand-off depends on it), the system read-only but the install
 * directory (through FCOS's /usr/local link, the run script in it included),
 * the state directory and a private /tmp, no home directories, disks
 * readable (an installed system's boot partition) but never writable.
 */
const SANDBOX_EXPECTED: Record<string, string> = {
  CapBnd: "0000000000400000",
  CapEff: "0000000000400000",
  NoNewPrivs: "1",
  Seccomp: "2",
  pid1: "systemd",
  "/etc": "EROFS",
  "/usr": "EROFS",
  "/usr/local/bin": "rw",
  "/usr/local/bin/assisted-bootloader-run": "rw",
  "/var/lib/assisted-bootloader": "rw",
  "/var/cache": "EROFS",
  "/tmp": "rw",
  "/root": "EACCES",
  "/dev/vda": "EPERM",
  "/dev/vda:read": "r",
};

/**
 * The prefix that runs the build scripts as root (debootstrap, the rootfs's
 * device nodes): nothing as root, passwordless `sudo`, or null when neither.
 */
function rootPrefix(): string[] | null {
  if (Deno.uid() === 0) return [];
  try {
    const sudo = new Deno.Command("sudo", {
      args: ["-n", "true"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return sudo.success ? ["sudo", "-n", "--preserve-env=PATH"] : null;
  } catch {
    return null; // no sudo
  }
}
const asRoot = rootPrefix();
const skipReason = !findQemu()
  ? "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)"
  : asRoot === null
  ? "the rootfs build needs root or passwordless sudo (debootstrap)"
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

function runAsRoot(cmd: string, args: string[]) {
  const prefix = asRoot ?? [];
  return prefix.length
    ? run(prefix[0], [...prefix.slice(1), cmd, ...args])
    : run(cmd, args);
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

/**
 * The config the chain test applies, as `make generate-ignition` would write
 * it: the SaaS flow (API URL, InfraEnv id, refresh token, SSO URL), with the
 * mock's URLs as the guest sees them (any mock port: the guest always reaches
 * 10.0.2.100:80).
 */
async function ignitionFor(binarySha: string): Promise<string> {
  const guest = (url: string) => {
    const u = new URL(url);
    return GUEST_BASE + u.pathname + u.search;
  };
  const mock = await chainMock();
  try {
    return await renderIgnition({
      bootloaderUrl: GUEST_BASE + BINARY_ROUTE,
      bootloaderSha256: binarySha,
      apiUrl: guest(mock.apiUrl),
      infraEnvId: mock.infraEnvId,
      refreshToken: REFRESH_TOKEN + "\n",
      ssoUrl: guest(mock.ssoUrl),
      extraKargs: [CONFIG_KARG],
      settings: { ASSISTED_PROGRESS: "lines" },
    });
  } finally {
    await mock.close();
  }
}

async function prepare(): Promise<Prepared> {
  let t = performance.now();
  await Deno.mkdir(OUT, { recursive: true });
  const assets = await runAsRoot(`${ROOT}/image/rootfs/prepare_chain.sh`, [
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
    "#!/usr/bin/env -S deno run -A\n" + `(${sandboxProbe})();\n` + bundle,
    { mode: 0o755 },
  );
  const binarySha = sha256(await Deno.readFile(binary));
  await Deno.writeTextFile(
    `${OUT}/assisted-bootloader.sha256`,
    `${binarySha}  assisted-bootloader\n`,
  );
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
    await Deno.writeTextFile(config, await ignitionFor(sha), { mode: 0o600 });
    await run("ignition-validate", [config]);
    const image = `${OUT}/${name}.ext4`;
    await runAsRoot(`${ROOT}/image/rootfs/apply_ignition.sh`, [
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

/**
 * The rootfs boot: Debian kernel + chain initramfs, systemd status by unit
 * name; `second`, a second disk (`/dev/vdb`, never written).
 */
function bootVm(
  p: Prepared,
  image: string,
  label: string,
  hostPort: number,
  second?: string,
) {
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
    extraArgs: [
      "-vga",
      "none",
      ...(second
        ? ["-drive", `file=${second},format=raw,if=virtio,snapshot=on`]
        : []),
    ],
    serialLog: `${OUT}/${label}.serial.log`,
    timeoutMs: 300_000,
  });
}

/** Where a case must have finished, counted from the VM start (the hard QEMU limit is later). */
const CASE_BUDGET_MS = 240_000;
/** Lines that end a case that expects the chain to complete: the unit or the bootloader gave up. */
const CHAIN_FAILED =
  /assisted-bootloader-run: error: |\]: assisted-bootloader: error: |Failed to start .*assisted-bootloader\.service/;

interface ReachOptions {
  /** First serial line to consider. */
  from?: number;
  /** Give up after this long (default: what is left of {@linkcode CASE_BUDGET_MS}). */
  timeoutMs?: number;
  /** Fail at once when a line matching this appears (at or after `from`). */
  failOn?: RegExp;
}

/** Waits for `pattern` on the serial console and prints the stage time. */
async function reach(
  vm: Vm,
  label: string,
  name: string,
  pattern: RegExp,
  options: ReachOptions = {},
): Promise<LineMatch> {
  const from = options.from ?? 0;
  const left = CASE_BUDGET_MS - (performance.now() - vm.startedAt);
  const timeoutMs = Math.max(1, Math.round(options.timeoutMs ?? left));
  const waits = [vm.waitFor(pattern, { from, timeoutMs })];
  if (options.failOn) {
    const failed = vm.waitFor(options.failOn, { from, timeoutMs }).then(
      (hit) => {
        throw new Error(`failure line at ${hit.atMs} ms: ${hit.line}`);
      },
    );
    failed.catch(() => {}); // settles after the race when the VM stops
    waits.push(failed);
  }
  const hit = await Promise.race(waits).catch((err) => {
    throw new Error(
      `${label}: ${name}: no line matching ${pattern} (${err.message}); serial log: ${vm.serialLog}\n` +
        vm.lines().slice(-40).join("\n"),
    );
  });
  stage(`${label}: ${name}`, hit.atMs);
  return hit;
}

/** The happy-path sequence, from the boot to the marker kernel. */
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
    { failOn: /chain-initramfs: error:/ },
  );
  const online = await reach(
    vm,
    label,
    "network-online.target",
    /Reached target .*network-online\.target/,
    { from: rootfs.index, failOn: CHAIN_FAILED },
  );
  const started = await reach(
    vm,
    label,
    "unit started",
    /Starting .*assisted-bootloader\.service/,
    { failOn: CHAIN_FAILED },
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
    { from: started.index, failOn: CHAIN_FAILED },
  );
  assert.equal(installed.match[1], binarySha);
  const sandbox = await reach(
    vm,
    label,
    "binary runs in the unit's sandbox",
    /chain-sandbox: (.*)$/,
    { from: installed.index, failOn: CHAIN_FAILED },
  );
  assert.deepEqual(
    Object.fromEntries(
      sandbox.match[1].trim().split(" ").map((f) => {
        const eq = f.lastIndexOf("=");
        return [f.slice(0, eq), f.slice(eq + 1)];
      }),
    ),
    SANDBOX_EXPECTED,
    `${label}: ${sandbox.line}`,
  );
  const script = await reach(
    vm,
    label,
    "bootloader fetches the iPXE script",
    /assisted-bootloader: fetching the iPXE script/,
    { from: sandbox.index, failOn: CHAIN_FAILED },
  );
  // The hand-off is systemd's clean shutdown (`systemctl kexec`), not a raw reboot(2).
  const handoff = await reach(
    vm,
    label,
    "systemd shuts down and reboots with kexec",
    /systemd-shutdown\[1\]: Rebooting with kexec/,
    { from: script.index, failOn: CHAIN_FAILED },
  );
  const kexec = await reach(
    vm,
    label,
    "kexec into the new kernel",
    /kexec_core: Starting new kernel/,
    { from: handoff.index, failOn: CHAIN_FAILED },
  );
  await reach(
    vm,
    label,
    "marker kernel",
    new RegExp(`assisted-marker: marker=${marker}\\b`),
    { from: kexec.index, failOn: CHAIN_FAILED },
  );
  const cmdline = vm.lines().slice(kexec.index).find((l) =>
    l.includes("assisted-marker: cmdline:")
  );
  assert.ok(
    cmdline?.includes(CONFIG_KARG),
    `cmdline lacks ${CONFIG_KARG}: ${cmdline}`,
  );
  // config.env's ASSISTED_CONSOLE=host: the machine's console (this guest's
  // console=ttyS0) replaced the template's tty1 and ttyS1.
  const args = parseKernelCmdline(
    cmdline!.replace(/^.*assisted-marker: cmdline: /, ""),
  );
  assert.deepEqual(
    args.filter((a) => a.param === "console").map(argText),
    ["console=ttyS0"],
    cmdline,
  );
}

/** A mock InfraEnv serving the marker "discovery image" and the bootloader build. */
function chainMock(extra: Partial<MockOptions> = {}): Promise<MockInfraEnv> {
  return startMock({
    infraEnvId: INFRA_ENV_ID,
    refreshToken: REFRESH_TOKEN,
    sameOrigin: true,
    publicBaseUrl: GUEST_BASE,
    kernel: `${OUT}/kernel/vmlinuz`,
    initrd: `${OUT}/marker.img`,
    files: {
      [BINARY_ROUTE]: `${OUT}/assisted-bootloader`,
      [BINARY_ROUTE + ".sha256"]: `${OUT}/assisted-bootloader.sha256`,
    },
    extraKargs: [`assisted_marker=${crypto.randomUUID().slice(0, 8)}`],
    ...extra,
  });
}

/** Runs `body` with a {@linkcode chainMock}, closed afterwards. */
async function withMock(
  extra: Partial<MockOptions>,
  body: (mock: MockInfraEnv) => Promise<void>,
): Promise<void> {
  const mock = await chainMock(extra);
  try {
    await body(mock);
  } finally {
    await mock.close();
  }
}

function portOf(mock: MockInfraEnv): number {
  return Number(new URL(mock.baseUrl).port);
}

async function happyPath(p: Prepared): Promise<void> {
  const marker = crypto.randomUUID().slice(0, 8);
  await withMock(
    { extraKargs: [`assisted_marker=${marker}`] },
    async (mock) => {
      await using vm = bootVm(p, p.goodImage, "happy", portOf(mock));
      await expectChain(vm, "happy", marker, p.binarySha);
    },
  );
}

/**
 * A host the InfraEnv installed: the service answers the MAC request with its
 * 404, and the unit's bootloader reads the second disk's boot partition
 * (read-only, through the sandbox's device list), kexecs its default entry
 * with `systemctl kexec`, and the marker prints the entry's command line.
 */
async function installedHost(p: Prepared): Promise<void> {
  const label = "installed";
  const marker = crypto.randomUUID().slice(0, 8);
  const disk = `${OUT}/installed-disk.img`;
  await makeExt4(
    `${OUT}/installed-boot.img`,
    coreosBootTree([{
      n: 1,
      kernel: await Deno.readFile(`${OUT}/kernel/vmlinuz`),
      initrd: await Deno.readFile(`${OUT}/marker.img`),
      options:
        `console=ttyS0 panic=-1 assisted_marker=${marker} $ignition_firstboot rw`,
    }], { firstboot: "" }),
    { label: "boot" },
  );
  await makeGptDisk(disk, [
    { name: "BIOS-BOOT", sizeMiB: 1 },
    { name: "EFI-SYSTEM", sizeMiB: 2 },
    { name: "boot", image: `${OUT}/installed-boot.img` },
    { name: "root", sizeMiB: 4 },
  ]);
  // QEMU's MAC for the guest's NIC.
  await withMock({ installedMacs: ["52:54:00:12:34:56"] }, async (mock) => {
    await using vm = bootVm(p, p.goodImage, label, portOf(mock), disk);
    const local = await reach(
      vm,
      label,
      "the service says: boot the local disk",
      /assisted-bootloader: boot from the local disk: IPXE booting skipped/,
      { failOn: CHAIN_FAILED },
    );
    const copied = await reach(
      vm,
      label,
      "the installed kernel is read from /dev/vdb3 and verified",
      /assisted-bootloader: kernel: \/dev\/vdb3:\/ostree\/\S+ copied and verified/,
      { from: local.index, failOn: CHAIN_FAILED },
    );
    const kexec = await reach(
      vm,
      label,
      "systemctl kexec into the installed kernel",
      /kexec_core: Starting new kernel/,
      { from: copied.index, failOn: CHAIN_FAILED },
    );
    await reach(
      vm,
      label,
      "the installed system's marker",
      new RegExp(`assisted-marker: marker=${marker}\\b`),
      { from: kexec.index, failOn: CHAIN_FAILED },
    );
    const cmdline = vm.lines().slice(kexec.index).find((l) =>
      l.includes("assisted-marker: cmdline:")
    );
    assert.match(cmdline ?? "", / ignition\.firstboot /);
    assert.ok(
      !mock.requests.some((r) => r.path.includes("/boot-artifacts/")),
      "the discovery image was downloaded",
    );
  });
}

async function wrongSha(p: Prepared): Promise<void> {
  const label = "bad-sha";
  await withMock({}, async (mock) => {
    await using vm = bootVm(p, p.badShaImage, label, portOf(mock));
    const started = await reach(
      vm,
      label,
      "unit started",
      /Starting .*assisted-bootloader\.service/,
    );
    const refused =
      /assisted-bootloader-run: error: sha256 mismatch .*refusing to run it/;
    const first = await reach(vm, label, "first attempt refused", refused, {
      from: started.index,
    });
    await reach(
      vm,
      label,
      "unit failed",
      /Failed to start .*assisted-bootloader\.service/,
      { from: first.index },
    );
    // RestartSec=30s: the second attempt comes about 30 s later.
    await reach(vm, label, "restarted and refused again", refused, {
      from: first.index + 1,
      timeoutMs: 90_000,
    });
    const text = vm.text();
    assert.doesNotMatch(text, /assisted-bootloader-run: running/);
    assert.doesNotMatch(text, /assisted-bootloader-run: installed/);
    // the bootloader's own log lines ("<unit>[pid]: assisted-bootloader: …")
    assert.doesNotMatch(text, /\]: assisted-bootloader: /);
    assert.doesNotMatch(text, /kexec_core|assisted-marker/);
    const paths = mock.requests.map((r) => r.path);
    assert.ok(
      paths.filter((path) => path === BINARY_ROUTE).length >= 2,
      `expected two downloads of the binary, saw: ${paths.join(", ")}`,
    );
    assert.deepEqual(
      paths.filter((path) => path !== BINARY_ROUTE),
      [],
      "something other than the binary was requested: the bootloader ran",
    );
  });
}

async function mockDown(p: Prepared): Promise<void> {
  const label = "mock-down";
  const marker = crypto.randomUUID().slice(0, 8);
  const downUntil = Date.now() + DOWN_MS;
  await withMock({
    extraKargs: [`assisted_marker=${marker}`],
    downUntil,
  }, async (mock) => {
    await using vm = bootVm(p, p.goodImage, label, portOf(mock));
    await reach(
      vm,
      label,
      "download retried",
      /assisted-bootloader-run: download of \S+ failed \(attempt 1 of/,
      { failOn: CHAIN_FAILED },
    );
    await expectChain(vm, label, marker, p.binarySha);
    const tries = mock.requests.filter((r) => r.path === BINARY_ROUTE);
    assert.ok(tries.some((r) => r.status === 503), "no 503 seen");
    assert.equal(tries.at(-1)?.status, 200);
    assert.ok(Date.now() > downUntil);
  });
}

Deno.test({
  name: "vm chain: Ignition config -> systemd unit -> bootloader -> kexec",
  ignore: skipReason !== undefined,
  // The last two cases run side by side (both mostly wait: RestartSec, 503s).
  sanitizeResources: false,
  sanitizeOps: false,
  sanitizeExit: false,
  async fn(t) {
    const t0 = performance.now();
    try {
      const p = await prepare();
      await t.step("happy path", () => happyPath(p));
      await t.step(
        "a host the InfraEnv installed boots its disk",
        () => installedHost(p),
      );
      await Promise.all([
        t.step("wrong sha256 for the binary", () => wrongSha(p)),
        t.step("mock down for the first minute", () => mockDown(p)),
      ]);
    } finally {
      stage("whole VM chain test", performance.now() - t0);
    }
  },
});
