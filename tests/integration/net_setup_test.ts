/**
 * image/initrd/net-setup (the initramfs's network) on this host, under
 * busybox sh as in the initramfs, without a VM: every `ip=` form, `vlan=`,
 * `nameserver=`, `BOOTIF=` and `assisted.proxy=` parsed (`--check` prints the
 * plan), every bad value refused with its own line and exit 2 before anything
 * is configured, and the configuration applied through stand-ins for ip,
 * vconfig, udhcpc, modprobe and hostname (tests/integration/fixtures/
 * net_fake_tool, which keeps the addresses and routes it was given). Run in a
 * network namespace of its own when the host allows one, so that a call that
 * missed its stand-in could not touch this host's network.
 */
import assert from "node:assert/strict";
import { withTemp } from "../test_util.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const SCRIPT = `${ROOT}/image/initrd/net-setup`;
const FAKE = `${ROOT}/tests/integration/fixtures/net_fake_tool`;
const TOOLS = ["ip", "vconfig", "udhcpc", "modprobe", "hostname"];
const ETH0 = "52:54:00:12:34:56";
const ETH1 = "52:54:00:ab:cd:ef";

const busybox = (() => {
  try {
    Deno.statSync("/bin/busybox");
    return "/bin/busybox";
  } catch {
    return undefined;
  }
})();
const unshare = busybox !== undefined && new Deno.Command("unshare", {
  args: ["-n", "true"],
  stdout: "null",
  stderr: "null",
}).outputSync().success;
if (!busybox) {
  console.warn(
    "net_setup_test: SKIPPED: /bin/busybox is missing (apt-get install busybox-static)",
  );
}

interface Case {
  cmdline: string;
  /** Interfaces: name -> [mac, carrier]; default eth0 with a carrier, eth1 without. */
  ifaces?: Record<string, [string, boolean]>;
  /** `eth0=10.0.2.15/24@10.0.2.2 …`: DHCP leases udhcpc gets. */
  dhcp?: string;
  /** `eth0=fec0::1/64@fe80::2 …`: router advertisements. */
  slaac?: string;
  tentative?: boolean;
  check?: boolean;
  /** Reuse the state of an earlier run (a retry). */
  dir?: string;
}

interface Result {
  code: number;
  out: string;
  /** The tool calls, one a line. */
  calls: string[];
  env: string;
  resolv: string;
  dir: string;
}

async function readOr(path: string): Promise<string> {
  return await Deno.readTextFile(path).catch(() => "");
}

