/**
 * The run's HTTP client: whom TLS trusts (Deno's built-in roots, the system
 * trust store, `--ca-cert` files, the `--ca-cert-url` certificate) and, for
 * `--insecure`, the curl transport. Every request goes through `http.ts`'s
 * policy whatever client carries it.
 *
 * @module
 */

import {
  splitPem,
  systemCertificates,
  usableCertificates,
} from "./ca_store.ts";
import { curlTransport } from "./curl_transport.ts";
import { BootError, errorText, ExitCode } from "../errors.ts";
import { fetchTransport } from "./fetch_transport.ts";
import type { HttpClient } from "./request.ts";
import { readRegularTextFileSync } from "../regular_file.ts";
import {
  type UntrustedPart,
  untrustedPart,
  untrustedRefusal,
} from "../path_trust.ts";

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
  /**
   * The curl program used for `--insecure`: a name looked up on `PATH`, or
   * an absolute path (default `curl`; see `curl_transport.ts`).
   */
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
 * parse, or one whose path another user can change (`path_trust.ts`: it is
 * not read), is a {@linkcode BootError} (Usage).
 *
 * Deno has no run-time switch to skip certificate verification
 * (`Deno.createHttpClient` has none, the `--unsafely-ignore-certificate-errors`
 * flag is fixed at start-up, and `node:https` with `rejectUnauthorized: false`
 * works but buffers whole bodies in memory). So `insecure: true` gives the
 * curl transport (`curl_transport.ts`): its `https:` requests go through
 * `curl --insecure`, streaming its output through a pipe (flat memory), with
 * a warning on every connection; no certificate is checked then, whatever
 * store curl itself would use. Throws a {@linkcode BootError} (Usage) when a
 * CA file is unreadable, or when curl is missing or is one another user can
 * change (`programs.ts`: never run).
 */
export function createClient(
  options: CreateClientOptions = {},
): HttpClient | undefined {
  const files = options.caCertFiles ?? [];
  const userCerts = files.flatMap((file) => {
    let text: string;
    let untrusted: UntrustedPart | undefined;
    try {
      // Whoever can change the file chooses whom TLS trusts: not read.
      untrusted = untrustedPart(file);
      text = untrusted ? "" : readRegularTextFileSync(file);
    } catch (err) {
      throw new BootError(
        `Cannot read CA certificate ${file}: ${errorText(err)}`,
        ExitCode.Usage,
        { cause: err },
      );
    }
    if (untrusted) {
      throw new BootError(
        untrustedRefusal(`CA certificate ${file}`, untrusted),
        ExitCode.Usage,
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
  if (!options.insecure) return fetchTransport({ caCerts });
  return curlTransport({
    curl: options.curl,
    // Plain http (and file:) requests keep going through fetch.
    plain: () => fetchTransport({ caCerts }),
  });
}
