/**
 * HTTP policy shared by the InfraEnv client and the artifact downloader:
 * manual redirects with a cap, each hop checked (http or https only, never
 * from https down to http unless the client is `--insecure`, never a request
 * body sent again), an `Authorization` header that never leaves the URLs it
 * was meant for, per-request timeouts, and retries with exponential backoff
 * and jitter.
 *
 * @module
 */

import {
  splitPem,
  systemCertificates,
  usableCertificates,
} from "./ca_store.ts";
import { BootError, ExitCode } from "./errors.ts";
import { log, redact } from "./log.ts";

/** A non-success HTTP answer. */
export class HttpStatusError extends Error {
  /** HTTP status code. */
  readonly status: number;
  /** The URL that answered (after redirects). */
  readonly url: string;
  /** Start of the response body, for error messages. */
  readonly body: string;
  /** Delay the server asked for with `Retry-After`, in milliseconds. */
  readonly retryAfterMs?: number;

  /** Creates the error from the parts of a response. */
  constructor(status: number, url: string, body = "", retryAfterMs?: number) {
    super(`HTTP ${status} from ${redact(url)}`);
    this.name = "HttpStatusError";
    this.status = status;
    this.url = url;
    this.body = body;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * No usable answer: the connection failed, timed out or was cut (worth a
 * retry), or, as a {@linkcode PolicyError}, the request policy refused to go
 * on (never retried).
 */
export class NetworkError extends Error {
  /** The URL being fetched. */
  readonly url: string;

  /** Creates the error; `cause` is the runtime's error. */
  constructor(message: string, url: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NetworkError";
    this.url = url;
  }
}

/**
 * The request policy refused to go on: an URL that does not parse or whose
 * scheme is not fetched, or a redirect to a scheme other than http or https,
 * from https down to http, with a malformed `Location`, or one that would send
 * the request body again. Never retried: the same answer would come back.
 */
export class PolicyError extends NetworkError {
  /** Creates the error; the message starts with the (redacted) URL. */
  constructor(message: string, url: string, options?: ErrorOptions) {
    super(message, url, options);
    this.name = "PolicyError";
  }
}

/** Options for {@linkcode request}. */
export interface RequestOptions {
  /** HTTP method (default GET). */
  method?: string;
  /** Request headers; never put credentials here, use `authorization`. */
  headers?: Record<string, string>;
  /** Request body (for POST). */
  body?: BodyInit;
  /** Value of the `Authorization` header, sent only to URLs in `authorizationScope`. */
  authorization?: string;
  /**
   * Which URLs get `authorization`, checked on every hop (default: those on
   * the origin of the first URL).
   */
  authorizationScope?: (url: URL) => boolean;
  /**
   * `follow` (default): follow redirects under the policy; `manual`: return
   * the first answer, a redirect included, to the caller.
   */
  redirect?: "follow" | "manual";
  /** Milliseconds until the response headers must have arrived (default 30 s). */
  timeoutMs?: number;
  /**
   * What `timeoutMs` covers: `total` (default) also bounds reading the body;
   * `headers` stops counting once the headers are in (large downloads that
   * watch their body themselves).
   */
  timeoutScope?: "total" | "headers";
  /** Aborts the request (and the body read). */
  signal?: AbortSignal;
  /** Client carrying extra CA certificates. */
  client?: Deno.HttpClient;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Redirects followed before giving up. */
const MAX_REDIRECTS = 5;

/** Schemes a request may start with; a redirect may only lead to http or https. */
const REQUEST_SCHEMES = new Set(["http:", "https:", "file:"]);

/**
 * Fetches `url` following redirects by hand so the policy is explicit: at most
 * 5 hops, each one to http or https only, never from https to
 * http unless the client is `--insecure`, a 307/308 never sends the request
 * body again, and the `Authorization` header goes only to URLs in
 * `authorizationScope`. Returns the final response whatever its status; the
 * caller decides what a status means. A refused hop throws a
 * {@linkcode PolicyError}, a failed connection a {@linkcode NetworkError}.
 */
export async function request(
  url: string,
  options: RequestOptions = {},
): Promise<Response> {
  const maxRedirects = MAX_REDIRECTS;
  let first: URL;
  try {
    first = new URL(url);
  } catch (err) {
    throw new PolicyError(`${redact(url)}: not a valid URL`, url, {
      cause: err,
    });
  }
  if (!REQUEST_SCHEMES.has(first.protocol)) {
    throw new PolicyError(
      `${redact(url)}: the scheme "${
        first.protocol.slice(0, -1)
      }" is not fetched (http, https or file only)`,
      url,
    );
  }
  const authOrigin = first.origin;
  const inScope = options.authorizationScope ??
    ((u: URL) => u.origin === authOrigin);
  const insecureClient = isInsecureClient(options.client);
  let current = url;
  let method = options.method ?? "GET";
  let body = options.body;
  for (let hop = 0;; hop++) {
    const headers = new Headers(options.headers);
    if (options.authorization && inScope(new URL(current))) {
      headers.set("Authorization", options.authorization);
    }
    // A fetch signal also aborts the body. "total": one unref'd timeout for
    // the whole exchange. "headers": a timer cleared once the headers are
    // in, so a long body is not cut (the caller watches it).
    const ms = options.timeoutMs ?? 30_000;
    const headersOnly = options.timeoutScope === "headers";
    const timeout = headersOnly
      ? new AbortController()
      : { signal: AbortSignal.timeout(ms) };
    const timer = headersOnly
      ? setTimeout(() => (timeout as AbortController).abort(), ms)
      : undefined;
    const signal = options.signal
      ? AbortSignal.any([options.signal, timeout.signal])
      : timeout.signal;
    const insecure = insecureClient && current.startsWith("https:");
    let response: Response;
    try {
      const init = {
        method,
        headers,
        body,
        redirect: "manual" as const,
        signal,
        client: options.client,
      };
      response = insecure
        ? await insecureFetch(current, init)
        : await fetch(current, init);
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const why = timeout.signal.aborted
        ? `no answer within ${(options.timeoutMs ?? 30_000) / 1000} s`
        : errorText(err);
      throw new NetworkError(`${redact(current)}: ${why}`, current, {
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
    log.debug(`${method} ${redact(current)}: HTTP ${response.status}`);
    if (!REDIRECTS.has(response.status) || options.redirect === "manual") {
      return response;
    }
    await response.body?.cancel();
    const location = response.headers.get("location");
    if (!location) {
      throw new HttpStatusError(
        response.status,
        current,
        "redirect without Location",
      );
    }
    if (hop >= maxRedirects) {
      throw new NetworkError(
        `${redact(url)}: more than ${maxRedirects} redirects`,
        url,
      );
    }
    const next = redirectTarget(current, location, {
      status: response.status,
      insecure: insecureClient,
      resendsBody: body !== undefined && body !== null &&
        (response.status === 307 || response.status === 308),
    });
    current = next.href;
    log.debug(`redirected to ${redact(current)}`);
    if (
      response.status === 303 || (response.status <= 302 && method === "POST")
    ) {
      method = "GET";
      body = undefined;
    }
  }
}

/** Options for {@linkcode redirectTarget}. */
export interface RedirectOptions {
  /** Status of the redirect (for messages; default 302). */
  status?: number;
  /** The client is `--insecure`: https → http is allowed. */
  insecure?: boolean;
  /** Following would send the request body again (a 307/308 to a POST). */
  resendsBody?: boolean;
}

/**
 * Checks one redirect hop from `from` to `location`: the `Location` parses,
 * leads to http or https, not from https down to http (unless `insecure`),
 * and does not send a request body again (`resendsBody`). Throws a
 * {@linkcode PolicyError} naming the hop; returns the target.
 *
 * @example
 * ```ts
 * redirectTarget("http://h/a", "/b").href; // "http://h/b"
 * redirectTarget("http://h/a", "file:///etc/passwd"); // throws PolicyError
 * ```
 */
export function redirectTarget(
  from: string,
  location: string,
  options: RedirectOptions = {},
): URL {
  const where = `${redact(from)}: HTTP ${options.status ?? 302}`;
  let next: URL;
  try {
    next = new URL(location, from);
  } catch (err) {
    throw new PolicyError(
      `${where} with a malformed Location ${
        JSON.stringify(redact(location.slice(0, 200)))
      }`,
      from,
      { cause: err },
    );
  }
  const to = redact(next.href).slice(0, 200);
  if (next.protocol !== "http:" && next.protocol !== "https:") {
    throw new PolicyError(
      `${where} redirects to ${to}, refused (redirects lead to http or https only)`,
      from,
    );
  }
  if (
    new URL(from).protocol === "https:" && next.protocol === "http:" &&
    !options.insecure
  ) {
    throw new PolicyError(
      `${where} redirects from https to plain http (${to}), refused (--insecure allows it)`,
      from,
    );
  }
  if (options.resendsBody) {
    throw new PolicyError(
      `${where} would send the request body again to ${to}, not followed`,
      from,
    );
  }
  return next;
}

/**
 * True when `value` can be sent as a token in an HTTP header: printable ASCII
 * without spaces (what JWTs, OAuth tokens and API keys are made of).
 */
export function isHeaderToken(value: string): boolean {
  return /^[\x21-\x7e]+$/.test(value);
}

/** Reads at most `limit` bytes of a stream, then cancels the rest; read errors are thrown. */
export async function readAtMost(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(Math.min(size, limit));
  let at = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, out.length - at);
    out.set(part, at);
    at += part.length;
    if (at === out.length) break;
  }
  return out;
}

/** Reads at most `limit` bytes of an error body as text, for messages ("" when unreadable). */
export async function readErrorBody(
  response: Response,
  limit = 4096,
): Promise<string> {
  try {
    return new TextDecoder().decode(await readAtMost(response.body, limit));
  } catch {
    return "";
  }
}

/** Parses `Retry-After` (seconds or an HTTP date) into milliseconds. */
export function parseRetryAfter(
  value: string | null,
  now = Date.now(),
): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Builds an {@linkcode HttpStatusError} from a response, consuming a little of its body. */
export async function statusError(
  response: Response,
  url: string,
): Promise<HttpStatusError> {
  const body = await readErrorBody(response);
  return new HttpStatusError(
    response.status,
    url,
    body,
    parseRetryAfter(response.headers.get("retry-after")),
  );
}

/** True for failures a retry may cure: network errors, timeouts, 5xx, 429 (never a {@linkcode PolicyError}). */
export function isTransient(err: unknown): boolean {
  if (err instanceof PolicyError) return false;
  if (err instanceof NetworkError) return true;
  if (err instanceof HttpStatusError) {
    return err.status >= 500 || err.status === 429;
  }
  return false;
}

/** Options for {@linkcode withRetries}. */
export interface RetryOptions {
  /** Attempts after the first one (default 5). */
  retries?: number;
  /** First backoff delay in milliseconds (default 500). */
  baseDelayMs?: number;
  /** Longest backoff delay in milliseconds (default 30 s). */
  maxDelayMs?: number;
  /** Decides whether a failure is retried (default {@linkcode isTransient}). */
  retryable?: (err: unknown) => boolean;
  /** Told about each retry before its delay. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Stops waiting. */
  signal?: AbortSignal;
  /** Random source in [0, 1) for the jitter (tests make it deterministic). */
  random?: () => number;
}

/** The delay before retry number `attempt` (1-based): exponential, capped, with full jitter. */
export function backoffDelay(
  attempt: number,
  options: RetryOptions = {},
): number {
  const base = options.baseDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  const ceiling = Math.min(max, base * 2 ** (attempt - 1));
  const random = options.random ?? Math.random;
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/**
 * Runs `fn` until it succeeds, it fails with a non-retryable error, or the
 * retries are spent. A server's `Retry-After` wins over the computed backoff
 * (within `maxDelayMs`).
 */
export async function withRetries<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const retries = options.retries ?? 5;
  const retryable = options.retryable ?? isTransient;
  for (let attempt = 0;; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= retries || !retryable(err) || options.signal?.aborted) {
        throw err;
      }
      let delay = backoffDelay(attempt + 1, options);
      if (err instanceof HttpStatusError && err.retryAfterMs !== undefined) {
        delay = Math.min(err.retryAfterMs, options.maxDelayMs ?? 30_000);
      }
      options.onRetry?.(err, attempt + 1, delay);
      await sleep(delay, options.signal);
    }
  }
}

/** Waits `ms` milliseconds (resolves early when `signal` aborts). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** A short description of any thrown value. */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return redact(`${err.message}${cause}`.split("\n")[0]);
  }
  return redact(String(err));
}