async function runIn(dir: string, c: Case): Promise<Result> {
  const sys = `${dir}/sys`;
  if (!c.dir) {
    for (const sub of ["bin", "sys", "conf", "run", "state", "vlan"]) {
      await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
    }
    for (const tool of TOOLS) await Deno.symlink(FAKE, `${dir}/bin/${tool}`);
    const ifaces = c.ifaces ??
      { eth0: [ETH0, true], eth1: [ETH1, false] } as Record<
        string,
        [string, boolean]
      >;
    for (const [name, [mac, carrier]] of Object.entries(ifaces)) {
      await Deno.mkdir(`${sys}/${name}`);
      await Deno.mkdir(`${dir}/conf/${name}`);
      await Deno.writeTextFile(`${sys}/${name}/address`, `${mac}\n`);
      await Deno.writeTextFile(
        `${sys}/${name}/carrier`,
        carrier ? "1\n" : "0\n",
      );
    }
  }
  await Deno.writeTextFile(`${dir}/cmdline`, `${c.cmdline}\n`);
  await Deno.writeTextFile(`${dir}/calls`, "");
  const command = [busybox!, "sh", SCRIPT, ...(c.check ? ["--check"] : [])];
  const out = await new Deno.Command(
    unshare ? "unshare" : command[0],
    {
      args: unshare ? ["-n", ...command] : command.slice(1),
      env: {
        PATH: "/usr/bin:/bin",
        NET_CMDLINE: `${dir}/cmdline`,
        NET_SYS: sys,
        NET_CONF: `${dir}/conf`,
        NET_PROC_VLAN: `${dir}/vlan`,
        NET_RUN: `${dir}/run`,
        NET_RESOLV: `${dir}/resolv.conf`,
        NET_BIN: `${dir}/bin`,
        NET_WAIT: "1",
        FAKE_LOG: `${dir}/calls`,
        FAKE_STATE: `${dir}/state`,
        FAKE_DHCP: c.dhcp ?? "",
        FAKE_SLAAC: c.slaac ?? "",
        ...(c.tentative ? { FAKE_TENTATIVE: "1" } : {}),
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    out: text.decode(out.stdout) + text.decode(out.stderr),
    calls: (await readOr(`${dir}/calls`)).split("\n").filter((l) => l),
    env: await readOr(`${dir}/run/assisted-net.env`),
    resolv: await readOr(`${dir}/resolv.conf`),
    dir,
  };
}

function run(c: Case): Promise<Result> {
  if (c.dir) return runIn(c.dir, c);
  return withTemp((dir) => runIn(dir, c));
}

/** The plan `--check` prints, as lines. */
async function plan(cmdline: string): Promise<string[]> {
  const r = await run({ cmdline: `console=ttyS0 ${cmdline}`, check: true });
  assert.equal(r.code, 0, `${cmdline}: ${r.out}`);
  assert.deepEqual(r.calls, [], "--check configured something");
  return r.out.trim().split("\n");
}

Deno.test({
  name:
    "net-setup --check: every supported ip= form, vlan=, nameserver=, BOOTIF= and proxy, as a plan",
  ignore: !busybox,
  async fn() {
    const cases: [string, string[]][] = [
      ["", ["auto * auto -"]],
      [
        "ip=10.0.2.15::10.0.2.2:255.255.255.0:guest:eth0:none",
        [
          "static eth0 4 10.0.2.15 24 10.0.2.2 -",
          "hostname guest",
          "boot eth0",
        ],
      ],
      ["ip=10.0.2.15/23:::::eth1:off", [
        "static eth1 4 10.0.2.15 23 - -",
        "boot eth1",
      ]],
      ["ip=10.0.2.15::10.0.2.1:255.255.255.128::eth0:none:9000", [
        "static eth0 4 10.0.2.15 25 10.0.2.1 9000",
        "boot eth0",
      ]],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0:none:10.0.2.3:[2001:db8::53]",
        [
          "static eth0 4 10.0.2.15 24 10.0.2.2 -",
          "dns 10.0.2.3",
          "dns 2001:db8::53",
          "boot eth0",
        ],
      ],
      ["ip=[2001:db8::10]::[2001:db8::1]:64::eth0:none", [
        "static eth0 6 2001:db8::10 64 2001:db8::1 -",
        "boot eth0",
      ]],
      ["ip=[2001:db8::10/56]:::::eth0:none", [
        "static eth0 6 2001:db8::10 56 - -",
        "boot eth0",
      ]],
      ["ip=[fe80::1:2]:::::eth0:none", [
        "static eth0 6 fe80::1:2 64 - -",
        "boot eth0",
      ]],
      ["ip=[::ffff:10.0.0.1]:::96::eth0:none", [
        "static eth0 6 ::ffff:10.0.0.1 96 - -",
        "boot eth0",
      ]],
      ["ip=eth0:dhcp", ["auto eth0 dhcp -", "boot eth0"]],
      ["ip=eth1:auto6:1400", ["auto eth1 auto6 1400", "boot eth1"]],
      ["ip=eth1:either6", ["auto eth1 auto6 -", "boot eth1"]],
      ["ip=dhcp", ["auto * dhcp -"]],
      ["ip=on", ["auto * dhcp -"]],
      ["ip=any", ["auto * dhcp -"]],
      ["ip=auto6", ["auto * auto6 -"]],
      [
        "nameserver=10.0.2.3 nameserver=2001:db8::53 nameserver=[2001:db8::54]",
        [
          "auto * auto -",
          "dns 10.0.2.3",
          "dns 2001:db8::53",
          "dns 2001:db8::54",
        ],
      ],
      [
        "vlan=vlan5:eth0 vlan=vlan0006:eth0 vlan=eth0.7:eth0 vlan=eth1.0008:eth1 ip=192.0.2.10:::24::vlan0006:none",
        [
          "vlan vlan5 eth0 5",
          "vlan vlan0006 eth0 6",
          "vlan eth0.7 eth0 7",
          "vlan eth1.0008 eth1 8",
          "static vlan0006 4 192.0.2.10 24 - -",
          "boot vlan0006",
        ],
      ],
      ["BOOTIF=01-52-54-00-AB-CD-EF", ["auto * auto -", "boot eth1"]],
      // BOOTIF names the boot interface even when an ip= names another.
      ["ip=eth0:dhcp BOOTIF=52:54:00:ab:cd:ef", [
        "auto eth0 dhcp -",
        "boot eth1",
      ]],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0:none ip=eth1:dhcp ip=[fd00::5]:::64::eth0:none",
        [
          "static eth0 4 10.0.2.15 24 10.0.2.2 -",
          "auto eth1 dhcp -",
          "static eth0 6 fd00::5 64 - -",
          "boot eth0",
        ],
      ],
      [
        "assisted.proxy=http://user:pa%40ss@proxy.example.com:3128/ assisted.no_proxy=.example.com,10.0.0.0/8,[::1],localhost",
        [
          "auto * auto -",
          "proxy http://user:pa%40ss@proxy.example.com:3128/",
          "noproxy .example.com,10.0.0.0/8,[::1],localhost",
        ],
      ],
      ["assisted.proxy=https://[2001:db8::1]:8443", [
        "auto * auto -",
        "proxy https://[2001:db8::1]:8443",
      ]],
    ];
    for (const [cmdline, expected] of cases) {
      assert.deepEqual(await plan(cmdline), expected, cmdline);
    }
  },
});

