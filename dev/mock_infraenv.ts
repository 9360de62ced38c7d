/**
 * A mock assisted-service + assisted-image-service + Red Hat SSO, faithful to
 * the real services: the same paths, the exact iPXE template, the three auth
 * modes, HEAD/Range/Content-Length on artifacts and the documented error
 * bodies. It binds 127.0.0.1 only.
 *
 * Used by the integration tests, `deno task dev`, `make run-vm` and the VM
 * tests. As a program it prints one JSON line with its URLs and serves until
 * killed:
 *
 * ```sh
 * deno run -A dev/mock_infraenv.ts --kernel build/vm/vmlinuz --initrd marker.img --karg marker=abc
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { FaultLayer } from "./faults.ts";

/** How the mock authenticates requests (assisted-service `AUTH_TYPE`). */
export type AuthMode = "none" | "local" | "rhsso";

/** Bytes served for an artifact: a file path or the bytes themselves. */
export type ArtifactSource = string | Uint8Array;

/** An extra image the boot script registers before `boot` (not in the real template; for tests). */
export interface ExtraInitrd {
  /** File name under `/extra/` on the image service. */
  name: string;
  /** The bytes served. */
  body: ArtifactSource;
  /** When set, the script line is `initrd URL <wrapAs>` so iPXE wraps it in cpio. */
  wrapAs?: string;
}

/**
 * A host in the InfraEnv, as assisted-service's `canServeHostIPXEScript`
 * sees it: the MACs in its stored inventory, its status and stage.
 */
export interface MockHost {
  /** Host id (default: derived from its position). */
  id?: string;
  /** MACs of its interfaces, as its inventory holds them (the agent reports lower case). */
  macs: string[];
  /** Host status (default `known`); `installed` gets the 404. */
  status?: string;
  /** Installation stage with `installing-in-progress` (`Rebooting`, `Done`… get the 404). */
  stage?: string;
}

/** Stages of an `installing-in-progress` host that the service answers 404 for. */
export const LOCAL_BOOT_STAGES = [
  "Done",
  "Configuring",
  "Joined",
  "Rebooting",
  "Waiting for ignition",
];

/** A request as the mock saw it. */
export interface RecordedRequest {
  /** Which server answered. */
  server: "api" | "image";
  /** HTTP method. */
  method: string;
  /** Path and query. */
  path: string;
  /** Request headers, lower-case names. */
  headers: Record<string, string>;
  /** Status sent. */
  status: number;
}

/** Options for {@linkcode startMock}. */
export interface MockOptions {
  /** Auth mode (default `rhsso`, the SaaS). */
  authMode?: AuthMode;
  /** InfraEnv id (a fixed UUID by default). */
  infraEnvId?: string;
  /** Address both servers listen on: the host's IPv4 or IPv6 loopback (default `127.0.0.1`). */
  hostname?: "127.0.0.1" | "::1";
  /** Port of the API server (0: any free port). */
  port?: number;
  /** Port of the image service (0: any; ignored when `sameOrigin`). */
  imagePort?: number;
  /** Serve the image service from the API server's origin (like the SaaS); default false. */
  sameOrigin?: boolean;
  /**
   * Base URL written into rendered URLs for the API (`SERVICE_BASE_URL`);
   * default: the real one. A function gets the API server's port (known once it listens).
   */
  publicBaseUrl?: string | ((port: number) => string);
  /** Base URL written into rendered URLs for the image service; default: the real one, or `publicBaseUrl` when `sameOrigin`. */
  publicImageBaseUrl?: string;
  /** Kernel served at `boot-artifacts/kernel` (default: a small fake bzImage). */
  kernel?: ArtifactSource;
  /** Base initrd of `pxe-initrd` (default: a small gzip'd cpio); the mock appends the ignition cpio. */
  initrd?: ArtifactSource;
  /** Rootfs served at `boot-artifacts/rootfs` (default: a few bytes). */
  rootfs?: ArtifactSource;
  /** OpenShift version in URLs (default 4.18). */
  openshiftVersion?: string;
  /** Architecture in URLs (default x86_64). */
  arch?: string;
  /** InfraEnv `kernel_arguments` (append), each added with one space. */
  extraKargs?: string[];
  /** Extra images registered by the boot script. */
  extraInitrds?: ExtraInitrd[];
  /** MACs of hosts that are installed: a MAC-specific script request gets the 404 "boot from disk". */
  installedMacs?: string[];
  /** The InfraEnv's hosts (added to those of `installedMacs`), looked up by a MAC-specific script request. */
  hosts?: MockHost[];
  /** Make the inventory lookup fail with this database error (the service answers 500). */
  inventoryError?: string;
  /** Serve this exact text as the boot script instead of the template. */
  scriptOverride?: string;
  /** Extra static routes on the API server: path -> bytes or file path. */
  files?: Record<string, ArtifactSource>;
  /** Every request before this time (epoch ms) gets 503. */
  downUntil?: number;
  /** `expires_in` of SSO access tokens, seconds (default 900). */
  accessTokenTtl?: number;
  /** Offline token the SSO accepts (default: a fixed value). */
  refreshToken?: string;
  /** Answer the next N bearer-authenticated API requests with 401, as if the token had expired. */
  rejectBearer?: number;
  /** `Last-Modified` of every artifact (default: 1 January 2025). */
  lastModified?: string;
  /** Send a strong `ETag` with artifacts (default true). */
  etags?: boolean;
  /** Fault layer every request goes through (`dev/faults.ts`). */
  faults?: FaultLayer;
}

