/**
 * A small HTTP proxy for tests, on 127.0.0.1: it forwards plain requests
 * (absolute-form `GET http://host:port/path`) and tunnels `CONNECT
 * host:port`, but only to the targets it was given, each mapped to a port on
 * the host's loopback: it never connects anywhere else (an unknown target
 * gets 403). It records every request line and its headers, and counts the
 * bytes it relayed in each direction, so that a test can tell the proxy was
 * used and what it could read (a bearer token in the clear, or only a TLS
 * tunnel).
 *
 * @example
 * ```ts
 * const proxy = await startProxy({ targets: { "10.0.2.100:80": 8080 } });
 * // HTTP_PROXY=http://127.0.0.1:${proxy.port} … then:
 * console.log(proxy.requests.map((r) => `${r.method} ${r.target}`));
 * await proxy.close();
 * ```
 *
 * @module
 */

/** A request the proxy saw. */
export interface ProxyRequest {
  /** `CONNECT` or the HTTP method. */
  method: string;
  /** The request target as sent: `host:port` for CONNECT, an absolute URL otherwise. */
  target: string;
  /** Request headers, lower-case names. */
  headers: Record<string, string>;
  /** The HTTP status the proxy answered itself (403, 502), or 0 when it relayed. */
  refused: number;
}

/** Options for {@linkcode startProxy}. */
export interface ProxyOptions {
  /** Reachable targets, `host:port` (as the client names them) -> port on 127.0.0.1. */
  targets: Record<string, number>;
  /** Port to listen on (default 0: any free port). */
  port?: number;
}

/** A running proxy. */
export interface TestProxy {
  /** The port it listens on (127.0.0.1). */
  port: number;
  /** Every request, in order. */
  requests: ProxyRequest[];
  /** Every byte relayed through it, both directions, as text (latin1): what the proxy could read. */
  relayed(): string;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

const HEAD_LIMIT = 64 * 1024;
const latin1 = new TextDecoder("latin1");
const enc = new TextEncoder();

/** Reads from `conn` until the end of an HTTP head; returns the head and the bytes after it. */
async function readHead(
  conn: Deno.Conn,
): Promise<{ head: string; rest: Uint8Array } | null> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(16384);
  while (buf.length < HEAD_LIMIT) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
    const end = latin1.decode(buf).indexOf("\r\n\r\n");
    if (end >= 0) {
      return {
        head: latin1.decode(buf.subarray(0, end)),
        rest: buf.subarray(end + 4),
      };
    }
  }
  return null;
}

function headersOf(lines: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) {
      out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
  }
  return out;
}

/** Starts the proxy on 127.0.0.1. */
export function startProxy(options: ProxyOptions): Promise<TestProxy> {
  const listener = Deno.listen({
    hostname: "127.0.0.1",
    port: options.port ?? 0,
  });
  const requests: ProxyRequest[] = [];
  const relayedChunks: string[] = [];
  const conns = new Set<Deno.Conn>();
  const track = (conn: Deno.Conn) => {
    conns.add(conn);
    return conn;
  };
  const closeConn = (conn: Deno.Conn) => {
    conns.delete(conn);
    try {
      conn.close();
    } catch {
      // closed already
    }
  };

  /** Copies `from` to `to` until the end, recording what passed. */
  async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const chunk = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await from.read(chunk);
        if (n === null) break;
        relayedChunks.push(latin1.decode(chunk.subarray(0, n)));
        let off = 0;
        while (off < n) off += await to.write(chunk.subarray(off, n));
      }
    } catch {
      // either side went away
    }
    try {
      await to.closeWrite();
    } catch {
      // closed already
    }
  }

  async function answer(conn: Deno.Conn, status: number, text: string) {
    const body = `${text}\n`;
    await conn.write(enc.encode(
      `HTTP/1.1 ${status} ${text}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    )).catch(() => {});
  }

  async function handle(client: Deno.Conn): Promise<void> {
    const read = await readHead(client).catch(() => null);
    if (!read) return closeConn(client);
    relayedChunks.push(read.head + "\r\n\r\n");
    const [line, ...fields] = read.head.split("\r\n");
    const [method = "", target = ""] = line.split(" ");
    const headers = headersOf(fields);
    const record: ProxyRequest = { method, target, headers, refused: 0 };
    requests.push(record);
    let authority = target;
    let path = "";
    if (method !== "CONNECT") {
      try {
        const url = new URL(target);
        if (url.protocol !== "http:") throw new Error("not http");
        authority = url.port ? url.host : `${url.host}:80`;
        path = url.pathname + url.search;
      } catch {
        record.refused = 400;
        await answer(client, 400, "Bad Request");
        return closeConn(client);
      }
    }
    const port = options.targets[authority];
    if (port === undefined) {
      record.refused = 403;
      await answer(client, 403, "Forbidden");
      return closeConn(client);
    }
    let upstream: Deno.Conn;
    try {
      upstream = track(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch {
      record.refused = 502;
      await answer(client, 502, "Bad Gateway");
      return closeConn(client);
    }
    if (method === "CONNECT") {
      await client.write(
        enc.encode("HTTP/1.1 200 Connection established\r\n\r\n"),
      );
      if (read.rest.length) await upstream.write(read.rest);
    } else {
      // One request per connection: the upstream closes after its answer, and the client is told.
      const kept = fields.filter((f) =>
        !/^(proxy-[a-z-]*|connection|keep-alive)\s*:/i.test(f)
      );
      const head = [
        `${method} ${path} ${line.split(" ")[2] ?? "HTTP/1.1"}`,
        ...kept,
        "connection: close",
      ]
        .join("\r\n") + "\r\n\r\n";
      await upstream.write(enc.encode(head));
      if (read.rest.length) await upstream.write(read.rest);
      const back = await readHead(upstream).catch(() => null);
      if (!back) {
        closeConn(upstream);
        await answer(client, 502, "Bad Gateway");
        return closeConn(client);
      }
      const [status, ...rfields] = back.head.split("\r\n");
      const rkept = rfields.filter((f) =>
        !/^(connection|keep-alive)\s*:/i.test(f)
      );
      const rhead = [status, ...rkept, "connection: close"].join("\r\n") +
        "\r\n\r\n";
      relayedChunks.push(rhead);
      await client.write(enc.encode(rhead));
      if (back.rest.length) await client.write(back.rest);
      // The answer ends when the upstream closes; a request body still coming is relayed meanwhile.
      pump(client, upstream);
      await pump(upstream, client);
      closeConn(upstream);
      return closeConn(client);
    }
    await Promise.all([pump(client, upstream), pump(upstream, client)]);
    closeConn(upstream);
    closeConn(client);
  }

  const accepting = (async () => {
    for await (const conn of listener) {
      handle(track(conn)).catch(() => closeConn(conn));
    }
  })().catch(() => {});

  return Promise.resolve({
    port: (listener.addr as Deno.NetAddr).port,
    requests,
    relayed: () => relayedChunks.join(""),
    close: async () => {
      listener.close();
      for (const conn of [...conns]) closeConn(conn);
      await accepting;
    },
  });
}