Deno.test({
  name:
    "net-setup: each bad value is refused with its own line and exit 2, before anything is configured",
  ignore: !busybox,
  async fn() {
    const cases: [string, RegExp][] = [
      [
        "ip=10.0.2.999::10.0.2.2:24::eth0:none",
        /^ip=10\.0\.2\.999::10\.0\.2\.2:24::eth0:none: 10\.0\.2\.999 is not an IPv4 address or an \[IPv6\] address$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:255.0.255.0::eth0:none",
        /: netmask 255\.0\.255\.0 is not a netmask or a prefix length \(0-32\)$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:33::eth0:none",
        /: netmask 33 is not a netmask or a prefix length \(0-32\)$/,
      ],
      [
        "ip=[2001:db8::1]:::129::eth0:none",
        /: netmask 129 is not a prefix length \(0-128\)$/,
      ],
      [
        "ip=10.0.2.15/24:::16::eth0:none",
        /: prefix \/24 does not match netmask 16$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0",
        /: expected <client>:\[<peer>\]:<gateway>:<netmask>:<hostname>:<iface>:none$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0:dhcp",
        /: with a client address the method must be none or off, not dhcp$/,
      ],
      ["ip=10.0.2.15::10.0.2.2:::eth0:none", /: no netmask$/],
      [
        "ip=10.0.2.15::[2001:db8::1]:24::eth0:none",
        /: gateway \[2001:db8::1\] is not an IPv4 address$/,
      ],
      [
        "ip=[2001:db8::10]::2001:db8::1:64::eth0:none",
        /: gateway 2001 is not an IPv6 address in brackets$/,
      ],
      [
        "ip=[2001:db8::10::1]:::64::eth0:none",
        /: \[2001:db8::10::1\] is not an IPv4 address or an \[IPv6\] address$/,
      ],
      ["ip=[2001:db8:::64::eth0:none", /: unpaired \[ \]$/],
      [
        "ip=10.0.2.15:10.0.2.300:10.0.2.2:24::eth0:none",
        /: peer 10\.0\.2\.300 is not an address$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24:bad_host!:eth0:none",
        /: hostname bad_host! is not a host name$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24:::none",
        /: no interface \(the sixth field\)$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth7:none",
        /: no interface eth7 \(interfaces: eth0 eth1\)$/,
      ],
      [
        "ip=eth7:dhcp",
        /^ip=eth7:dhcp: no interface eth7 \(interfaces: eth0 eth1\)$/,
      ],
      ["ip=e$h0:dhcp", /: e\$h0 is not an interface name$/],
      [
        "ip=eth0:dhcp6",
        /^ip=eth0:dhcp6: DHCPv6 \(dhcp6\) is not available in this initramfs \(its busybox has no DHCPv6 client\): use auto6/,
      ],
      ["ip=dhcp6", /^ip=dhcp6: DHCPv6 \(dhcp6\) is not available/],
      [
        "ip=eth0:bogus",
        /^ip=eth0:bogus: unknown method bogus \(dhcp, on, any, auto6, either6, none, off\)$/,
      ],
      [
        "ip=eth0:none",
        /^ip=eth0:none: none configures nothing here: give an address/,
      ],
      ["ip=off", /^ip=off: off configures nothing here/],
      [
        "ip=eth0:ibft",
        /^ip=eth0:ibft: ibft is not supported by this initramfs$/,
      ],
      ["ip=eth0:dhcp:99999", /: MTU 99999 is not a number from 68 to 65535$/],
      [
        "ip=eth0:dhcp:1500:52:54:00:12:34:56",
        /: setting a MAC address is not supported$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0:none:1500:52:54:00:12:34:56",
        /: setting a MAC address is not supported$/,
      ],
      [
        "ip=10.0.2.15::10.0.2.2:24::eth0:none:1.2.3.4.5",
        /: DNS server 1\.2\.3\.4\.5 is not an address$/,
      ],
      [
        "vlan=vlan5000:eth0",
        /^vlan=vlan5000:eth0: VLAN id 5000 is not from 1 to 4094$/,
      ],
      ["vlan=vlan0:eth0", /: VLAN id 0 is not from 1 to 4094$/],
      [
        "vlan=foo:eth0",
        /: the name must be vlan<id> or <parent>\.<id> \(vlan5, vlan0005, eth0\.5\)$/,
      ],
      ["vlan=eth1.5:eth0", /: the name says parent eth1, not eth0$/],
      [
        "vlan=vlan5:eth9",
        /^vlan=vlan5:eth9: no interface eth9 \(interfaces: eth0 eth1\)$/,
      ],
      ["vlan=vlan5", /^vlan=vlan5: expected vlan=<name>:<parent>$/],
      [
        "vlan=vlan5:eth0 vlan=vlan5:eth0",
        /^vlan=vlan5:eth0: vlan5 is defined twice$/,
      ],
      [
        "vlan=averyverylongname.5:averyverylongname",
        /: averyverylongname\.5 is not an interface name/,
      ],
      [
        "nameserver=1.2.3",
        /^nameserver=1\.2\.3 is not an IPv4 or IPv6 address$/,
      ],
      [
        "BOOTIF=01-aa",
        /^BOOTIF=01-aa is not a MAC address \(01-aa-bb-cc-dd-ee-ff\)$/,
      ],
      [
        "BOOTIF=01-00-11-22-33-44-55",
        /^BOOTIF=01-00-11-22-33-44-55: no interface has MAC 00:11:22:33:44:55 \(interfaces: eth0 eth1\)$/,
      ],
      [
        "assisted.proxy=ftp://proxy:21",
        /^assisted\.proxy=ftp:\/\/proxy:21 is not an http:\/\/ or https:\/\/ proxy URL/,
      ],
      [
        "assisted.proxy=http://proxy:3128/path",
        /^assisted\.proxy=http:\/\/proxy:3128\/path is not an http/,
      ],
      [
        "assisted.proxy=http://it's:x@proxy",
        /^assisted\.proxy=http:\/\/it's:x@proxy is not an http/,
      ],
      [
        "assisted.no_proxy=a;b",
        /^assisted\.no_proxy=a;b is not a comma-separated list/,
      ],
    ];
    for (const [cmdline, pattern] of cases) {
      const r = await run({ cmdline, dhcp: "eth0=10.0.2.15/24@10.0.2.2" });
      assert.equal(r.code, 2, `${cmdline}: ${r.out}`);
      const lines = r.out.trim().split("\n");
      assert.equal(lines.length, 1, `${cmdline}: ${r.out}`);
      assert.match(lines[0], /^assisted-initrd: error: /);
      assert.match(lines[0].slice("assisted-initrd: error: ".length), pattern);
      assert.deepEqual(r.calls, [], `${cmdline} configured something`);
      assert.equal(r.env, "", `${cmdline} wrote the env file`);
    }
    // Several at once: each on its own line.
    const r = await run({
      cmdline: "ip=eth7:dhcp vlan=vlan0:eth0 nameserver=x BOOTIF=zz",
    });
    assert.equal(r.code, 2);
    assert.equal(r.out.trim().split("\n").length, 4, r.out);
  },
});