/** A running mock. */
export interface MockInfraEnv {
  /** Origin of the API server, e.g. `http://127.0.0.1:41234`. */
  baseUrl: string;
  /** What `--api-url` takes (`<baseUrl>/api`). */
  apiUrl: string;
  /** Origin of the image service. */
  imageBaseUrl: string;
  /** The SSO token endpoint (`--sso-url`). */
  ssoUrl: string;
  /** The InfraEnv id. */
  infraEnvId: string;
  /** The offline token the SSO accepts. */
  refreshToken: string;
  /** A valid access token, for `--token`. */
  accessToken: string;
  /** The hub-style signed script URL (`status.bootArtifacts.ipxeScript`), with `api_key` in local mode. */
  ipxeScriptUrl: string;
  /** Every request seen, in order. */
  requests: RecordedRequest[];
  /** Invalidates every access token issued so far (they "expire"). */
  expireAccessTokens(): void;
  /** Invalidates every image token issued so far (signed URLs "expire"). */
  expireImageTokens(): void;
  /** Changes options while running (faults, scripts, installed MACs). */
  update(options: Partial<MockOptions>): void;
  /** Stops both servers. */
  close(): Promise<void>;
}

const DEFAULT_ID = "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b";
const SSO_PATH = "/auth/realms/redhat-external/protocol/openid-connect/token";
const enc = new TextEncoder();

/**
 * A tiny stand-in bzImage of `size` bytes: the `HdrS` magic at 0x202, boot
 * protocol 2.15, 4 setup sectors, and a `syssize` that makes the header
 * claim the whole file (so that a truncated copy is detectable, like a real
 * kernel's).
 */
export function fakeKernel(size = 4096): Uint8Array {
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  bytes.set([0x4d, 0x5a], 0);
  bytes[0x1f1] = 4;
  view.setUint32(0x1f4, Math.max(0, Math.floor((size - 5 * 512) / 16)), true);
  bytes.set([0x55, 0xaa], 0x1fe);
  bytes.set(enc.encode("HdrS"), 0x202);
  view.setUint16(0x206, 0x20f, true);
  return bytes;
}

