import type { KexecPlan } from "../../lib/plan.ts";
import assert from "node:assert/strict";
import {
  defaultRoute6Interface,
  defaultRouteInterface,
  hostPlatform,
  readHostSettings,
} from "../../lib/resolve/host_settings.ts";
import { runScriptSource } from "../../lib/ipxe/mod.ts";

const ROUTES =
  `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
`;
const IFACES: Deno.NetworkInterfaceInfo[] = [
  {
    family: "IPv4",
    name: "eth1",
    address: "192.168.0.5",
    netmask: "255.255.255.0",
    scopeid: null,
    cidr: "",
    mac: "52:54:00:00:00:01",
  },
  {
    family: "IPv4",
    name: "eth0",
    address: "10.0.2.15",
    netmask: "255.255.255.0",
    scopeid: null,
    cidr: "",
    mac: "52:54:00:AA:BB:CC",
  },
];
const DMI: Record<string, string> = {
  "/sys/class/dmi/id/product_uuid": "4C4C4544-0000-0000-0000-000000000000",
};
/** sysfs and resolv.conf of a QEMU guest: virtio-net at PCI 0000:00:03.0, systemd-resolved. */
const SYS: Record<string, string> = {
  ...DMI,
  "/sys/class/dmi/id/sys_vendor": "QEMU",
  "/sys/class/dmi/id/product_name": "Standard PC (Q35 + ICH9, 2009)",
  "/sys/class/dmi/id/product_serial": "SN-1234",
  "/sys/class/dmi/id/chassis_asset_tag": "ASSET-42",
  "/sys/class/dmi/id/board_serial": "BOARD-7",
  "/sys/class/net/eth0/type": "1",
  "/sys/devices/pci0000:00/0000:00:03.0/vendor": "0x1af4",
  "/sys/devices/pci0000:00/0000:00:03.0/device": "0x1000",
  // The virtio device below it has ids of its own: not the ones iPXE reports.
  "/sys/devices/pci0000:00/0000:00:03.0/virtio0/vendor": "0x1af4",
  "/sys/devices/pci0000:00/0000:00:03.0/virtio0/device": "0x0001",
  "/etc/resolv.conf": "nameserver 127.0.0.53\nsearch lab.example.com\n",
  "/run/systemd/resolve/resolv.conf":
    "# upstream\nnameserver 127.0.0.1\nnameserver 10.0.2.3\nnameserver 10.0.2.4\nsearch lab.example.com other.example\n",
};
const LINKS: Record<string, string> = {
  "/sys/class/net/eth0/device": "/sys/devices/pci0000:00/0000:00:03.0/virtio0",
  "/sys/class/net/eth1/device": "/sys/devices/platform/soc/ff3f0000.ethernet",
};

Deno.test("host settings: the default route's NIC is net0", () => {
  assert.equal(defaultRouteInterface(ROUTES), "eth0");
  const s = readHostSettings(undefined, {
    routes: ROUTES,
    interfaces: IFACES,
    hostname: "node1.example.com",
    readText: (p) => DMI[p],
    realPath: () => undefined,
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:aa:bb:cc",
    "net0/hwaddr": "52:54:00:aa:bb:cc",
    "net0/ifname": "net0",
    "net0/ip": "10.0.2.15",
    "net0/netmask": "255.255.255.0",
    "net0/gateway": "10.0.2.2",
    hostname: "node1",
    "smbios/uuid": "4c4c4544-0000-0000-0000-000000000000",
  });
});

Deno.test("host settings: without a default route, the first NIC with an IPv4 address", () => {
  const s = readHostSettings(undefined, {
    routes: ROUTES.split("\n").filter((l) => !l.startsWith("eth0")).join("\n"),
    interfaces: [
      {
        ...IFACES[0],
        name: "lo",
        address: "127.0.0.1",
        mac: "00:00:00:00:00:00",
      },
      ...IFACES,
    ],
    hostname: "localhost",
    readText: () => undefined,
    realPath: () => undefined,
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:aa:bb:cc",
    "net0/hwaddr": "52:54:00:aa:bb:cc",
    "net0/ifname": "net0",
    "net0/ip": "10.0.2.15",
    "net0/netmask": "255.255.255.0",
  });
});

Deno.test("host settings: --mac picks the NIC", () => {
  const s = readHostSettings("52:54:00:00:00:01", {
    routes: ROUTES,
    interfaces: IFACES,
    hostname: "localhost",
    readText: () => undefined,
    realPath: (p) => LINKS[p],
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:00:00:01",
    "net0/hwaddr": "52:54:00:00:00:01",
    "net0/ifname": "net0",
    "net0/ip": "192.168.0.5",
    "net0/netmask": "255.255.255.0",
  });
});

