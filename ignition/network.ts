/**
 * The disk image's network, as the Ignition generator takes it:
 *
 * - NetworkManager keyfiles (`.nmconnection`), written to
 *   `/etc/NetworkManager/system-connections/` with mode 0600 (NetworkManager
 *   ignores a keyfile others can read). Each is checked here: its name, its
 *   size, UTF-8 text that reads as an INI file with a `[connection]` section.
 * - A proxy for the bootloader's unit: `HTTP_PROXY`, `HTTPS_PROXY` and
 *   `NO_PROXY` in the unit's environment file (download.env), so that the
 *   download script's curl and the bootloader both see them; each written in
 *   both cases, since curl reads only the lower-case `http_proxy` (and Deno
 *   either).
 *
 * @module
 */

import { checkUrl, formatEnvLine } from "../lib/config/mod.ts";
import { BootError, ExitCode } from "../lib/errors.ts";

/** Where NetworkManager reads keyfiles on the target. */
export const NM_CONNECTIONS_DIR = "/etc/NetworkManager/system-connections";
/** Largest keyfile accepted (a real one is a few hundred bytes). */
export const MAX_NM_CONNECTION_BYTES = 64 * 1024;
/** Most keyfiles accepted. */
export const MAX_NM_CONNECTIONS = 64;

/** One NetworkManager keyfile: its file name and text. */
export interface NmConnection {
  /** File name, `NAME.nmconnection`. */
  name: string;
  /** The keyfile. */
  contents: string;
}

/** The proxy of the bootloader's unit (each optional). */
export interface UnitProxy {
  /** Proxy for http:// URLs. */
  httpProxy?: string;
  /** Proxy for https:// URLs (a CONNECT tunnel: the proxy sees host and port only). */
  httpsProxy?: string;
  /** Hosts, domains, addresses or CIDR ranges reached without the proxy, comma-separated. */
  noProxy?: string;
}

function usage(message: string): BootError {
  return new BootError(message, ExitCode.Usage);
}

/**
 * Checks one keyfile: a plain file name ending in `.nmconnection`, at most
 * {@linkcode MAX_NM_CONNECTION_BYTES}, text in which every line is blank, a
 * comment, a `[section]` or a `key=value`, with a `[connection]` section.
 * Throws a usage error naming `what`.
 */
export function checkNmConnection(
  connection: NmConnection,
  what: string,
): void {
  const { name, contents } = connection;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\.nmconnection$/.test(name)) {
    throw usage(
      `${what}: ${
        JSON.stringify(name)
      } is not a keyfile name (letters, digits, . _ -, ending in .nmconnection)`,
    );
  }
  const bytes = new TextEncoder().encode(contents).length;
  if (bytes > MAX_NM_CONNECTION_BYTES) {
    throw usage(
      `${what}: ${name} has ${bytes} bytes, more than ${MAX_NM_CONNECTION_BYTES}`,
    );
  }
  let section = "";
  let hasConnection = false;
  const lines = contents.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    const where = `${what}: ${name} line ${i + 1}`;
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[")) {
      const m = /^\[([^\[\]]+)\]$/.exec(line);
      if (!m) throw usage(`${where} is not a [section] header`);
      section = m[1].trim();
      if (section === "connection") hasConnection = true;
      continue;
    }
    if (!/^[^=\s][^=]*=/.test(line)) {
      throw usage(`${where} is not key=value, a [section] or a comment`);
    }
    if (section === "") throw usage(`${where} comes before any [section]`);
    if ([...raw].some((c) => c < " " && c !== "\t" || c === "\x7f")) {
      throw usage(`${where} has a control character`);
    }
  }
  if (!hasConnection) {
    throw usage(`${what}: ${name} has no [connection] section`);
  }
}

/**
 * Reads the keyfiles of `dir` (every entry must be a `.nmconnection` file),
 * checked, in name order. Throws a usage error naming `what` (the
 * generator's parameter).
 */
