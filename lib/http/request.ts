/**
 * HTTP policy shared by the InfraEnv client and the artifact downloader:
 * manual redirects with a cap, each hop checked (http or https only, never
 * from https down to http unless the client is `--insecure`, never a request
 * body sent again), an `Authorization` header that never leaves the URLs it
 * was meant for, and per-request timeouts. Retries are `retry.ts`'s.
 *
 * The policy is the same whatever carries the bytes: {@linkcode request}
 * sends each hop through an {@linkcode HttpClient} (a transport), Deno's
 * `fetch` (`fetch_transport.ts`) or, for `--insecure`, curl
 * (`curl_transport.ts`); `http_client.ts` builds the run's client.
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { networkReason } from "./error_text.ts";
import { fetchTransport } from "./fetch_transport.ts";
import { log, redact, redactUrl } from "../log.ts";
import { parseRetryAfter } from "./retry_after.ts";
import { assertNotSpecialFile } from "../regular_file.ts";
import { assertTrustedPath } from "../path_trust.ts";

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
    super(`HTTP ${status} from ${redactUrl(url)}`);
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

  /** The message without the URL it starts with, for a line that names the URL already. */
  get reason(): string {
    const prefix = `${redactUrl(this.url)}: `;
    return this.message.startsWith(prefix)
      ? this.message.slice(prefix.length)
      : this.message;
  }
}

/**
 * The request policy refused to go on: an URL that does not parse or whose
 * scheme is not fetched, a `file:` URL naming something other than a regular
 * file or a file another user can change, more than 5 redirects, or a redirect to a scheme
 * other than http or https, from https down to http, with a malformed
 * `Location`, to an URL with a `user:password@`, or one that would send the
 * request body again; or an answer whose framing cannot be trusted
 * (conflicting `Content-Length`s, `Content-Length` with `Transfer-Encoding`).
 * Never retried: the same answer would come back.
 */
export class PolicyError extends NetworkError {
  /** Creates the error; the message starts with the (redacted) URL. */
  constructor(message: string, url: string, options?: ErrorOptions) {
    super(message, url, options);
    this.name = "PolicyError";
  }
}

/**
 * No answer came at all: the connection failed (refused, reset, closed
 * before the headers) or the headers did not arrive in time (`timedOut`).
 * The retry policy tells a busy or restarting server (refused, reset) from
 * the other failures by it; a body cut after the headers is never one.
 */
export class NoAnswerError extends NetworkError {
  /** The headers did not arrive within the request's timeout. */
  readonly timedOut: boolean;

  /** Creates the error; `cause` is the transport's error. */
  constructor(
    message: string,
    url: string,
    options: ErrorOptions & { timedOut?: boolean } = {},
  ) {
    super(message, url, options);
    this.name = "NoAnswerError";
    this.timedOut = options.timedOut ?? false;
  }
}

/** One request as a transport sends it: one hop, redirects never followed. */
export interface SendInit {
  /** HTTP method. */
  method: string;
  /** Request headers, `Authorization` included when the policy allows it. */
  headers: Headers;
  /** Request body. */
  body?: BodyInit | null;
  /** Aborts the request and the body read (the policy's timeouts included). */
  signal: AbortSignal;
}

/**
 * What {@linkcode request} sends every hop through: a transport with its TLS
 * trust. `createClient` (`http_client.ts`) builds one; without one, Deno's
 * `fetch` with its default roots is used.
 */
