/**
 * The initramfs's network (image/initrd/net-setup) in QEMU, against the mock
 * InfraEnv, every server on the host's loopback; one guest boot per case:
 *
 * - static: `ip=` IPv4 and IPv6 addresses on eth0, a VLAN (`vlan=vlan5:eth0`)
 *   with its own static address, `nameserver=`, and `assisted.proxy=`. No
 *   DHCP client ever starts (a second archive wraps `/bin/udhcpc` to say so
 *   on the console). The guest has no route to the mock at all: its only
 *   forward is the proxy's (10.0.2.101:3128 -> a small proxy on 127.0.0.1,
 *   dev/proxy.ts), which relays `10.0.2.100:80` to the mock; the script,
 *   kernel and initrd come through it and the second kernel starts. The VLAN
 *   is created in the real kernel (its line comes from /proc/net/vlan), but
 *   QEMU's user networking cannot carry it: slirp takes only untagged IPv4,
 *   IPv6 and ARP frames and drops 802.1Q ones, so nothing is sent over it.
 * - IPv6 only: the netdev has `ipv4=off`; with no `ip=` the initramfs tries
 *   DHCPv4 (the wrapper shows udhcpc did start: the control for the case
 *   above), gets no answer, takes the address of slirp's router advertisement
 *   (SLAAC, fec0::/64) and fetches everything from the mock on the host's
 *   `[::1]`, which slirp maps to `[fec0::2]`, then kexecs.
 *
 * Builds with `make initrd marker-initrd` first (skipped with `VM_TEST_NO_BUILD=1`).
 * Skipped, with a message, only when qemu-system-x86_64 is not installed.
 * `VM_ECHO=1` copies the serial console to stderr; `VM_ACCEL=kvm|tcg` skips the probe.
 */

import assert from "node:assert/strict";
import { startMock } from "../../dev/mock_infraenv.ts";
import { startProxy } from "../../dev/proxy.ts";
import {
  type Accel,
  findQemu,
  type LineMatch,
  probeAccel,
  startVm,
  type Vm,
  type VmOptions,
} from "../../dev/qemu.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const BUILD = `${ROOT}/build`;
const KERNEL = `${BUILD}/vm/vmlinuz`;
const BOOT_INITRD = `${BUILD}/initrd/assisted-bootloader.initrd`;
const MARKER_INITRD = `${BUILD}/vm/marker.initrd`;
/** QEMU's default MAC for the first NIC. */
const GUEST_MAC = "52:54:00:12:34:56";
const VM_TIMEOUT_MS = 180_000;

const qemu = findQemu();
if (!qemu) {
  console.warn(
    "vm_networks_test: SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 netcat-openbsd)",
  );
}

let prepared: Promise<{ accel: Accel; initrd: string }> | undefined;

/**
 * Builds the kernel and initrds, probes the accelerator, and writes the test
 * initramfs: the product's, then a second archive whose `/bin/udhcpc` says
 * on the console that it started, then runs busybox's.
 */
function prepare(): Promise<{ accel: Accel; initrd: string }> {
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
    const accel = await probeAccel(KERNEL, {
      cacheFile: `${BUILD}/vm/accel.json`,
    });
    const dir = `${BUILD}/vm/udhcpc-witness`;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${dir}/bin`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/bin/udhcpc`,
      '#!/bin/sh\necho "test-overlay: udhcpc started: $*" >/dev/console\nexec /bin/busybox udhcpc "$@"\n',
    );
    await Deno.chmod(`${dir}/bin/udhcpc`, 0o755);
    const cpio = await new Deno.Command("sh", {
      args: ["-c", "find bin | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(cpio.success, new TextDecoder().decode(cpio.stderr));
    // Concatenated archives: an uncompressed one starts on a 4-byte boundary.
    const base = await Deno.readFile(BOOT_INITRD);
    const initrd = `${BUILD}/vm/udhcpc-witness.initrd`;
    await Deno.writeFile(initrd, base);
    await Deno.writeFile(
      initrd,
      new Uint8Array((4 - (base.length % 4)) % 4 + 512),
      { append: true },
    );
    await Deno.writeFile(initrd, cpio.stdout, { append: true });
    return { accel, initrd };
  })();
  return prepared;
}

