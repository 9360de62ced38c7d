/**
 * A server that answers byte for byte what a test wrote, over plain TCP or
 * TLS on 127.0.0.1: the malformed or ambiguous HTTP a hostile server sends
 * and `Deno.serve` never would (two `Content-Length`s, trailers, LF-only
 * lines, a status of 999, a body cut before its length). Each connection
 * gets one answer, then is closed.
 *
 * @example
 * ```ts
 * const server = await startRawServer({
 *   answer: () => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
 * });
 * await fetch(`${server.origin}/x`); // 200, "ok"
 * await server.close();
 * ```
 *
 * @module
 */

/** A request as the raw server read it. */
export interface RawRequest {
  /** HTTP method. */
  method: string;
  /** Path and query, as sent. */
  path: string;
  /** Header fields, lower-case names. */
  headers: Record<string, string>;
}

/** What the server writes back: bytes or text (latin1), or chunks written one after the other. */
export type RawAnswer = string | Uint8Array | (string | Uint8Array)[];

/** Options for {@linkcode startRawServer}. */
export interface RawServerOptions {
  /** The answer to a request: written as it is, then the connection is closed. */
  answer: (request: RawRequest) => RawAnswer;
  /** Serve TLS with this certificate and key (PEM). */
  tls?: { cert: string; key: string };
}

/** A running raw server. */
export interface RawServer {
  /** `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`. */
  origin: string;
  /** The port. */
  port: number;
  /** Every request, in order. */
  requests: RawRequest[];
  /** Stops listening and closes the connections. */
  close(): Promise<void>;
}

const latin1 = new TextDecoder("latin1");

function bytesOf(part: string | Uint8Array): Uint8Array {
  if (typeof part !== "string") return part;
  const out = new Uint8Array(part.length);
  for (let i = 0; i < part.length; i++) out[i] = part.charCodeAt(i) & 0xff;
  return out;
}

async function readRequest(conn: Deno.Conn): Promise<RawRequest | undefined> {
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) return undefined;
    text += latin1.decode(buffer.subarray(0, n));
    if (text.length > 64 * 1024) return undefined;
  }
  const [line, ...fields] = text.slice(0, text.indexOf("\r\n\r\n")).split(
    "\r\n",
  );
  const [method, path] = line.split(" ");
  const headers: Record<string, string> = {};
  for (const field of fields) {
    const colon = field.indexOf(":");
    if (colon > 0) {
      headers[field.slice(0, colon).trim().toLowerCase()] = field.slice(
        colon + 1,
      ).trim();
    }
  }
  return { method, path, headers };
}

/** Starts a raw server on 127.0.0.1 (any free port). */
export function startRawServer(options: RawServerOptions): Promise<RawServer> {
  const listener: Deno.Listener = options.tls
    ? Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: options.tls.cert,
      key: options.tls.key,
    })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const requests: RawRequest[] = [];
  const open = new Set<Deno.Conn>();
  const serve = async (conn: Deno.Conn) => {
    open.add(conn);
    try {
      const request = await readRequest(conn);
      if (!request) return;
      requests.push(request);
      const answer = options.answer(request);
      for (const part of Array.isArray(answer) ? answer : [answer]) {
        const bytes = bytesOf(part);
        let done = 0;
        while (done < bytes.length) {
          done += await conn.write(bytes.subarray(done));
        }
      }
    } catch {
      // The client went away.
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      serve(conn);
    }
  })();
  return Promise.resolve({
    origin: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    port,
    requests,
    async close() {
      listener.close();
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await accepting;
    },
  });
}