export async function readNmConnections(
  dir: string,
  what = "NM_CONNECTIONS",
): Promise<NmConnection[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !entry.name.endsWith(".nmconnection")) {
        throw usage(
          `${what}: ${dir}/${entry.name} is not a .nmconnection file (the directory holds keyfiles only)`,
        );
      }
      names.push(entry.name);
    }
  } catch (err) {
    if (err instanceof BootError) throw err;
    throw usage(`Cannot read ${what} ${dir}: ${(err as Error).message}`);
  }
  if (names.length === 0) {
    throw usage(`${what}: ${dir} holds no .nmconnection file`);
  }
  if (names.length > MAX_NM_CONNECTIONS) {
    throw usage(
      `${what}: ${dir} holds more than ${MAX_NM_CONNECTIONS} keyfiles`,
    );
  }
  const out: NmConnection[] = [];
  for (const name of names.sort()) {
    const path = `${dir}/${name}`;
    const size = (await Deno.stat(path)).size;
    if (size > MAX_NM_CONNECTION_BYTES) {
      throw usage(
        `${what}: ${name} has ${size} bytes, more than ${MAX_NM_CONNECTION_BYTES}`,
      );
    }
    let contents: string;
    try {
      contents = new TextDecoder("utf-8", { fatal: true }).decode(
        await Deno.readFile(path),
      );
    } catch {
      throw usage(`${what}: ${name} is not UTF-8 text`);
    }
    const connection = { name, contents };
    checkNmConnection(connection, what);
    out.push(connection);
  }
  return out;
}

/**
 * A proxy URL as Deno and curl both take it: http or https, a host, an
 * optional port and `user:password@`, no path, query or fragment.
 */
export function checkProxyUrl(value: string, what: string): string {
  checkUrl(value, what, ["http", "https"]);
  const url = new URL(value);
  if (!url.hostname) throw usage(`${what} has no host`);
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    throw usage(
      `${what} must be a proxy's address only (no path, query or fragment)`,
    );
  }
  if (/\s/.test(value)) throw usage(`${what} must not contain whitespace`);
  return value;
}

/** A `NO_PROXY` list: comma-separated hosts, `.domains`, addresses, CIDR ranges or `*`. */
export function checkNoProxy(value: string, what: string): string {
  const entries = value.split(",");
  for (const entry of entries) {
    if (
      !/^(\*|\.?[A-Za-z0-9_-][A-Za-z0-9._-]*(:\d+)?|[0-9A-Fa-f:.]+(\/\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?)$/
        .test(entry)
    ) {
      throw usage(
        `${what} entry ${
          JSON.stringify(entry)
        } is not a host, .domain, address, CIDR range or *`,
      );
    }
  }
  return value;
}

/**
 * The lines of the unit's environment file for `proxy` (empty when none is
 * set), each value checked: `HTTP_PROXY`/`http_proxy`,
 * `HTTPS_PROXY`/`https_proxy`, `NO_PROXY`/`no_proxy`.
 */
export function proxyEnvLines(proxy: UnitProxy, what: {
  http: string;
  https: string;
  no: string;
}): string {
  let out = "";
  const pairs: [
    string,
    string | undefined,
    (v: string, w: string) => string,
    string,
  ][] = [
    ["HTTP_PROXY", proxy.httpProxy, checkProxyUrl, what.http],
    ["HTTPS_PROXY", proxy.httpsProxy, checkProxyUrl, what.https],
    ["NO_PROXY", proxy.noProxy, checkNoProxy, what.no],
  ];
  for (const [key, value, check, name] of pairs) {
    if (value === undefined || value === "") continue;
    check(value, name);
    out += formatEnvLine(key, value, name) +
      formatEnvLine(key.toLowerCase(), value, name);
  }
  return out;
}

/** The keyfiles as files of the target, mode 0600. */
export function nmConnectionFiles(
  connections: NmConnection[],
  what: string,
): { path: string; mode: number; contents: string }[] {
  const seen = new Set<string>();
  return connections.map((c) => {
    checkNmConnection(c, what);
    if (seen.has(c.name)) throw usage(`${what}: ${c.name} is given twice`);
    seen.add(c.name);
    return {
      path: `${NM_CONNECTIONS_DIR}/${c.name}`,
      mode: 0o600,
      contents: c.contents.endsWith("\n") ? c.contents : `${c.contents}\n`,
    };
  });
}
