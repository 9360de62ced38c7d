/**
 * iPXE settings read from the running host: the boot NIC's MAC, address and
 * PCI identity, the DNS server and domain, the hostname and SMBIOS
 * identifiers, named as iPXE names them (`net0/mac`, `net0/ip`,
 * `net0/busid`, `hostname`, `smbios/uuid`…), and the firmware platform.
 * docs/ipxe.md lists what iPXE reports that Linux cannot tell.
 *
 * @module
 */

/** Where {@linkcode readHostSettings} looks (injected by tests). */
export interface HostSources {
  /** Text of `/proc/net/route`. */
  routes?: string;
  /** Text of `/proc/net/ipv6_route` (read when there is no IPv4 default route). */
  routes6?: string;
  /** Network interfaces (default `Deno.networkInterfaces()`). */
  interfaces?: Deno.NetworkInterfaceInfo[];
  /** Host name (default `Deno.hostname()`). */
  hostname?: string;
  /** Reads a small text file, or returns undefined (default: sysfs reads). */
  readText?: (path: string) => string | undefined;
  /** Resolves a path's symbolic links, or returns undefined (default: `Deno.realPathSync`). */
  realPath?: (path: string) => string | undefined;
}

/** Whether a path exists (injected by tests). */
export type PathExists = (path: string) => boolean;

function pathExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function realPathOrUndefined(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}

/**
 * iPXE's `${platform}` on this machine: on x86 `efi` when the firmware is UEFI
 * (Linux shows `/sys/firmware/efi`), `pcbios` otherwise; iPXE runs only as
 * an EFI program on the other architectures.
 */
export function hostPlatform(
  arch: string = Deno.build.arch,
  exists: PathExists = pathExists,
): "efi" | "pcbios" {
  if (arch !== "x86_64") return "efi";
  return exists("/sys/firmware/efi") ? "efi" : "pcbios";
}

function readTextOrUndefined(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

/** The interface of the default IPv4 route, from `/proc/net/route` text. */
export function defaultRouteInterface(routes: string): string | undefined {
  for (const line of routes.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[1] === "00000000" && f[7] === "00000000") {
      return f[0];
    }
  }
  return undefined;
}

/**
 * The interface of the default IPv6 route (lowest metric), from
 * `/proc/net/ipv6_route` text: on an IPv6-only network there is no IPv4 one.
 */
export function defaultRoute6Interface(routes: string): string | undefined {
  let best: { iface: string; metric: number } | undefined;
  for (const line of routes.split("\n")) {
    const f = line.trim().split(/\s+/);
    // dest, dest prefix, src, src prefix, next hop, metric, refcnt, use, flags, iface
    if (f.length < 10 || !/^0{32}$/.test(f[0]) || f[1] !== "00") continue;
    const flags = parseInt(f[8], 16);
    // RTF_UP (0x1) and not RTF_REJECT (0x200): the kernel's "unreachable" default sits on lo.
    if (!(flags & 0x1) || flags & 0x200 || f[9] === "lo") continue;
    const metric = parseInt(f[5], 16);
    if (!best || metric < best.metric) best = { iface: f[9], metric };
  }
  return best?.iface;
}

function gatewayOf(routes: string, iface: string): string | undefined {
  for (const line of routes.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[0] === iface && f[1] === "00000000" && f[2] !== "00000000") {
      const n = parseInt(f[2], 16);
      return [n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255].join(
        ".",
      );
    }
  }
  return undefined;
}

function netmask(prefix: string): string | undefined {
  return prefix.includes(".") ? prefix : undefined;
}

const PCI_ADDRESS = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/**
 * `bustype`, `busloc` and `busid` of a NIC on PCI, as iPXE's netdev settings
 * give them: the PCI function is the nearest `DDDD:BB:DD.F` directory above
 * the interface's device (a virtio NIC sits one level below it).
 */
function pciSettings(
  iface: string,
  readText: (path: string) => string | undefined,
  realPath: (path: string) => string | undefined,
): Record<string, string> {
  const device = realPath(`/sys/class/net/${iface}/device`);
  if (!device) return {};
  const parts = device.split("/");
  for (let i = parts.length - 1; i > 0; i--) {
    const m = PCI_ADDRESS.exec(parts[i]);
    if (!m) continue;
    const dir = parts.slice(0, i + 1).join("/");
    const hex4 = (file: string) => {
      const v = readText(`${dir}/${file}`);
      return v && /^0x[0-9a-fA-F]{4}$/.test(v)
        ? v.slice(2).toLowerCase()
        : undefined;
    };
    const v = hex4("vendor");
    const d = hex4("device");
    const [seg, bus, dev, fn] = m.slice(1).map((x) => parseInt(x, 16));
    const loc = (seg << 16) | (bus << 8) | (dev << 3) | fn;
    const out: Record<string, string> = {
      "net0/bustype": "PCI",
      "net0/busloc": `0x${loc.toString(16)}`,
    };
    if (v && d) {
      // iPXE's dhcp_netdev_desc: bus type 1 (PCI), vendor, device, big-endian.
      out["net0/busid"] = `01:${v.slice(0, 2)}:${v.slice(2)}:${d.slice(0, 2)}:${
        d.slice(2)
      }`;
    }
    return out;
  }
  return {};
}