export interface HttpClient extends Disposable {
  /**
   * TLS certificates are not verified (`--insecure`): the policy then allows
   * a redirect from https down to plain http as well.
   */
  readonly insecure: boolean;
  /**
   * Sends one request and returns the answer as `fetch` would with
   * `redirect: "manual"` (a redirect is returned, never followed); a failed
   * connection rejects.
   */
  send(url: string, init: SendInit): Promise<Response>;
  /** Releases the client's connections. */
  close(): void;
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
  /** The transport and its trust (default: Deno's `fetch` with its built-in roots). */
  client?: HttpClient;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Redirects followed before giving up. */
const MAX_REDIRECTS = 5;

/** Schemes a request may start with; a redirect may only lead to http or https. */
const REQUEST_SCHEMES = new Set(["http:", "https:", "file:"]);

/** The transport of a request made without a client. */
const defaultClient = fetchTransport();

/**
 * Fetches `url` following redirects by hand so the policy is explicit: at most
 * 5 hops, each one to http or https only, never from https to
 * http unless the client is `--insecure`, never to an URL with a
 * `user:password@`, a 307/308 never sends the request body again, and the
 * `Authorization` header goes only to URLs in `authorizationScope`; a `file:`
 * URL is read only when it names a regular file whose path no other user can
 * change (`path_trust.ts`). Returns
 * the final response whatever its status, its `url` the one that answered
 * (whatever the transport); the caller decides what a status means. A
 * refused hop or an answer with untrustworthy framing throws a
 * {@linkcode PolicyError}, a failed connection a {@linkcode NetworkError}.
 */
export async function request(
  url: string,
  options: RequestOptions = {},
): Promise<Response> {
  const maxRedirects = MAX_REDIRECTS;
  const first = await firstUrl(url);
  const authOrigin = first.origin;
  const inScope = options.authorizationScope ??
    ((u: URL) => u.origin === authOrigin);
  const client = options.client ?? defaultClient;
  let current = url;
  let method = options.method ?? "GET";
  let body = options.body;
  for (let hop = 0;; hop++) {
    const headers = new Headers(options.headers);
    if (options.authorization && inScope(new URL(current))) {
      headers.set("Authorization", options.authorization);
    }
    const response = await send(client, current, {
      method,
      headers,
      body,
      timeoutMs: options.timeoutMs,
      timeoutScope: options.timeoutScope,
      signal: options.signal,
    });
    log.debug(`${method} ${redactUrl(current)}: HTTP ${response.status}`);
    const framing = framingProblem(response.headers);
    if (framing) {
      await response.body?.cancel().catch(() => {});
      throw new PolicyError(
        `${redactUrl(current)}: ${framing}, refused`,
        current,
      );
    }
    if (!REDIRECTS.has(response.status) || options.redirect === "manual") {
      // The URL that answered, whatever the transport: relative URLs in
      // what it sent resolve against it.
      if (response.url !== current) {
        Object.defineProperty(response, "url", { value: current });
      }
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
      // A policy, like the others: the same chain would come back.
      throw new PolicyError(
        `${redactUrl(url)}: more than ${maxRedirects} redirects, refused`,
        url,
      );
    }
    const next = redirectTarget(current, location, {
      status: response.status,
      insecure: client.insecure,
      resendsBody: body !== undefined && body !== null &&
        (response.status === 307 || response.status === 308),
    });
    current = next.href;
    log.debug(`redirected to ${redactUrl(current)}`);
    if (
      response.status === 303 || (response.status <= 302 && method === "POST")
    ) {
      method = "GET";
      body = undefined;
    }
  }
}

/** The URL a request starts from: valid, and a scheme that is fetched; a `file:` one trusted. */
async function firstUrl(url: string): Promise<URL> {
  let first: URL;
  try {
    first = new URL(url);
  } catch (err) {
    throw new PolicyError(`${redactUrl(url)}: not a valid URL`, url, {
      cause: err,
    });
  }
  if (!REQUEST_SCHEMES.has(first.protocol)) {
    throw new PolicyError(
      `${redactUrl(url)}: the scheme "${
        first.protocol.slice(0, -1)
      }" is not fetched (http, https or file only)`,
      url,
    );
  }
  if (first.protocol === "file:") {
    // Whoever can change the file chooses what it says: not read. And
    // fetch would open a FIFO and wait for a writer, past every timeout.
    try {
      assertTrustedPath(first);
      await assertNotSpecialFile(first);
    } catch (err) {
      throw new PolicyError(`${redactUrl(url)}: ${errorText(err)}`, url, {
        cause: err,
      });
    }
  }
  return first;
}

/** One hop's request: what it sends, and the timeout and abort of the whole request. */
interface HopOptions
  extends Pick<RequestOptions, "timeoutMs" | "timeoutScope" | "signal"> {
  method: string;
  headers: Headers;
  body?: BodyInit;
}

/**
 * Sends one hop within `--timeout`: a failed connection or no answer in time
 * is a {@linkcode NoAnswerError}; the caller's own abort passes unchanged.
 */
async function send(
  client: HttpClient,
  url: string,
  hop: HopOptions,
): Promise<Response> {
  // A fetch signal also aborts the body. "total": one unref'd timeout for
  // the whole exchange. "headers": a timer cleared once the headers are
  // in, so a long body is not cut (the caller watches it).
  const ms = hop.timeoutMs ?? 30_000;
  const headersOnly = hop.timeoutScope === "headers";
  const timeout = headersOnly
    ? new AbortController()
    : { signal: AbortSignal.timeout(ms) };
  const timer = headersOnly
    ? setTimeout(() => (timeout as AbortController).abort(), ms)
    : undefined;
  const signal = hop.signal
    ? AbortSignal.any([hop.signal, timeout.signal])
    : timeout.signal;
  try {
    return await client.send(url, {
      method: hop.method,
      headers: hop.headers,
      body: hop.body,
      signal,
    });
  } catch (err) {
    if (hop.signal?.aborted) throw err;
    const why = timeout.signal.aborted
      ? `no answer within ${ms / 1000} s`
      : networkReason(err);
    throw new NoAnswerError(`${redactUrl(url)}: ${why}`, url, {
      cause: err,
      timedOut: timeout.signal.aborted,
    });
  } finally {
    clearTimeout(timer);
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
 * carries no `user:password@`, and does not send a request body again
 * (`resendsBody`). Throws a
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
  const where = `${redactUrl(from)}: HTTP ${options.status ?? 302}`;
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
  const to = redactUrl(next.href).slice(0, 200);
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
  if (next.username !== "" || next.password !== "") {
    // fetch and curl would send them as an Authorization header.
    throw new PolicyError(
      `${where} redirects to an URL with a user:password@ (${to}), refused (a redirect never adds credentials)`,
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
 * Why a response's framing cannot be trusted, or undefined: a
 * `Content-Length` that is not one number (two that disagree let a truncated
 * body pass for whole), or a `Content-Length` beside a `Transfer-Encoding`
 * (RFC 9112: the mark of a smuggled or broken answer).
 */
export function framingProblem(headers: Headers): string | undefined {
  const length = headers.get("content-length");
  if (length === null) return undefined;
  const values = length.split(",").map((v) => v.trim());
  if (values.some((v) => !/^\d+$/.test(v))) {
    return `the answer has an invalid Content-Length (${
      JSON.stringify(length.slice(0, 80))
    })`;
  }
  if (new Set(values.map(Number)).size > 1) {
    return `the answer has conflicting Content-Length headers (${
      values.slice(0, 4).join(", ")
    })`;
  }
  if (headers.has("transfer-encoding")) {
    return "the answer has both Transfer-Encoding and Content-Length";
  }
  return undefined;
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