Deno.test({
  name:
    "net-setup: static IPv4 + IPv6, a VLAN, DNS, hostname and proxy, and never a DHCP client",
  ignore: !busybox,
  async fn() {
    const r = await run({
      cmdline:
        "quiet ip=10.0.2.15::10.0.2.2:255.255.255.0:guest1:eth0:none:1400 ip=[fd00::15]::[fd00::1]:64::eth0:none " +
        "vlan=vlan5:eth0 ip=192.0.2.10::192.0.2.1:24::vlan5:none nameserver=10.0.2.3 " +
        "assisted.proxy=http://user:secret@10.0.2.101:3128 assisted.no_proxy=.example.com,10.0.0.0/8",
      dhcp: "eth0=10.9.9.9/24@10.9.9.1",
    });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(r.calls, [
      "modprobe 8021q",
      "ip link set eth0 up",
      "vconfig add eth0 5",
      "ip link set dev eth0.5 name vlan5",
      "ip link set eth0 mtu 1400",
      "ip link set eth0 up",
      "ip -4 -o addr show dev eth0",
      "ip -4 addr add 10.0.2.15/24 dev eth0",
      "ip -4 route add default via 10.0.2.2 dev eth0",
      "ip -6 -o addr show dev eth0",
      "ip -6 addr add fd00::15/64 dev eth0",
      "ip -6 route add default via fd00::1 dev eth0",
      "ip link set vlan5 up",
      "ip -4 -o addr show dev vlan5",
      "ip -4 addr add 192.0.2.10/24 dev vlan5",
      "ip -6 -o addr show dev eth0",
      "ip route show",
      "ip -6 route show",
      "ip -o addr show dev eth0",
      "ip route show",
      "ip -6 route show",
      "ip -o addr show dev vlan5",
      "hostname guest1",
    ]);
    assert.deepEqual(r.out.trim().split("\n"), [
      "assisted-initrd: net: vlan5: gateway 192.0.2.1 not used (the default route goes through the first one given)",
      `assisted-initrd: net: eth0 (${ETH0}): static 10.0.2.15/24, fd00::15/64, gateway 10.0.2.2 fd00::1`,
      `assisted-initrd: net: vlan5 (${ETH0}, VLAN 5 on eth0): static 192.0.2.10/24`,
      "assisted-initrd: net: DNS: 10.0.2.3",
      "assisted-initrd: net: hostname guest1",
      `assisted-initrd: net: boot interface eth0 (MAC ${ETH0})`,
      "assisted-initrd: net: proxy http://***@10.0.2.101:3128 (not for: .example.com,10.0.0.0/8)",
    ]);
    assert.equal(r.resolv, "nameserver 10.0.2.3\n");
    // The env file, as init-bootloader reads it.
    const sourced = await withTemp(async (dir) => {
      await Deno.writeTextFile(`${dir}/env`, r.env);
      return await new Deno.Command(busybox!, {
        args: [
          "sh",
          "-c",
          '. "$1"; env | grep -E "^(NET_|HTTPS?_PROXY|https?_proxy|NO_PROXY|no_proxy)" | sort',
          "sh",
          `${dir}/env`,
        ],
        env: { PATH: "/usr/bin:/bin" },
        clearEnv: true,
        stdout: "piped",
      }).output();
    });
    const proxy = "http://user:secret@10.0.2.101:3128";
    assert.deepEqual(
      new TextDecoder().decode(sourced.stdout).trim().split("\n"),
      [
        `HTTPS_PROXY=${proxy}`,
        `HTTP_PROXY=${proxy}`,
        "NO_PROXY=.example.com,10.0.0.0/8",
        `http_proxy=${proxy}`,
        `https_proxy=${proxy}`,
        "no_proxy=.example.com,10.0.0.0/8",
      ],
    );
    assert.match(r.env, new RegExp(`^NET_IFACE=eth0\nNET_MAC=${ETH0}\n`));
  },
});