/** Clients made by {@linkcode createClient} with `insecure: true`. */
const insecureClients = new WeakSet<Deno.HttpClient>();

function isInsecureClient(client?: Deno.HttpClient): boolean {
  return client !== undefined && insecureClients.has(client);
}

/** Options for {@linkcode createClient}. */
export interface CreateClientOptions {
  /** PEM files whose certificates are trusted in addition to the system roots (`--ca-cert`). */
  caCertFiles?: string[];
  /** PEM certificates (text) trusted in addition, e.g. the one `--ca-cert-url` fetched. */
  caCerts?: string[];
  /**
   * The system store's certificates (default: {@linkcode systemCertificates});
   * `[]` leaves the store out (Deno's built-in roots remain).
   */
  systemCerts?: string[];
  /** Skip TLS certificate verification (`--insecure`); every connection is logged as a warning. */
  insecure?: boolean;
  /** The curl program used for `--insecure` (default `curl` from PATH). */
  curl?: string;
}

/**
 * Builds the HTTP client: TLS is verified against Deno's built-in roots plus
 * the system trust store (read here, so that it counts whatever
 * `DENO_TLS_CA_STORE` says and in a compiled binary too), the `--ca-cert`
 * files and `caCerts`. Returns `undefined` only when there is nothing to add
 * and not `insecure` (the runtime's default client then does the same).
 * Certificates of the system store that the TLS stack cannot parse are left
 * out with a warning; a `--ca-cert` file that holds none, or one it cannot
 * parse, is a {@linkcode BootError} (Usage).
 *
 * Deno has no run-time switch to skip certificate verification
 * (`Deno.createHttpClient` has none, the `--unsafely-ignore-certificate-errors`
 * flag is fixed at start-up, and `node:https` with `rejectUnauthorized: false`
 * works but buffers whole bodies in memory). So a client made with
 * `insecure: true` is remembered here and {@linkcode request} sends its
 * `https:` requests through `curl --insecure`, streaming its output through a
 * pipe (flat memory), and warns on every connection: no certificate is
 * checked then, whatever store curl itself would use. Throws a
 * {@linkcode BootError} (Usage) when a CA file is unreadable or curl is missing.
 */
