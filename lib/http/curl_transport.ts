/**
 * The `--insecure` transport: `https:` requests go through
 * `curl --insecure`, every other one through the plain transport it wraps.
 *
 * Deno cannot skip certificate verification at run time, so curl does it:
 * one process per request, fed its URL, headers and body on stdin (never its
 * command line), answering headers then a body streamed from its stdout
 * (flat memory). curl follows no redirect and speaks https only: the policy
 * of `http.ts` checks every hop as it does for `fetch`. Every connection is
 * logged as a warning.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import type { HttpClient, SendInit } from "./request.ts";
import { log, redact } from "../log.ts";

/** Options for {@linkcode curlTransport}. */
export interface CurlTransportOptions {
  /** The curl program (default `curl` from PATH). */
  curl?: string;
  /** Builds the transport of every request that is not `https:` (plain http, `file:`). */
  plain: () => HttpClient;
}

/**
 * The `--insecure` transport: checks that curl runs (a {@linkcode BootError}
 * Usage otherwise: Deno cannot skip TLS verification by itself), warns once
 * that certificates are not verified, then sends `https:` requests through
 * `curl --insecure` (warning for each) and the others through `plain`.
 */
export function curlTransport(options: CurlTransportOptions): HttpClient {
  const curl = options.curl ?? "curl";
  try {
    new Deno.Command(curl, {
      args: ["--version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
  } catch (err) {
    throw new BootError(
      `--insecure needs curl, and ${curl} cannot be run (Deno cannot skip TLS verification by itself)`,
      ExitCode.Usage,
      { cause: err },
    );
  }
  const plain = options.plain();
  log.warn(
    "--insecure: TLS certificates are NOT verified; anyone on the path can serve you a kernel",
  );
  const close = () => plain.close();
  return {
    insecure: true,
    send: (url: string, init: SendInit) =>
      url.startsWith("https:")
        ? curlFetch(curl, url, init)
        : plain.send(url, init),
    close,
    [Symbol.dispose]: close,
  };
}

/** Quotes a value for a curl config file (`--config`). */
function curlQuote(value: string): string {
  return '"' +
    value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
      .replace(/\r/g, "\\r").replace(/\t/g, "\\t") +
    '"';
}

function bodyText(body: BodyInit | null | undefined): string | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string") return body;
  if (body instanceof URLSearchParams) return body.toString();
  if (body instanceof Uint8Array) return new TextDecoder().decode(body);
  throw new TypeError(
    "this request body type is not supported with --insecure",
  );
}

/** The header fields of a response head (`Name: value` lines). */
function headerFields(fields: string[]): Headers {
  const headers = new Headers();
  for (const field of fields) {
    const i = field.indexOf(":");
    if (i > 0) {
      headers.append(field.slice(0, i).trim(), field.slice(i + 1).trim());
    }
  }
  return headers;
}

/**
 * The `--config` text of one request: URL, method, body and headers (a
 * content type for a body without one, Deno's user agent), each quoted.
 */
function curlConfig(url: string, init: SendInit): string {
  const headers = new Headers(init.headers);
  let config = `url = ${curlQuote(url)}\n`;
  config += init.method === "HEAD"
    ? "head\n"
    : `request = ${curlQuote(init.method)}\n`;
  const payload = bodyText(init.body);
  if (payload !== undefined) {
    if (!headers.has("content-type")) {
      headers.set(
        "content-type",
        init.body instanceof URLSearchParams
          ? "application/x-www-form-urlencoded;charset=UTF-8"
          : "text/plain;charset=UTF-8",
      );
    }
    config += `data-binary = ${curlQuote(payload)}\n`;
  }
  if (!headers.has("user-agent")) headers.set("user-agent", "Deno");
  for (const [name, value] of headers) {
    config += `header = ${curlQuote(`${name}: ${value}`)}\n`;
  }
  return config;
}

const HEADER_LIMIT = 64 * 1024;

/**
 * curl's arguments: no `~/.curlrc`, errors on stderr, no verification, the
 * head before the body (without a proxy's), no globbing, HTTP/1.1, no
 * redirect (the policy follows them), https only, and the request itself
 * read from stdin.
 */
const CURL_ARGS = [
  "--disable",
  "--silent",
  "--show-error",
  "--insecure",
  "--include",
  // Through a proxy (HTTPS_PROXY), not the proxy's "200 Connection established" first.
  "--suppress-connect-headers",
  "--globoff",
  "--http1.1",
  "--max-redirs",
  "0",
  "--proto",
  "=https",
  "--config",
  "-",
];

/** What curl printed before the body. */
interface Head {
  /** The final status (after any 1xx). */
  status: number;
  /** Its header fields. */
  headers: Headers;
  /** Body bytes read along with the head. */
  rest: Uint8Array;
}

/**
 * Reads curl's `--include` output up to the end of the final header block
 * (1xx blocks are skipped). When the output cannot be read, or ends before
 * that, throws what `failed` makes of it (`undefined`: it ended); a
 * malformed or oversized head is an error.
 */
async function readHead(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  failed: (err?: unknown) => Promise<unknown>,
): Promise<Head> {
  let buffered = new Uint8Array(0);
  for (;;) {
    const text = new TextDecoder("latin1").decode(buffered);
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const [line, ...fields] = text.slice(0, end).split("\r\n");
      const m = /^HTTP\/[\d.]+ (\d{3})/.exec(line);
      if (!m) {
        throw new Error(`unexpected answer from curl: ${line.slice(0, 80)}`);
      }
      buffered = buffered.subarray(end + 4);
      if (Number(m[1]) < 200) continue;
      return {
        status: Number(m[1]),
        headers: headerFields(fields),
        rest: buffered,
      };
    }
    if (buffered.length > HEADER_LIMIT) {
      throw new Error("response headers too large");
    }
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (err) {
      throw await failed(err);
    }
    if (chunk.done) throw await failed();
    const next = new Uint8Array(buffered.length + chunk.value.length);
    next.set(buffered);
    next.set(chunk.value, buffered.length);
    buffered = next;
  }
}

/**
 * One HTTPS request through `curl --insecure`, answered as a fetch `Response`
 * whose body streams from curl's stdout. The URL, headers and body go to curl
 * through its `--config -` stdin, never its command line (other users can
 * read command lines).
 */
async function curlFetch(
  curl: string,
  url: string,
  init: SendInit,
): Promise<Response> {
  log.warn(
    `--insecure: not verifying the TLS certificate of ${
      redact(new URL(url).origin)
    }`,
  );
  const config = curlConfig(url, init);
  if (init.signal.aborted) throw init.signal.reason;
  const child = new Deno.Command(curl, {
    args: CURL_ARGS,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
  };
  init.signal.addEventListener("abort", kill, { once: true });
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(config));
  await writer.close();
  const stderr = new Response(child.stderr).text();
  const failure = async () => {
    const status = await child.status;
    const text = (await stderr).trim().split("\n").at(-1) ?? "";
    return new Error(text || `curl exited with code ${status.code}`);
  };

  const reader = child.stdout.getReader();
  const stop = async (err: unknown): Promise<never> => {
    kill();
    await reader.cancel().catch(() => {});
    await child.status;
    await stderr;
    throw err;
  };
  let head: Head;
  try {
    head = await readHead(reader, async (err) => {
      if (init.signal.aborted) return init.signal.reason;
      return err ?? await failure();
    });
  } catch (err) {
    return await stop(err);
  }
  const { status, headers: responseHeaders } = head;

  let first: Uint8Array | undefined = head.rest.length ? head.rest : undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (first) {
        controller.enqueue(first);
        first = undefined;
        return;
      }
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        controller.error(init.signal.aborted ? init.signal.reason : err);
        return;
      }
      if (!chunk.done) return controller.enqueue(chunk.value);
      const { code } = await child.status;
      init.signal.removeEventListener("abort", kill);
      if (code === 0) controller.close();
      else {controller.error(
          init.signal.aborted ? init.signal.reason : await failure(),
        );}
    },
    async cancel() {
      kill();
      await reader.cancel().catch(() => {});
      await child.status;
    },
  }, { highWaterMark: 0 });
  const noBody = init.method === "HEAD" || status === 204 || status === 304;
  if (noBody) await body.cancel();
  return new Response(noBody ? null : body, {
    status,
    headers: responseHeaders,
  });
}
