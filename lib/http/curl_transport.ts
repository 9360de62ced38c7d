/**
 * The `--insecure` transport: `https:` requests go through
 * `curl --insecure`, every other one through the plain transport it wraps.
 *
 * Deno cannot skip certificate verification at run time, so curl does it:
 * one process per request, fed its URL, headers and body on stdin (never its
 * command line), writing the response head to its stderr and the body, and
 * nothing else, to its stdout (streamed: flat memory). The body is checked at
 * its end like fetch checks it (its length against `Content-Length`; a head
 * with conflicting lengths is refused), and against curl's own account of the
 * transfer. curl follows no redirect and speaks https only: the policy of
 * `request.ts` checks every hop as it does for `fetch`. Every connection is
 * logged as a warning.
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import type { HttpClient, SendInit } from "./request.ts";
import { log, redact } from "../log.ts";
import { trustedProgram, UntrustedProgramError } from "../programs.ts";

/** Options for {@linkcode curlTransport}. */
export interface CurlTransportOptions {
  /**
   * The curl program: a name looked up on `PATH`, or an absolute path;
   * either way refused when another user can change it (`programs.ts`).
   * Default `curl`.
   */
  curl?: string;
  /** Builds the transport of every request that is not `https:` (plain http, `file:`). */
  plain: () => HttpClient;
}

/**
 * The `--insecure` transport: finds curl (`programs.ts`) and checks that
 * it runs (a {@linkcode BootError} Usage otherwise, and for a curl another
 * user can change: Deno cannot skip TLS verification by itself), warns once
 * that certificates are not verified, then sends `https:` requests through
 * `curl --insecure`, run by the path that was checked (warning for each),
 * and the others through `plain`.
 */