Deno.test({
  name:
    "net-setup: static addresses are turned away from router advertisements, and a retry finds them in place",
  ignore: !busybox,
  async fn() {
    await withTemp(async (dir) => {
      const cmdline = "ip=10.0.2.15::10.0.2.2:24::eth0:none";
      const first = await runIn(dir, { cmdline });
      assert.equal(first.code, 0, first.out);
      assert.equal(
        await Deno.readTextFile(`${dir}/conf/eth0/accept_ra`),
        "0\n",
      );
      const again = await runIn(dir, { cmdline, dir });
      assert.equal(again.code, 0, again.out);
      assert.ok(
        !again.calls.some((c) => c.includes("addr add")),
        again.calls.join("\n"),
      );
      assert.match(
        again.out,
        /eth0 \(.*\): static 10\.0\.2\.15\/24, gateway 10\.0\.2\.2/,
      );
    });
    const tentative = await run({
      cmdline: "ip=[fd00::15]:::64::eth0:none",
      tentative: true,
    });
    assert.equal(tentative.code, 0, tentative.out);
    assert.match(
      tentative.out,
      /eth0: an IPv6 address is still tentative \(duplicate address detection\) after 1 s/,
    );
  },
});

Deno.test({
  name:
    "net-setup: DHCPv4 by default on the interface with a carrier, then the others; BOOTIF's interface alone",
  ignore: !busybox,
  async fn() {
    const dhcp = await run({
      cmdline: "quiet",
      ifaces: { eth0: [ETH0, false], eth1: [ETH1, true] },
      dhcp: "eth0=10.0.2.15/24@10.0.2.2 eth1=10.0.3.15/24@10.0.3.2",
    });
    assert.equal(dhcp.code, 0, dhcp.out);
    assert.deepEqual(dhcp.calls.filter((c) => c.startsWith("udhcpc")), [
      "udhcpc -i eth1 -s /usr/share/udhcpc/default.script -q -n -t 5 -T 2 -A 1",
    ]);
    assert.match(
      dhcp.out,
      new RegExp(
        `eth1 \\(${ETH1}\\): DHCP 10\\.0\\.3\\.15/24, gateway 10\\.0\\.3\\.2\n`,
      ),
    );
    assert.match(dhcp.env, new RegExp(`NET_IFACE=eth1\nNET_MAC=${ETH1}\n`));
    assert.equal(dhcp.resolv, "nameserver 10.0.2.3\n");

    // No carrier anywhere: each in turn.
    const fallback = await run({
      cmdline: "quiet",
      ifaces: { eth0: [ETH0, false], eth1: [ETH1, false] },
      dhcp: "eth1=10.0.3.15/24@10.0.3.2",
    });
    assert.equal(fallback.code, 0, fallback.out);
    assert.deepEqual(
      fallback.calls.filter((c) => c.startsWith("udhcpc")).map((c) =>
        c.split(" ")[2]
      ),
      ["eth0", "eth1"],
    );
    assert.match(fallback.env, /NET_IFACE=eth1\n/);

    const bootif = await run({
      cmdline: `BOOTIF=01-${ETH1.replaceAll(":", "-")}`,
      dhcp: "eth0=10.0.2.15/24@10.0.2.2",
    });
    assert.equal(bootif.code, 1, bootif.out);
    assert.deepEqual(
      bootif.calls.filter((c) => c.startsWith("udhcpc")).map((c) =>
        c.split(" ")[2]
      ),
      ["eth1"],
    );
    assert.match(
      bootif.out,
      /assisted-initrd: error: no address on: eth1 \(no DHCPv4 lease: udhcpc: no lease, failing, no router advertisement\)/,
    );

    const explicit = await run({
      cmdline: "ip=eth1:dhcp:1400",
      dhcp: "eth0=10.0.2.15/24@10.0.2.2 eth1=10.0.3.15/24@10.0.3.2",
    });
    assert.equal(explicit.code, 0, explicit.out);
    assert.deepEqual(
      explicit.calls.filter((c) => /^(udhcpc|ip link set eth1 mtu)/.test(c)),
      [
        "ip link set eth1 mtu 1400",
        "udhcpc -i eth1 -s /usr/share/udhcpc/default.script -q -n -t 5 -T 2 -A 1",
      ],
    );
  },
});

