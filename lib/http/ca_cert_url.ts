/**
 * `--ca-cert-url` with `--ca-cert-sha256`: a private CA fetched before
 * anything else and trusted only when its bytes have the sha256 the
 * configuration names (on the kernel command line of an initramfs boot:
 * `assisted.ca_cert_url=… assisted.ca_cert_sha256=…`). The digest is the
 * trust anchor, so the CA may come over plain http.
 *
 * @module
 */

import type { BusyBudget } from "./busy.ts";
import { splitPem, usableCertificates } from "./ca_store.ts";
import { BootError, errorText, ExitCode } from "../errors.ts";
import {
  type HttpClient,
  NetworkError,
  readAtMost,
  request,
  statusError,
} from "./request.ts";
import { log, redactUrl } from "../log.ts";
import { withRetries } from "./retry.ts";
import { sha256Hex } from "../stage/sha256.ts";

/** Largest CA file fetched (a bundle of a few hundred certificates fits). */
export const MAX_CA_BYTES = 1024 * 1024;

/** Options for {@linkcode fetchCaCert}. */
export interface FetchCaCertOptions {
  /** Client for the request (system store, `--ca-cert`, `--insecure`). */
  client?: HttpClient;
  /** Retries on network errors and 5xx, busy answers aside (default 5). */
  retries?: number;
  /** How long busy servers may still be waited for (the run's budget). */
  busy?: BusyBudget;
  /** Per-request timeout in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** First backoff delay in milliseconds (default 500; tests use less). */
  baseDelayMs?: number;
  /** Checks that the TLS stack can use the certificates (default: Deno's; tests inject). */
  check?: (certs: string[]) => void;
}

/**
 * Downloads the CA at `url` (http or https, at most {@linkcode MAX_CA_BYTES}),
 * checks that its sha256 is `sha256` (lower-case hex) before looking at it,
 * and returns its PEM certificates. A download failure is a
 * {@linkcode BootError} Download (5); a digest mismatch, a file without a PEM
 * certificate or one the TLS stack cannot parse is Verify (6).
 */
export async function fetchCaCert(
  url: string,
  sha256: string,
  options: FetchCaCertOptions = {},
): Promise<string[]> {
  const shown = redactUrl(url);
  const bytes = await withRetries(async () => {
    const res = await request(url, {
      client: options.client,
      timeoutMs: options.timeoutMs,
    });
    if (!res.ok) throw await statusError(res, url);
    try {
      return await readAtMost(res.body, MAX_CA_BYTES + 1);
    } catch (err) {
      throw new NetworkError(
        `${shown}: connection lost while reading the answer: ${errorText(err)}`,
        url,
        { cause: err },
      );
    }
  }, {
    retries: options.retries,
    baseDelayMs: options.baseDelayMs,
    busy: options.busy,
    label: `CA certificate ${shown}`,
    onRetry: (err, n, ms) =>
      log.warn(`CA certificate: ${errorText(err)}; retry ${n} in ${ms} ms`),
  }).catch((err) => {
    throw new BootError(
      `Cannot download the CA certificate ${shown}: ${errorText(err)}`,
      ExitCode.Download,
    );
  });
  if (bytes.length > MAX_CA_BYTES) {
    throw new BootError(
      `The CA certificate ${shown} is larger than ${MAX_CA_BYTES} bytes: not trusted`,
      ExitCode.Verify,
    );
  }
  const actual = sha256Hex(bytes);
  if (actual !== sha256) {
    throw new BootError(
      `The CA certificate ${shown} has sha256 ${actual}, not ${sha256} (--ca-cert-sha256): not trusted`,
      ExitCode.Verify,
    );
  }
  const certs = splitPem(new TextDecoder().decode(bytes));
  if (certs.length === 0) {
    throw new BootError(
      `The CA certificate ${shown} holds no PEM certificate`,
      ExitCode.Verify,
    );
  }
  if (usableCertificates(certs, options.check).rejected > 0) {
    throw new BootError(
      `The CA certificate ${shown} holds a certificate that cannot be parsed`,
      ExitCode.Verify,
    );
  }
  log.info(
    `trusting ${certs.length} CA certificate(s) from ${shown} (sha256 ${sha256})`,
  );
  return certs;
}