/** One newc cpio entry (header + name + data, padded), and a trailer when `trailer`. */
export function newcArchive(
  files: { name: string; data: Uint8Array; mode?: number }[],
): Uint8Array {
  const parts: Uint8Array[] = [];
  const pad4 = (n: number) => (4 - (n % 4)) % 4;
  const entry = (name: string, data: Uint8Array, mode: number, ino: number) => {
    const hex = (n: number) => n.toString(16).padStart(8, "0");
    const header = "070701" + hex(ino) + hex(mode) + hex(0) + hex(0) + hex(1) +
      hex(0) +
      hex(data.length) + hex(0) + hex(0) + hex(0) + hex(0) +
      hex(name.length + 1) + hex(0);
    const head = enc.encode(header + name + "\0");
    parts.push(
      head,
      new Uint8Array(pad4(head.length)),
      data,
      new Uint8Array(pad4(data.length)),
    );
  };
  files.forEach((f, i) => entry(f.name, f.data, f.mode ?? 0o100644, i + 1));
  entry("TRAILER!!!", new Uint8Array(0), 0, 0);
  return concat(parts);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function randomToken(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return prefix + btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, "x");
}

/** The exact boot script assisted-service renders (reference §2), plus optional extra initrds. */
export function renderBootScript(urls: {
  initrd: string;
  kernel: string;
  rootfs: string;
  extraKargs?: string[];
  extraInitrds?: { url: string; wrapAs?: string }[];
}): string {
  const extra = (urls.extraKargs ?? []).map((a) => " " + a).join("");
  const lines = ["#!ipxe", `initrd --name initrd ${urls.initrd}`];
  for (const e of urls.extraInitrds ?? []) {
    lines.push(e.wrapAs ? `initrd ${e.url} ${e.wrapAs}` : `initrd ${e.url}`);
  }
  lines.push(
    `kernel ${urls.kernel} initrd=initrd coreos.live.rootfs_url=${urls.rootfs} random.trust_cpu=on ` +
      `rd.luks.options=discard ignition.firstboot ignition.platform.id=metal console=tty1 ` +
      `console=ttyS1,115200n8 coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"${extra}`,
    "boot",
  );
  return lines.join("\n") + "\n";
}

/** What go-openapi's `format: mac` accepts for a 6-byte MAC (`net.ParseMAC`). */
function isMac(value: string): boolean {
  return /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/.test(
    value,
  ) ||
    /^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$/.test(value);
}

function jsonResponse(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** assisted-service `GenerateError` shape (`code` is a string). */
function serviceError(status: number, reason: string): Response {
  return jsonResponse(status, {
    code: String(status),
    href: "",
    id: status,
    kind: "Error",
    reason,
  });
}

/** go-openapi / infra error shape (`code` is a number). */
function authError(status: number, message: string): Response {
  return jsonResponse(status, { code: status, message });
}

async function artifactBytes(
  source: ArtifactSource,
): Promise<Uint8Array | { path: string; size: number }> {
  if (typeof source !== "string") return source;
  return { path: source, size: (await Deno.stat(source)).size };
}

const etagCache = new WeakMap<Uint8Array, string>();

/** A strong ETag: from the bytes (computed once per array), or from a file's size and mtime (like nginx). */
async function etagOf(
  source: Uint8Array | { path: string; size: number },
): Promise<string> {
  if (source instanceof Uint8Array) {
    let tag = etagCache.get(source);
    if (!tag) {
      const digest = await crypto.subtle.digest(
        "SHA-256",
        source as Uint8Array<ArrayBuffer>,
      );
      tag = `"${
        Array.from(new Uint8Array(digest).subarray(0, 8), (b) =>
          b.toString(16).padStart(2, "0")).join("")
      }"`;
      etagCache.set(source, tag);
    }
    return tag;
  }
  const { mtime } = await Deno.stat(source.path);
  return `"${(mtime?.getTime() ?? 0).toString(16)}-${
    source.size.toString(16)
  }"`;
}

/**
 * Serves bytes or a file with HEAD, single `Range` (honouring `If-Range`: a
 * validator that is not the current `ETag` or `Last-Modified` gets the whole
 * file), `Content-Length`, `Accept-Ranges`, `Last-Modified` and `ETag`.
 */
async function serveArtifact(
  req: Request,
  source: Uint8Array | { path: string; size: number },
  lastModified: string,
  withEtag = true,
): Promise<Response> {
  const size = source instanceof Uint8Array ? source.length : source.size;
  const etag = withEtag ? await etagOf(source) : undefined;
  const headers: Record<string, string> = {
    "accept-ranges": "bytes",
    "content-type": "application/octet-stream",
    "last-modified": lastModified,
    ...(etag ? { etag } : {}),
  };
  let start = 0;
  let end = size - 1;
  let status = 200;
  const ifRange = req.headers.get("if-range");
  const range = ifRange === null || ifRange === etag || ifRange === lastModified
    ? req.headers.get("range")
    : null;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === "" && m[2] === "")) {
      return new Response("invalid range", {
        status: 416,
        headers: { "content-range": `bytes */${size}` },
      });
    }
    if (m[1] === "") {
      start = Math.max(0, size - Number(m[2]));
    } else {
      start = Number(m[1]);
      if (m[2] !== "") end = Math.min(end, Number(m[2]));
    }
    if (start >= size || start > end) {
      return new Response("invalid range", {
        status: 416,
        headers: { "content-range": `bytes */${size}` },
      });
    }
    status = 206;
    headers["content-range"] = `bytes ${start}-${end}/${size}`;
  }
  headers["content-length"] = String(end - start + 1);
  if (req.method === "HEAD") return new Response(null, { status, headers });
  if (source instanceof Uint8Array) {
    return new Response(source.slice(start, end + 1), { status, headers });
  }
  const file = await Deno.open(source.path);
  await file.seek(start, Deno.SeekMode.Start);
  let left = end - start + 1;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left <= 0) {
        file.close();
        controller.close();
        return;
      }
      const buf = new Uint8Array(Math.min(left, 256 * 1024));
      const n = await file.read(buf);
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(buf.subarray(0, n));
    },
    cancel() {
      file.close();
    },
  }, { highWaterMark: 0 });
  return new Response(body, { status, headers });
}