function stage(name: string, ms: number): void {
  console.log(`vm_networks: ${name}: ${(ms / 1000).toFixed(1)} s`);
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

/** Boots the test initramfs with `kargs` on `net`, runs `body`, always stops the VM. */
async function boot(
  label: string,
  kargs: string[],
  net: Pick<VmOptions, "forwards" | "ipv6Only">,
  body: (vm: Vm) => Promise<void>,
): Promise<void> {
  const { accel, initrd } = await prepare();
  const serialLog = `${BUILD}/vm/${label}.serial.log`;
  const vm = startVm({
    kernel: KERNEL,
    initrd,
    append: ["console=ttyS0", "panic=-1", "assisted.progress=lines", ...kargs]
      .join(" "),
    accel,
    ...net,
    serialLog,
    timeoutMs: VM_TIMEOUT_MS,
  });
  try {
    await body(vm);
  } catch (err) {
    const tail = vm.lines().slice(-60).join("\n");
    throw new Error(
      `${
        err instanceof Error ? err.message : err
      }\n--- last serial lines (${serialLog}) ---\n${tail}`,
    );
  } finally {
    await vm.kill();
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

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test({
  name:
    "vm: static IPv4 + IPv6 and a VLAN from ip=/vlan=, no DHCP client started, everything through assisted.proxy, kexec",
  ignore: !qemu,
  async fn() {
    const marker = `static-${crypto.randomUUID().slice(0, 8)}`;
    const mock = await startMock({
      authMode: "none",
      sameOrigin: true,
      publicBaseUrl: "http://10.0.2.100",
      kernel: KERNEL,
      initrd: MARKER_INITRD,
      extraKargs: ["console=ttyS0", "panic=-1", `assisted_marker=${marker}`],
    });
    const mockPort = Number(new URL(mock.baseUrl).port);
    // The only way to the mock: the proxy, which knows it as 10.0.2.100:80.
    const proxy = await startProxy({ targets: { "10.0.2.100:80": mockPort } });
    try {
      await boot("net-static", [
        `assisted.ipxe_url=${mock.ipxeScriptUrl}`,
        "ip=10.0.2.15::10.0.2.2:255.255.255.0:netguest:eth0:none",
        "ip=[fec0::15]::[fec0::2]:64::eth0:none",
        "nameserver=10.0.2.3",
        "vlan=vlan5:eth0",
        "ip=192.0.2.10:::24::vlan5:none",
        "assisted.proxy=http://10.0.2.101:3128",
        "assisted.no_proxy=example.invalid",
        "assisted.on_failure=poweroff",
      ], {
        forwards: [{
          guestAddress: "10.0.2.101",
          guestPort: 3128,
          hostPort: proxy.port,
        }],
      }, async (vm) => {
        const eth0 = await reach(
          vm,
          "eth0 configured",
          new RegExp(
            `assisted-initrd: net: eth0 \\(${GUEST_MAC}\\): static 10\\.0\\.2\\.15/24, fec0::15/64, gateway 10\\.0\\.2\\.2 fec0::2$`,
          ),
        );
        await reach(
          vm,
          "VLAN configured",
          new RegExp(
            `assisted-initrd: net: vlan5 \\(${GUEST_MAC}, VLAN 5 on eth0\\): static 192\\.0\\.2\\.10/24$`,
          ),
          eth0.index,
        );
        await reach(
          vm,
          "proxy",
          /assisted-initrd: net: proxy http:\/\/10\.0\.2\.101:3128 \(not for: example\.invalid\)/,
          eth0.index,
        );
        const started = await reach(
          vm,
          "bootloader started",
          /assisted-initrd: starting the bootloader \(attempt 1\)/,
          eth0.index,
        );
        const loaded = await reach(
          vm,
          "loaded",
          /kernel loaded with kexec_file_load/,
          started.index,
        );
        await assertSecondKernel(vm, marker, loaded.index);
        const text = vm.text();
        assert.doesNotMatch(text, /test-overlay: udhcpc started/);
        assert.match(text, /assisted-initrd: net: DNS: 10\.0\.2\.3/);
        assert.match(
          text,
          new RegExp(
            `assisted-initrd: net: boot interface eth0 \\(MAC ${GUEST_MAC}\\)`,
          ),
        );
      });
      // Every request reached the mock through the proxy, as absolute http:// URLs.
      const viaProxy = proxy.requests.filter((r) => r.refused === 0);
      assert.ok(viaProxy.length >= 3, JSON.stringify(proxy.requests));
      assert.deepEqual(
        proxy.requests.filter((r) => r.refused !== 0),
        [],
        "the proxy refused a request",
      );
      for (const r of viaProxy) {
        // GETs, and the memory preflight's HEADs of the artifacts.
        assert.ok(
          r.method === "GET" ||
            (r.method === "HEAD" &&
              /\/boot-artifacts\/|\/pxe-initrd/.test(r.target)),
          `${r.method} ${r.target}`,
        );
        assert.ok(r.target.startsWith("http://10.0.2.100/"), r.target);
      }
      const paths = viaProxy.map((r) => new URL(r.target).pathname);
      assert.ok(
        paths.some((p) => p.endsWith("/boot-artifacts/kernel")),
        paths.join(" "),
      );
      assert.equal(mock.requests.length, viaProxy.length);
    } finally {
      await proxy.close();
      await mock.close();
    }
  },
});

Deno.test({
  name:
    "vm: IPv6 only (ipv4=off): no DHCPv4 answer, SLAAC from the router advertisement, the mock on [::1] reached at [fec0::2], kexec",
  ignore: !qemu,
  async fn() {
    const marker = `ipv6-${crypto.randomUUID().slice(0, 8)}`;
    const mock = await startMock({
      hostname: "::1",
      authMode: "none",
      sameOrigin: true,
      publicBaseUrl: (port) => `http://[fec0::2]:${port}`,
      kernel: KERNEL,
      initrd: MARKER_INITRD,
      extraKargs: ["console=ttyS0", "panic=-1", `assisted_marker=${marker}`],
    });
    try {
      await boot(
        "net-ipv6",
        [
          `assisted.ipxe_url=${mock.ipxeScriptUrl}`,
          "assisted.on_failure=poweroff",
        ],
        { ipv6Only: true },
        async (vm) => {
          const dhcp = await reach(
            vm,
            "DHCPv4 tried",
            /test-overlay: udhcpc started: -i eth0/,
          );
          const noAnswer = await reach(
            vm,
            "no DHCPv4 answer",
            /assisted-initrd: net: eth0: no DHCPv4 answer/,
            dhcp.index,
          );
          await reach(
            vm,
            "SLAAC",
            new RegExp(
              `assisted-initrd: net: eth0 \\(${GUEST_MAC}\\): SLAAC fec0::5054:ff:fe12:3456/64, gateway fe80::2$`,
            ),
            noAnswer.index,
          );
          const plan = await reach(
            vm,
            "script fetched over IPv6",
            new RegExp(
              `plan: kernel ${escape(new URL(mock.ipxeScriptUrl).origin)}/`,
            ),
            noAnswer.index,
          );
          const loaded = await reach(
            vm,
            "loaded",
            /kernel loaded with kexec_file_load/,
            plan.index,
          );
          await assertSecondKernel(vm, marker, loaded.index);
        },
      );
      assert.ok(mock.requests.length >= 3, JSON.stringify(mock.requests));
    } finally {
      await mock.close();
    }
  },
});