export function curlTransport(options: CurlTransportOptions): HttpClient {
  const curl = runnableCurl(options.curl ?? "curl");
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

/** The absolute path of a curl that runs and that no other user can change, or a usage error. */
function runnableCurl(name: string): string {
  try {
    const curl = trustedProgram(name);
    if (curl === undefined) throw new Error(`no ${name} on PATH`);
    new Deno.Command(curl, {
      args: ["--version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return curl;
  } catch (err) {
    throw new BootError(
      `--insecure needs curl, and ${
        err instanceof UntrustedProgramError
          ? err.message
          : `${name} cannot be run (Deno cannot skip TLS verification by itself)`
      }`,
      ExitCode.Usage,
      { cause: err },
    );
  }
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

/**
 * The `--config` text of one request: URL, method, body and headers (a
 * content type for a body without one, Deno's user agent), each quoted.
 */
function curlConfig(url: string, init: SendInit): string {
  const headers = new Headers(init.headers);
  let config = `url = ${curlQuote(url)}\n`;
  // A HEAD's head goes to stderr like any other (--dump-header), not stdout.
  config += init.method === "HEAD"
    ? `head\noutput = ${curlQuote("/dev/null")}\n`
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

/** What curl writes to stderr after everything else (`--write-out`): the final status and the body size. */
const WRITE_OUT_MARK = "@@assisted-bootloader-curl";

/**
 * curl's arguments: no `~/.curlrc`, errors on stderr, no verification, the
 * response head written to stderr (`--dump-header`, without a proxy's CONNECT
 * answer) so that stdout carries the body and nothing else (`--include` would
 * put a chunked answer's trailers into it), a last line on stderr with the
 * final status and the body size, no globbing, HTTP/1.1, no redirect (the
 * policy follows them), https only, and the request itself read from stdin.
 */
const CURL_ARGS = [
  "--disable",
  "--silent",
  "--show-error",
  "--insecure",
  // The head on stderr (/proc/self/fd/2: /dev/stderr is a link udev makes,
  // which an initramfs may not have).
  "--dump-header",
  "/proc/self/fd/2",
  // Through a proxy (HTTPS_PROXY), not the proxy's "200 Connection established".
  "--suppress-connect-headers",
  "--write-out",
  `%{stderr}\\n${WRITE_OUT_MARK} %{response_code} %{size_download}\\n`,
  "--globoff",
  "--http1.1",
  "--max-redirs",
  "0",
  "--proto",
  "=https",
  "--config",
  "-",
];

/** What curl wrote to stderr before the body. */
interface Head {
  /** The final status (after any 1xx). */
  status: number;
  /** Its header fields. */
  headers: Headers;
  /** Its `Content-Length`, when it has one. */
  length?: number;
}

/** Reads a stream line by line (LF, a CR before it dropped), keeping what comes after. */
class LineReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer = "";
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** The next line, or undefined at the end of the stream. */
  async line(limit: number): Promise<string | undefined> {
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffer.slice(0, nl).replace(/\r$/, "");
        this.#buffer = this.#buffer.slice(nl + 1);
        return line;
      }
      if (this.#done) {
        const rest = this.#buffer;
        this.#buffer = "";
        return rest === "" ? undefined : rest;
      }
      if (this.#buffer.length > limit) {
        throw new Error("the response head is too large");
      }
      const chunk = await this.#reader.read();
      if (chunk.done) this.#done = true;
      else this.#buffer += new TextDecoder("latin1").decode(chunk.value);
    }
  }

  /** The rest of the stream (at most `limit` characters kept). */
  async rest(limit: number): Promise<string> {
    let text = this.#buffer;
    this.#buffer = "";
    while (!this.#done) {
      const chunk = await this.#reader.read();
      if (chunk.done) this.#done = true;
      else if (text.length < limit) {
        text += new TextDecoder("latin1").decode(chunk.value);
      }
    }
    return text.slice(0, limit);
  }

  /** Stops reading. */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

/**
 * Why a response head's `Content-Length` cannot be trusted, or its value:
 * several that disagree (a truncated body could pass for whole), or one that
 * is not a number.
 */
function contentLengthOf(values: string[]): number | undefined {
  const all = values.flatMap((v) => v.split(",")).map((v) => v.trim());
  if (all.length === 0) return undefined;
  const bad = all.find((v) => !/^\d+$/.test(v));
  if (bad !== undefined) {
    throw new Error(`the answer has an invalid Content-Length (${bad})`);
  }
  if (new Set(all.map(Number)).size > 1) {
    throw new Error(
      `the answer has conflicting Content-Length headers (${all.join(", ")})`,
    );
  }
  return Number(all[0]);
}

/**
 * Reads the final response head curl dumped on stderr (1xx heads are
 * skipped; lines may end in CRLF or LF). When curl failed before a head, or
 * its stderr holds something else, throws what `failed` makes of curl's
 * message; a malformed head is an error.
 */
async function readHead(
  lines: LineReader,
  failed: (message: string) => Promise<unknown>,
): Promise<Head> {
  for (;;) {
    let line = await lines.line(HEADER_LIMIT);
    while (line === "") line = await lines.line(HEADER_LIMIT);
    if (line === undefined) throw await failed("");
    const m = /^HTTP\/\d(?:\.\d)? (\d{3})(?: |$)/.exec(line);
    if (!m) {
      // curl's own message ("curl: (7) Failed to connect…"), then its end.
      throw await failed(line + "\n" + await lines.rest(HEADER_LIMIT));
    }
    const status = Number(m[1]);
    const fields: [string, string][] = [];
    let size = line.length;
    for (;;) {
      const field = await lines.line(HEADER_LIMIT);
      if (field === undefined) throw await failed("");
      if (field === "") break;
      size += field.length;
      if (size > HEADER_LIMIT) {
        throw new Error("the response head is too large");
      }
      if (/^[ \t]/.test(field) && fields.length > 0) {
        // An obsolete folded line continues the field before it.
        fields[fields.length - 1][1] += ` ${field.trim()}`;
        continue;
      }
      const colon = field.indexOf(":");
      if (colon <= 0) {
        throw new Error(
          `the answer has a malformed header line ${
            JSON.stringify(field.slice(0, 80))
          }`,
        );
      }
      fields.push([
        field.slice(0, colon).trim(),
        field.slice(colon + 1).trim(),
      ]);
    }
    if (status < 200) continue;
    if (status > 599) {
      throw new Error(`the answer has an invalid HTTP status ${status}`);
    }
    const headers = new Headers();
    for (const [name, value] of fields) {
      try {
        headers.append(name, value);
      } catch {
        throw new Error(
          `the answer has an invalid header ${
            JSON.stringify(name.slice(0, 80))
          }`,
        );
      }
    }
    const length = contentLengthOf(
      fields.filter(([name]) => name.toLowerCase() === "content-length").map((
        [, value],
      ) => value),
    );
    return { status, headers, length };
  }
}

/** curl's `--write-out` line (the last one of its stderr): the final status and the body size. */
function writeOut(
  tail: string,
): { status: number; size: number } | undefined {
  const line = tail.split("\n").reverse().find((l) =>
    l.startsWith(`${WRITE_OUT_MARK} `)
  );
  const m = line && /^\S+ (\d+) (\d+)\s*$/.exec(line);
  return m ? { status: Number(m[1]), size: Number(m[2]) } : undefined;
}

/** curl's error message in what it wrote to stderr after the head: its last `curl: (N) …` line. */
function curlMessage(text: string): string {
  const lines = text.split("\n").map((l) => l.trim());
  return lines.reverse().find((l) => /^curl: \(\d+\)/.test(l)) ??
    lines.find((l) => l !== "" && !l.startsWith(WRITE_OUT_MARK)) ?? "";
}

/** A running curl, as {@linkcode curlBody} streams the answer's body from it. */
interface RunningCurl {
  child: Deno.ChildProcess;
  /** Its stdout: the body. */
  reader: ReadableStreamDefaultReader<Uint8Array>;
  /** Its stderr, past the head. */
  lines: LineReader;
  head: Head;
  /** What curl writes after the head: trailers, its error, the write-out line. */
  tail: Promise<string>;
  init: SendInit;
  kill: () => void;
  /** The error curl's own words (or its exit code) make. */
  failure: (text: string) => Promise<Error>;
}

/**
 * The body exactly as curl wrote it to stdout, checked at its end against
 * the head's `Content-Length` and against curl's own account of the
 * transfer (status and size): anything else errors the stream.
 */
function curlBody(curl: RunningCurl): ReadableStream<Uint8Array> {
  const { child, reader, lines, head, init, kill, failure } = curl;
  const { status } = head;
  let received = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        controller.error(init.signal.aborted ? init.signal.reason : err);
        return;
      }
      if (!chunk.done) {
        received += chunk.value.length;
        return controller.enqueue(chunk.value);
      }
      const { code } = await child.status;
      const text = await curl.tail;
      init.signal.removeEventListener("abort", kill);
      if (init.signal.aborted) return controller.error(init.signal.reason);
      if (code !== 0) return controller.error(await failure(text));
      const done = writeOut(text);
      const problem = head.length !== undefined && received !== head.length
        ? `the body ended after ${received} of ${head.length} bytes`
        : !done || done.status !== status || done.size !== received
        ? `curl's account of the transfer (${
          done ? `HTTP ${done.status}, ${done.size} bytes` : "none"
        }) is not the answer read (HTTP ${status}, ${received} bytes)`
        : undefined;
      if (problem) controller.error(new Error(problem));
      else controller.close();
    },
    async cancel() {
      kill();
      await reader.cancel().catch(() => {});
      await lines.cancel();
      await child.status;
    },
  }, { highWaterMark: 0 });
}