export function createClient(
  options: CreateClientOptions = {},
): Deno.HttpClient | undefined {
  const files = options.caCertFiles ?? [];
  const userCerts = files.flatMap((file) => {
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch (err) {
      throw new BootError(
        `Cannot read CA certificate ${file}: ${errorText(err)}`,
        ExitCode.Usage,
        { cause: err },
      );
    }
    const certs = splitPem(text);
    if (certs.length === 0) {
      throw new BootError(
        `CA certificate ${file} holds no PEM certificate`,
        ExitCode.Usage,
      );
    }
    if (usableCertificates(certs).rejected > 0) {
      throw new BootError(
        `CA certificate ${file} holds a certificate that cannot be parsed`,
        ExitCode.Usage,
      );
    }
    return certs;
  });
  const systemCerts = options.systemCerts ?? systemCertificates();
  const caCerts = [...systemCerts, ...userCerts, ...(options.caCerts ?? [])];
  if (caCerts.length === 0 && !options.insecure) return undefined;
  if (options.insecure) {
    curlProgram = options.curl ?? "curl";
    try {
      new Deno.Command(curlProgram, {
        args: ["--version"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).outputSync();
    } catch (err) {
      throw new BootError(
        `--insecure needs curl, and ${curlProgram} cannot be run (Deno cannot skip TLS verification by itself)`,
        ExitCode.Usage,
        { cause: err },
      );
    }
  }
  const client = Deno.createHttpClient({ caCerts });
  if (options.insecure) {
    insecureClients.add(client);
    log.warn(
      "--insecure: TLS certificates are NOT verified; anyone on the path can serve you a kernel",
    );
  }
  return client;
}

let curlProgram = "curl";

interface FetchInit {
  method: string;
  headers: Headers;
  body?: BodyInit | null;
  signal: AbortSignal;
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

const HEADER_LIMIT = 64 * 1024;

/**
 * One HTTPS request through `curl --insecure`, answered as a fetch `Response`
 * whose body streams from curl's stdout. The URL, headers and body go to curl
 * through its `--config -` stdin, never its command line (other users can
 * read command lines).
 */
async function insecureFetch(url: string, init: FetchInit): Promise<Response> {
  log.warn(
    `--insecure: not verifying the TLS certificate of ${
      redact(new URL(url).origin)
    }`,
  );
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
  if (init.signal.aborted) throw init.signal.reason;
  const child = new Deno.Command(curlProgram, {
    args: [
      "--disable", // no ~/.curlrc
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
    ],
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

  // Read the header block(s) (skipping 1xx), keep what follows as body.
  const reader = child.stdout.getReader();
  const stop = async (err: unknown): Promise<never> => {
    kill();
    await reader.cancel().catch(() => {});
    await child.status;
    await stderr;
    throw err;
  };
  let buffered = new Uint8Array(0);
  let status = 0;
  const responseHeaders = new Headers();
  for (;;) {
    const text = new TextDecoder("latin1").decode(buffered);
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const [line, ...fields] = text.slice(0, end).split("\r\n");
      const m = /^HTTP\/[\d.]+ (\d{3})/.exec(line) as RegExpExecArray;
      if (!m) {
        await stop(
          new Error(`unexpected answer from curl: ${line.slice(0, 80)}`),
        );
      }
      buffered = buffered.subarray(end + 4);
      if (Number(m[1]) < 200) continue;
      status = Number(m[1]);
      for (const field of fields) {
        const i = field.indexOf(":");
        if (i > 0) {
          responseHeaders.append(
            field.slice(0, i).trim(),
            field.slice(i + 1).trim(),
          );
        }
      }
      break;
    }
    if (buffered.length > HEADER_LIMIT) {
      await stop(new Error("response headers too large"));
    }
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (err) {
      return await stop(init.signal.aborted ? init.signal.reason : err);
    }
    if (chunk.done) {
      const err = init.signal.aborted ? init.signal.reason : await failure();
      return await stop(err);
    }
    const next = new Uint8Array(buffered.length + chunk.value.length);
    next.set(buffered);
    next.set(chunk.value, buffered.length);
    buffered = next;
  }

  let first: Uint8Array | undefined = buffered.length ? buffered : undefined;
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