/** Starts the mock on 127.0.0.1 (or `::1`, see {@linkcode MockOptions.hostname}). */
export async function startMock(
  options: MockOptions = {},
): Promise<MockInfraEnv> {
  let opts: MockOptions = { ...options };
  const id = opts.infraEnvId ?? DEFAULT_ID;
  const refreshToken = opts.refreshToken ?? "offline-refresh-token-0123456789";
  const accessTokens = new Map<string, number>();
  const imageTokens = new Set<string>();
  const requests: RecordedRequest[] = [];
  const apiKey = "eyJhbGciOiJFUzI1NiJ9.local-api-key." + id.slice(0, 8);
  const lastModified = () =>
    opts.lastModified ?? new Date(Date.UTC(2025, 0, 1)).toUTCString();
  const issueAccess = () => {
    const token = randomToken("access-");
    accessTokens.set(token, Date.now() + (opts.accessTokenTtl ?? 900) * 1000);
    return token;
  };
  const accessToken = issueAccess();

  // One array each, so that their ETags are computed once.
  const defaultKernel = fakeKernel();
  const defaultRootfs = enc.encode("rootfs");
  const servers: Deno.HttpServer[] = [];
  const listen = (
    port: number,
    handler: (req: Request) => Promise<Response>,
    server: "api" | "image",
  ) => {
    const { promise, resolve } = Promise.withResolvers<number>();
    const s = Deno.serve({
      hostname: opts.hostname ?? "127.0.0.1",
      port,
      onListen: ({ port }) => resolve(port),
    }, async (req) => {
      const url = new URL(req.url);
      let res: Response;
      if (opts.downUntil && Date.now() < opts.downUntil) {
        res = new Response("service unavailable", { status: 503 });
      } else {
        try {
          res = opts.faults
            ? await opts.faults.handle(req, server, handler)
            : await handler(req);
        } catch (err) {
          res = serviceError(500, String(err));
        }
      }
      requests.push({
        server,
        method: req.method,
        path: url.pathname + url.search,
        headers: Object.fromEntries(req.headers),
        status: res.status,
      });
      return res;
    });
    servers.push(s);
    return promise;
  };

  // URL builders use the public bases, set once the ports are known.
  let apiPublic = "";
  let imagePublic = "";
  const version = () => opts.openshiftVersion ?? "4.18";
  const arch = () => opts.arch ?? "x86_64";
  const signImage = (url: URL) => {
    const mode = opts.authMode ?? "rhsso";
    if (mode === "local") url.searchParams.set("api_key", apiKey);
    if (mode === "rhsso") {
      const token = randomToken("imgtok-");
      imageTokens.add(token);
      url.searchParams.set("image_token", token);
    }
    url.searchParams.sort();
    return url.href;
  };
  const artifactUrl = (kind: string) => {
    const u = new URL(
      `${imagePublic}/api/assisted-images/boot-artifacts/${kind}`,
    );
    u.searchParams.set("arch", arch());
    u.searchParams.set("version", version());
    u.searchParams.sort();
    return u.href;
  };
  const scriptPath =
    `/api/assisted-install/v2/infra-envs/${id}/downloads/files`;

  const bootScript = () => {
    if (opts.scriptOverride !== undefined) return opts.scriptOverride;
    const initrd = new URL(
      `${imagePublic}/api/assisted-images/images/${id}/pxe-initrd`,
    );
    initrd.searchParams.set("arch", arch());
    initrd.searchParams.set("version", version());
    return renderBootScript({
      initrd: signImage(initrd),
      kernel: artifactUrl("kernel"),
      rootfs: artifactUrl("rootfs"),
      extraKargs: opts.extraKargs,
      extraInitrds: (opts.extraInitrds ?? []).map((e) => ({
        url: `${imagePublic}/api/assisted-images/extra/${e.name}`,
        wrapAs: e.wrapAs,
      })),
    });
  };

  const userAuthorized = (req: Request, url: URL): Response | undefined => {
    const mode = opts.authMode ?? "rhsso";
    if (mode === "none") return undefined;
    if (mode === "local") {
      if (url.searchParams.get("api_key") === apiKey) return undefined;
      return authError(401, "unauthenticated for invalid credentials");
    }
    const imageToken = url.searchParams.get("image_token");
    if (imageToken !== null) {
      return imageTokens.has(imageToken)
        ? undefined
        : authError(401, "unauthenticated for invalid credentials");
    }
    const header = req.headers.get("authorization");
    if (!header) {
      return authError(401, "unauthenticated for invalid credentials");
    }
    const parts = header.split(" ");
    if (parts.length !== 2 || parts[0] !== "Bearer") {
      return authError(
        401,
        "Authorization header format must be Bearer {token}",
      );
    }
    if ((opts.rejectBearer ?? 0) > 0) {
      opts.rejectBearer!--;
      return authError(401, "unauthenticated for invalid credentials");
    }
    const expiry = accessTokens.get(parts[1]);
    if (expiry === undefined || expiry < Date.now()) {
      return authError(401, "unauthenticated for invalid credentials");
    }
    return undefined;
  };

  /** The hosts of the InfraEnv, each with its inventory as stored (JSON text). */
  const inventory = () =>
    [
      ...(opts.installedMacs ?? []).map((m): MockHost => ({
        macs: [m],
        status: "installed",
      })),
      ...opts.hosts ?? [],
    ].map((h, i) => ({
      id: h.id ??
        `0d4c4c4c-0000-4000-8000-${(i + 1).toString(16).padStart(12, "0")}`,
      status: h.status ?? "known",
      stage: h.stage,
      inventory: JSON.stringify({
        interfaces: h.macs.map((m) => ({ mac_address: m })),
      }),
    }));

  /** assisted-service `canServeHostIPXEScript`: undefined when the boot script may be served. */
  const canServeHost = (mac: string): Response | undefined => {
    if (opts.inventoryError !== undefined) {
      return serviceError(
        500,
        `IPXE booting skipped. InfraEnv ${id}: Host with mac ${mac}: ${opts.inventoryError}`,
      );
    }
    // `inventory like %MAC%`, upper or lower case: a substring match.
    const hosts = inventory().filter((h) =>
      h.inventory.includes(mac.toUpperCase()) ||
      h.inventory.includes(mac.toLowerCase())
    );
    if (hosts.length === 0) return undefined;
    if (hosts.length > 1) {
      return serviceError(
        500,
        `IPXE booting skipped. Unexpected number of hosts ${hosts.length} with mac ${mac}`,
      );
    }
    const h = hosts[0];
    if (h.status === "installed") {
      return serviceError(
        404,
        `IPXE booting skipped. InfraEnv ${id}: host ${h.id} having mac ${mac} is already installed`,
      );
    }
    if (
      h.status === "installing-in-progress" && h.stage !== undefined &&
      LOCAL_BOOT_STAGES.includes(h.stage)
    ) {
      return serviceError(
        404,
        `IPXE booting skipped. InfraEnv ${id}: host ${h.id} having mac ${mac} is in stage ${h.stage}`,
      );
    }
    return undefined;
  };

  const api = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === SSO_PATH) return await sso(req);
    const file = opts.files?.[url.pathname];
    if (file !== undefined) {
      return await serveArtifact(
        req,
        await artifactBytes(file),
        lastModified(),
        opts.etags,
      );
    }
    if (opts.sameOrigin && url.pathname.startsWith("/api/assisted-images/")) {
      return await image(req);
    }
    const infraEnvs = "/api/assisted-install/v2/infra-envs/";
    if (!url.pathname.startsWith(infraEnvs)) {
      return serviceError(404, "Not found");
    }
    if (!url.pathname.startsWith(infraEnvs + id + "/")) {
      const denied = userAuthorized(req, url);
      return denied ?? serviceError(404, "Object Not Found");
    }
    if (url.pathname !== scriptPath) return serviceError(404, "Not found");
    if (req.method !== "GET") return serviceError(405, "Method not allowed");
    const denied = userAuthorized(req, url);
    if (denied) return denied;
    const fileName = url.searchParams.get("file_name");
    if (!fileName) {
      return authError(400, "query parameter file_name is required");
    }
    if (
      !["discovery.ign", "ipxe-script", "static-network-config"].includes(
        fileName,
      )
    ) {
      return authError(
        400,
        `file_name in query should be one of [discovery.ign ipxe-script static-network-config]`,
      );
    }
    const scriptType = url.searchParams.get("ipxe_script_type");
    if (scriptType && fileName !== "ipxe-script") {
      return serviceError(
        400,
        "ipxe_script_type is only valid for the ipxe-script file",
      );
    }
    if (
      scriptType &&
      !["discovery-image-always", "boot-order-control"].includes(scriptType)
    ) {
      return authError(
        400,
        "ipxe_script_type in query should be one of [discovery-image-always boot-order-control]",
      );
    }
    if (fileName !== "ipxe-script") {
      return serviceError(400, "only ipxe-script is served by this mock");
    }
    const mac = url.searchParams.get("mac");
    let body: string;
    if (mac) {
      // go-openapi's `format: mac` check, a 422 that the service turns into 400.
      if (!isMac(mac)) {
        return jsonResponse(400, {
          code: 602,
          message: `mac in query must be of type mac: "${mac}"`,
        });
      }
      const refused = canServeHost(mac);
      if (refused) return refused;
      body = bootScript();
    } else if (scriptType === "boot-order-control") {
      const chained = new URL(`${apiPublic}${scriptPath}`);
      chained.searchParams.set("file_name", "ipxe-script");
      body = `#!ipxe\nchain ${signImage(chained)}&mac=\${net0/mac}\n`;
    } else {
      body = bootScript();
    }
    return new Response(body, {
      headers: {
        "content-type": "application/octet-stream",
        "content-disposition": `attachment; filename="${id}-ipxe-script"`,
        "last-modified": lastModified(),
      },
    });
  };

  const sso = async (req: Request): Promise<Response> => {
    if (req.method !== "POST") {
      return jsonResponse(405, { error: "method_not_allowed" });
    }
    const form = new URLSearchParams(await req.text());
    if (
      form.get("grant_type") !== "refresh_token" ||
      form.get("client_id") !== "cloud-services"
    ) {
      return jsonResponse(400, {
        error: "invalid_request",
        error_description: "Invalid grant or client",
      });
    }
    if (form.get("refresh_token") !== refreshToken) {
      return jsonResponse(400, {
        error: "invalid_grant",
        error_description: "Invalid refresh token",
      });
    }
    const ttl = opts.accessTokenTtl ?? 900;
    return jsonResponse(200, {
      access_token: issueAccess(),
      expires_in: ttl,
      refresh_expires_in: 0,
      refresh_token: refreshToken,
      token_type: "Bearer",
      "not-before-policy": 0,
      scope: "openid offline_access",
    });
  };

  const image = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname.replace(/^\/api\/assisted-images/, "");
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405 });
    }
    const extra = /^\/extra\/([^/]+)$/.exec(path);
    if (extra) {
      const e = (opts.extraInitrds ?? []).find((x) => x.name === extra[1]);
      if (!e) return new Response("not found\n", { status: 404 });
      return await serveArtifact(
        req,
        await artifactBytes(e.body),
        lastModified(),
        opts.etags,
      );
    }
    const needVersion = () => {
      if (!url.searchParams.get("version")) {
        return new Response("'version' parameter required for this request\n", {
          status: 400,
        });
      }
      const a = url.searchParams.get("arch") ?? "x86_64";
      if (url.searchParams.get("version") !== version() || a !== arch()) {
        return new Response(
          `version for ${url.searchParams.get("version")} ${a}, not found\n`,
          { status: 400 },
        );
      }
      return undefined;
    };
    const boot = /^\/boot-artifacts\/([^/]+)$/.exec(path);
    if (boot) {
      const bad = needVersion();
      if (bad) return bad;
      if (boot[1] === "kernel") {
        return await serveArtifact(
          req,
          await artifactBytes(opts.kernel ?? defaultKernel),
          lastModified(),
          opts.etags,
        );
      }
      if (boot[1] === "rootfs") {
        return await serveArtifact(
          req,
          await artifactBytes(opts.rootfs ?? defaultRootfs),
          lastModified(),
          opts.etags,
        );
      }
      return new Response("not found\n", { status: 404 });
    }
    const initrd = /^\/images\/([^/]+)\/pxe-initrd$/.exec(path);
    if (initrd) {
      const bad = needVersion();
      if (bad) return bad;
      if (initrd[1] !== id) {
        return new Response("error retrieving ignition content: 404\n", {
          status: 404,
        });
      }
      const mode = opts.authMode ?? "rhsso";
      const token = url.searchParams.get("image_token");
      const key = url.searchParams.get("api_key");
      const ok = mode === "none" || (mode === "local" && key === apiKey) ||
        (mode === "rhsso" && token !== null && imageTokens.has(token));
      if (!ok) {
        const status = 401;
        return new Response(
          `error retrieving ignition content: ignition request to ${apiPublic}${scriptPath}?file_name=discovery.ign returned status ${status}\n`,
          { status },
        );
      }
      // Like the real service: a freshly minted agent token in every answer.
      const ignition = JSON.stringify({
        ignition: { version: "3.1.0" },
        agentToken: randomToken("agent-"),
      });
      const appended = await gzip(
        newcArchive([{ name: "config.ign", data: enc.encode(ignition) }]),
      );
      const base = await artifactBytes(
        opts.initrd ??
          await gzip(newcArchive([{ name: "init", data: enc.encode("base") }])),
      );
      const baseBytes = base instanceof Uint8Array
        ? base
        : await Deno.readFile(base.path);
      return await serveArtifact(
        req,
        concat([baseBytes, appended]),
        lastModified(),
        opts.etags,
      );
    }
    return new Response("not found\n", { status: 404 });
  };

  const apiPort = await listen(opts.port ?? 0, api, "api");
  const host = opts.hostname === "::1" ? "[::1]" : "127.0.0.1";
  const baseUrl = `http://${host}:${apiPort}`;
  let imageBaseUrl = baseUrl;
  if (!opts.sameOrigin) {
    const imagePort = await listen(opts.imagePort ?? 0, image, "image");
    imageBaseUrl = `http://${host}:${imagePort}`;
  }
  const publicBase = opts.publicBaseUrl;
  apiPublic = typeof publicBase === "function"
    ? publicBase(apiPort)
    : publicBase ?? baseUrl;
  imagePublic = opts.publicImageBaseUrl ??
    (opts.sameOrigin ? apiPublic : imageBaseUrl);
  const hub = new URL(`${apiPublic}${scriptPath}`);
  hub.searchParams.set("file_name", "ipxe-script");
  if ((opts.authMode ?? "rhsso") === "local") {
    hub.searchParams.set("api_key", apiKey);
  }
  hub.searchParams.sort();

  return {
    baseUrl,
    apiUrl: `${baseUrl}/api`,
    imageBaseUrl,
    ssoUrl: `${baseUrl}${SSO_PATH}`,
    infraEnvId: id,
    refreshToken,
    accessToken,
    ipxeScriptUrl: hub.href,
    requests,
    expireAccessTokens: () => accessTokens.clear(),
    expireImageTokens: () => imageTokens.clear(),
    update: (changes) => {
      opts = { ...opts, ...changes };
    },
    close: async () => {
      for (const s of servers) await s.shutdown();
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "0" },
      "image-port": { type: "string", default: "0" },
      "same-origin": { type: "boolean", default: false },
      "public-base-url": { type: "string" },
      "auth-mode": { type: "string", default: "none" },
      arch: { type: "string", default: "x86_64" },
      kernel: { type: "string" },
      initrd: { type: "string" },
      karg: { type: "string", multiple: true, default: [] },
      "extra-initrd": { type: "string", multiple: true, default: [] },
      file: { type: "string", multiple: true, default: [] },
      "installed-mac": { type: "string", multiple: true, default: [] },
      host: { type: "string", multiple: true, default: [] },
      "down-for": { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: mock_infraenv.ts [--port N] [--same-origin] [--public-base-url URL] [--auth-mode none|local|rhsso]\n" +
        "  [--arch x86_64|arm64] [--kernel PATH] [--initrd PATH] [--karg ARG]... [--extra-initrd PATH[:/wrap/path]]...\n" +
        "  [--file /url/path=PATH]... [--installed-mac MAC]... [--host STATUS[/STAGE]=MAC[,MAC]...]...\n" +
        "  [--down-for SECONDS]",
    );
    return;
  }
  const mode = values["auth-mode"] as AuthMode;
  if (!["none", "local", "rhsso"].includes(mode)) {
    throw new Error(`unknown auth mode ${mode}`);
  }
  const files: Record<string, string> = {};
  for (const f of values.file) {
    const at = f.indexOf("=");
    files[f.slice(0, at)] = f.slice(at + 1);
  }
  const mock = await startMock({
    port: Number(values.port),
    imagePort: Number(values["image-port"]),
    sameOrigin: values["same-origin"],
    publicBaseUrl: values["public-base-url"],
    authMode: mode,
    arch: values.arch,
    kernel: values.kernel,
    initrd: values.initrd,
    extraKargs: values.karg,
    extraInitrds: values["extra-initrd"].map((spec) => {
      const [path, wrapAs] = spec.split(":");
      return { name: path.split("/").pop()!, body: path, wrapAs };
    }),
    files,
    installedMacs: values["installed-mac"],
    hosts: values.host.map((spec): MockHost => {
      const eq = spec.indexOf("=");
      if (eq <= 0) {
        throw new Error(
          `--host takes STATUS[/STAGE]=MAC[,MAC]..., got ${spec}`,
        );
      }
      const [status, stage] = spec.slice(0, eq).split("/");
      return { status, stage, macs: spec.slice(eq + 1).split(",") };
    }),
    downUntil: values["down-for"]
      ? Date.now() + Number(values["down-for"]) * 1000
      : undefined,
  });
  const { requests: _r, ...shown } = mock;
  console.log(
    JSON.stringify(Object.fromEntries(
      Object.entries(shown).filter(([, v]) => typeof v === "string"),
    )),
  );
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => mock.close().then(() => Deno.exit(0)));
  }
}

if (import.meta.main) {
  main().catch((err) => {
    console.error(`mock_infraenv: ${err instanceof Error ? err.message : err}`);
    Deno.exit(2);
  });
}