Deno.test("host settings: PCI identity, DNS and SMBIOS as iPXE names them", () => {
  const s = readHostSettings(undefined, {
    routes: ROUTES,
    interfaces: IFACES,
    hostname: "node1",
    readText: (p) => SYS[p],
    realPath: (p) => LINKS[p],
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:aa:bb:cc",
    "net0/hwaddr": "52:54:00:aa:bb:cc",
    "net0/ifname": "net0",
    "net0/linktype": "Ethernet",
    "net0/bustype": "PCI",
    "net0/busloc": "0x18",
    "net0/busid": "01:1a:f4:10:00",
    "net0/ip": "10.0.2.15",
    "net0/netmask": "255.255.255.0",
    "net0/gateway": "10.0.2.2",
    "net0/dns": "10.0.2.3",
    "net0/domain": "lab.example.com",
    hostname: "node1",
    "smbios/uuid": "4c4c4544-0000-0000-0000-000000000000",
    "smbios/serial": "SN-1234",
    "smbios/manufacturer": "QEMU",
    "smbios/product": "Standard PC (Q35 + ICH9, 2009)",
    "smbios/asset": "ASSET-42",
    "smbios/board-serial": "BOARD-7",
  });
});

Deno.test("host settings: a script sees them as iPXE would show them", async () => {
  const settings = readHostSettings(undefined, {
    routes: ROUTES,
    interfaces: IFACES,
    hostname: "node1",
    readText: (p) => SYS[p],
    realPath: (p) => LINKS[p],
  });
  const plan = await runScriptSource(
    "#!ipxe\nkernel http://h/k ${platform} ${busid} ${net0/busloc} ${net0/busloc:busdevfn} " +
      "${uuid} ${asset} ${board-serial} ${dns} ${domain} ${net0/chip} ${mac:hexhyp} ${ifname}\nboot\n",
    {
      url: "http://h/s",
      fetch: () => Promise.reject(new Error("no fetch")),
      settings,
      platform: hostPlatform("x86_64", (p) => p === "/sys/firmware/efi"),
    },
  );
  assert.equal(plan.action, "kexec");
  assert.equal(
    (plan as KexecPlan).cmdline,
    "efi 01:1a:f4:10:00 0x18 00:03.0 4c4c4544-0000-0000-0000-000000000000 ASSET-42 BOARD-7 " +
      "10.0.2.3 lab.example.com  52-54-00-aa-bb-cc net0",
  );
});

Deno.test("host settings: ${platform} is efi on UEFI firmware, pcbios otherwise", () => {
  assert.equal(hostPlatform("x86_64", (p) => p === "/sys/firmware/efi"), "efi");
  assert.equal(hostPlatform("x86_64", () => false), "pcbios");
  assert.equal(hostPlatform("aarch64", () => false), "efi");
});

Deno.test("host settings: resolv.conf without upstreams, odd values are left out", () => {
  const s = readHostSettings(undefined, {
    routes: "",
    interfaces: [],
    hostname: "localhost",
    readText: (p) =>
      ({
        "/etc/resolv.conf":
          "nameserver 127.0.0.53\nnameserver 300.1.1.1\nnameserver fd00::1\ndomain d.example\nsearch s.example\n",
      })[p],
    realPath: () => undefined,
  });
  assert.deepEqual(s, { "net0/domain": "d.example" });
});

Deno.test("builtin settings: ${unixtime} is the clock's seconds, as uint32", async () => {
  const plan = await runScriptSource(
    "#!ipxe\nkernel http://h/k ${unixtime} ${unixtime:int32} ${builtin/unixtime:hexraw}\nboot\n",
    {
      url: "http://h/s",
      fetch: () => Promise.reject(new Error("no fetch")),
      now: () => 1_700_000_000_999,
    },
  );
  assert.equal(plan.action, "kexec");
  assert.equal((plan as KexecPlan).cmdline, "0x6553f100 1700000000 6553f100");
});

Deno.test("host settings: on an IPv6-only host the boot NIC is the default IPv6 route's interface", () => {
  const routes6 = [
    // The kernel's own "unreachable" default on lo (RTF_REJECT) is not a route out.
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo",
    "fec00000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00040001     eth0",
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000800 00000001 00000000 00450003     eth1",
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000400 00000001 00000000 00450003     eth0",
  ].join("\n");
  assert.equal(defaultRoute6Interface(routes6), "eth0");
  assert.equal(defaultRoute6Interface(routes6.split("\n")[0]), undefined);
  const s = readHostSettings(undefined, {
    routes: "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n",
    routes6,
    interfaces: [
      {
        family: "IPv6",
        name: "eth0",
        address: "fec0::5054:ff:fe12:3456",
        netmask: "ffff:ffff:ffff:ffff::",
        scopeid: 0,
        cidr: "fec0::5054:ff:fe12:3456/64",
        mac: "52:54:00:12:34:56",
      },
    ],
    hostname: "localhost",
    readText: () => undefined,
    realPath: () => undefined,
  });
  assert.equal(s["net0/mac"], "52:54:00:12:34:56");
});