Deno.test({
  name:
    "net-setup: without a DHCPv4 answer the router advertisement's address (SLAAC); auto6 skips DHCPv4; nothing at all fails with exit 1",
  ignore: !busybox,
  async fn() {
    const slaac = "eth0=fec0::5054:ff:fe12:3456/64@fe80::2";
    const v6 = await run({ cmdline: "quiet", slaac });
    assert.equal(v6.code, 0, v6.out);
    assert.deepEqual(v6.out.trim().split("\n"), [
      "assisted-initrd: net: eth0: no DHCPv4 answer (udhcpc: no lease, failing)",
      `assisted-initrd: net: eth0 (${ETH0}): SLAAC fec0::5054:ff:fe12:3456/64, gateway fe80::2`,
      `assisted-initrd: net: boot interface eth0 (MAC ${ETH0})`,
    ]);

    const auto6 = await run({ cmdline: "ip=eth0:auto6", slaac });
    assert.equal(auto6.code, 0, auto6.out);
    assert.ok(
      !auto6.calls.some((c) => c.startsWith("udhcpc")),
      auto6.calls.join("\n"),
    );
    assert.match(auto6.out, /eth0 \(.*\): SLAAC fec0::5054:ff:fe12:3456\/64/);

    const none = await run({ cmdline: "quiet" });
    assert.equal(none.code, 1, none.out);
    assert.match(
      none.out,
      /assisted-initrd: error: no address on: eth0 eth1 \(no DHCPv4 lease: udhcpc: no lease, failing, no router advertisement\)/,
    );
    assert.equal(none.env, "");

    const noNic = await run({ cmdline: "quiet", ifaces: {} });
    assert.equal(noNic.code, 1, noNic.out);
    assert.match(
      noNic.out,
      /assisted-initrd: error: no network interface found \(loaded drivers: /,
    );
  },
});
