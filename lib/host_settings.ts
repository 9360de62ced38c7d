/**
 * iPXE settings read from the running host: the boot NIC's MAC and address,
 * the hostname and SMBIOS identifiers, named as iPXE names them (`net0/mac`,
 * `net0/ip`, `hostname`, `smbios/uuid`…).
 *
 * @module
 */

/** Where {@linkcode readHostSettings} looks (injected by tests). */
export interface HostSources {
  /** Text of `/proc/net/route`. */
  routes?: string;
  /** Network interfaces (default `Deno.networkInterfaces()`). */
  interfaces?: Deno.NetworkInterfaceInfo[];
  /** Host name (default `Deno.hostname()`). */
  hostname?: string;
  /** Reads a small text file, or returns undefined (default: sysfs reads). */
  readText?: (path: string) => string | undefined;
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

/**
 * Reads the host's settings. `mac` (from `--mac`) picks the boot NIC; without
 * it the interface of the default route is used, and without a default route
 * (a network without a gateway) the first interface, by name, that has an
 * IPv4 address other than loopback. Missing facts are left out (iPXE expands
 * them to empty strings).
 */
export function readHostSettings(
  mac: string | undefined,
  sources: HostSources = {},
): Record<string, string> {
  const out: Record<string, string> = {};
  const readText = sources.readText ?? readTextOrUndefined;
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
    : defaultRouteInterface(routes) ?? addressed[0];
  const nicMac = mac ?? interfaces.find((i) => i.name === iface)?.mac ??
    (iface ? readText(`/sys/class/net/${iface}/address`) : undefined);
  if (nicMac && nicMac !== "00:00:00:00:00:00") {
    out["net0/mac"] = nicMac.toLowerCase();
  }
  const v4 = interfaces.find((i) => i.name === iface && i.family === "IPv4");
  if (v4) {
    out["net0/ip"] = v4.address;
    const mask = netmask(v4.netmask);
    if (mask) out["net0/netmask"] = mask;
  }
  const gateway = iface ? gatewayOf(routes, iface) : undefined;
  if (gateway) out["net0/gateway"] = gateway;
  try {
    const hostname = sources.hostname ?? Deno.hostname();
    if (hostname && hostname !== "localhost") {
      out["hostname"] = hostname.split(".")[0];
    }
  } catch {
    // Leave it unset.
  }
  const dmi: Record<string, string> = {
    "smbios/uuid": "product_uuid",
    "smbios/serial": "product_serial",
    "smbios/manufacturer": "sys_vendor",
    "smbios/product": "product_name",
  };
  for (const [name, file] of Object.entries(dmi)) {
    const value = readText(`/sys/class/dmi/id/${file}`);
    if (value) {
      out[name] = value.toLowerCase() === value || name !== "smbios/uuid"
        ? value
        : value.toLowerCase();
    }
  }
  return out;
}