function isIpv4(value: string | undefined): value is string {
  const parts = value?.split(".") ?? [];
  return parts.length === 4 &&
    parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/** `dns` (the first IPv4 name server that is not loopback) and `domain`, from resolv.conf. */
function dnsSettings(
  readText: (path: string) => string | undefined,
): Record<string, string> {
  // systemd-resolved's own file names the upstream servers, not its stub.
  const text = readText("/run/systemd/resolve/resolv.conf") ??
    readText("/etc/resolv.conf") ?? "";
  const out: Record<string, string> = {};
  let search: string | undefined;
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (
      key === "nameserver" && !out["net0/dns"] && isIpv4(value) &&
      !value.startsWith("127.")
    ) {
      out["net0/dns"] = value;
    }
    if (key === "domain" && value) out["net0/domain"] = value;
    if (key === "search" && value && search === undefined) search = value;
  }
  if (!out["net0/domain"] && search && search !== ".") {
    out["net0/domain"] = search;
  }
  return out;
}

/** SMBIOS strings iPXE reads, and the sysfs file Linux shows each in. */
const DMI: Record<string, string> = {
  "smbios/uuid": "product_uuid",
  "smbios/serial": "product_serial",
  "smbios/manufacturer": "sys_vendor",
  "smbios/product": "product_name",
  "smbios/asset": "chassis_asset_tag",
  "smbios/board-serial": "board_serial",
};

/**
 * Reads the host's settings. `mac` (from `--mac`) picks the boot NIC; without
 * it the interface of the default route is used (IPv4, else IPv6), and without a default route
 * (a network without a gateway) the first interface, by name, that has an IPv4 address other than
 * loopback. Missing facts are left out (iPXE expands them to empty strings).
 */
export function readHostSettings(
  mac: string | undefined,
  sources: HostSources = {},
): Record<string, string> {
  const out: Record<string, string> = {};
  const readText = sources.readText ?? readTextOrUndefined;
  const realPath = sources.realPath ?? realPathOrUndefined;
  const routes = sources.routes ?? readText("/proc/net/route") ?? "";
  let interfaces: Deno.NetworkInterfaceInfo[] = [];
  try {
    interfaces = sources.interfaces ?? Deno.networkInterfaces();
  } catch {
    // No permission or no interfaces: the MAC may still come from --mac.
  }
  const addressed = interfaces
    .filter((i) => i.family === "IPv4" && !i.address.startsWith("127."))
    .map((i) => i.name).sort();
  const iface = mac
    ? interfaces.find((i) => i.mac.toLowerCase() === mac)?.name
    : defaultRouteInterface(routes) ??
      defaultRoute6Interface(
        sources.routes6 ?? readText("/proc/net/ipv6_route") ?? "",
      ) ?? addressed[0];
  const nicMac = mac ?? interfaces.find((i) => i.name === iface)?.mac ??
    (iface ? readText(`/sys/class/net/${iface}/address`) : undefined);
  if (nicMac && nicMac !== "00:00:00:00:00:00") {
    out["net0/mac"] = nicMac.toLowerCase();
    out["net0/hwaddr"] = nicMac.toLowerCase();
    out["net0/ifname"] = "net0";
  }
  if (iface) {
    // ARPHRD_ETHER: iPXE's link-layer protocol name.
    if (readText(`/sys/class/net/${iface}/type`) === "1") {
      out["net0/linktype"] = "Ethernet";
    }
    Object.assign(out, pciSettings(iface, readText, realPath));
  }
  const v4 = interfaces.find((i) => i.name === iface && i.family === "IPv4");
  if (v4) {
    out["net0/ip"] = v4.address;
    const mask = netmask(v4.netmask);
    if (mask) out["net0/netmask"] = mask;
  }
  const gateway = iface ? gatewayOf(routes, iface) : undefined;
  if (gateway) out["net0/gateway"] = gateway;
  Object.assign(out, dnsSettings(readText));
  try {
    const hostname = sources.hostname ?? Deno.hostname();
    if (hostname && hostname !== "localhost") {
      out["hostname"] = hostname.split(".")[0];
    }
  } catch {
    // Leave it unset.
  }
  for (const [name, file] of Object.entries(DMI)) {
    const value = readText(`/sys/class/dmi/id/${file}`);
    if (value) {
      out[name] = name === "smbios/uuid" ? value.toLowerCase() : value;
    }
  }
  return out;
}
