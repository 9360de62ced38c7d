import assert from "node:assert/strict";
import {
  defaultRouteInterface,
  readHostSettings,
} from "../../lib/host_settings.ts";
import { editCmdline } from "../../lib/plan.ts";

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

Deno.test("host settings: the default route's NIC is net0", () => {
  assert.equal(defaultRouteInterface(ROUTES), "eth0");
  const s = readHostSettings(undefined, {
    routes: ROUTES,
    interfaces: IFACES,
    hostname: "node1.example.com",
    readText: (p) => DMI[p],
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:aa:bb:cc",
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
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:aa:bb:cc",
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
  });
  assert.deepEqual(s, {
    "net0/mac": "52:54:00:00:00:01",
    "net0/ip": "192.168.0.5",
    "net0/netmask": "255.255.255.0",
  });
});

Deno.test("plan: karg edits keep iPXE spacing and delete by key or exact pair", () => {
  assert.equal(
    editCmdline("a=1 b c=2", { remove: ["b"], append: ["d"] }),
    "a=1 c=2 d",
  );
  assert.equal(
    editCmdline("console=tty1 console=ttyS1,115200n8 x", {
      remove: ["console"],
    }),
    "x",
  );
  assert.equal(
    editCmdline("console=tty1 console=ttyS1,115200n8", {
      remove: ["console=tty1"],
    }),
    "console=ttyS1,115200n8",
  );
  assert.equal(editCmdline("   a", { append: ["b"] }), "   a b");
  assert.equal(editCmdline("", { append: ["b"] }), "b");
});
