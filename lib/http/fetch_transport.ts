/**
 * The transport of every verified request: Deno's `fetch`, redirects never
 * followed (the policy of `http.ts` follows them hop by hop), TLS verified
 * against Deno's built-in roots plus the CA certificates given (a
 * `Deno.HttpClient` of its own when there are any).
 *
 * @module
 */

import type { HttpClient, SendInit } from "./request.ts";

/** Options for {@linkcode fetchTransport}. */
export interface FetchTransportOptions {
  /**
   * PEM certificates trusted in addition to Deno's built-in roots. Given (even
   * empty), the transport has a `Deno.HttpClient` of its own; absent, it uses
   * the runtime's default client.
   */
  caCerts?: string[];
}

/**
 * A transport that sends each request with `fetch` (`redirect: "manual"`),
 * through a `Deno.HttpClient` trusting `caCerts` when they are given. It
 * never skips certificate verification (`insecure` is false).
 */
export function fetchTransport(
  options: FetchTransportOptions = {},
): HttpClient {
  const own = options.caCerts
    ? Deno.createHttpClient({ caCerts: options.caCerts })
    : undefined;
  const close = () => own?.close();
  return {
    insecure: false,
    send: (url: string, init: SendInit) =>
      fetch(url, {
        method: init.method,
        headers: init.headers,
        body: init.body,
        signal: init.signal,
        redirect: "manual",
        client: own,
      }),
    close,
    [Symbol.dispose]: close,
  };
}