/**
 * One HTTPS request through `curl --insecure`, answered as a fetch `Response`
 * (its `url` the request's) whose body streams from curl's stdout. The URL,
 * headers and body go to curl through its `--config -` stdin, never its
 * command line (other users can read command lines). The body is exactly
 * what curl wrote to stdout, checked at its end against the head's
 * `Content-Length` and against what curl says it received with which final
 * status: anything else errors the body, so it is never taken as whole.
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
  const lines = new LineReader(child.stderr);
  const reader = child.stdout.getReader();
  const failure = async (text: string) => {
    const status = await child.status;
    const message = curlMessage(text);
    return new Error(message || `curl exited with code ${status.code}`);
  };
  const stop = async (err: unknown): Promise<never> => {
    kill();
    await reader.cancel().catch(() => {});
    await lines.cancel();
    await child.status;
    throw err;
  };
  let head: Head;
  try {
    head = await readHead(lines, async (text) => {
      if (init.signal.aborted) return init.signal.reason;
      await reader.cancel().catch(() => {});
      return await failure(text + await lines.rest(HEADER_LIMIT));
    });
  } catch (err) {
    return await stop(err);
  }
  const { status, headers: responseHeaders } = head;
  // What curl writes after the head: trailers, its error, the write-out line.
  const tail = lines.rest(HEADER_LIMIT);
  const noBody = init.method === "HEAD" || status === 204 || status === 304;

  const body = curlBody({
    child,
    reader,
    lines,
    head,
    tail,
    init,
    kill,
    failure,
  });
  if (noBody) await body.cancel();
  const response = new Response(noBody ? null : body, {
    status,
    headers: responseHeaders,
  });
  // As fetch's: the URL that answered (relative URLs resolve against it).
  Object.defineProperty(response, "url", { value: url });
  return response;
}
