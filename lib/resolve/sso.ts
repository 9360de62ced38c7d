/**
 * The API's authentication: a static token, or an offline (refresh) token
 * exchanged at the SSO for access tokens, renewed ahead of their expiry. The
 * offline token is posted to the SSO endpoint only: a redirect from it is
 * never followed, and its answer is bounded in size and speed.
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { idleWatch } from "../http/idle.ts";
import { parseRetryAfter } from "../http/retry_after.ts";
import {
  HttpStatusError,
  isHeaderToken,
  readErrorBody,
  request,
} from "../http/request.ts";
import { withRetries } from "../http/retry.ts";
import { addSecret, log, redact, redactUrl } from "../log.ts";
import {
  type ClientOptions,
  describe,
  errorBodyText,
  readAnswer,
  warnPlainHttp,
} from "./service_requests.ts";

/** How the API is authenticated. */
export type ApiAuth =
  | { kind: "none" }
  | { kind: "token"; token: string }
  | { kind: "refresh"; refreshToken: string; ssoUrl: string };

/** Largest SSO answer read, in bytes (a token answer is a few KiB). */
export const MAX_SSO_BYTES = 256 * 1024;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** An access token and when it stops being valid. */
interface AccessToken {
  token: string;
  expiresAt: number;
}

/**
 * Exchanges an offline (refresh) token for an access token at the SSO token
 * endpoint (`grant_type=refresh_token`, `client_id=cloud-services`).
 */
export async function exchangeRefreshToken(
  ssoUrl: string,
  refreshToken: string,
  options: ClientOptions = {},
): Promise<AccessToken> {
  const started = Date.now();
  warnPlainHttp(new URL(ssoUrl), "The offline token");
  const answer = await postRefreshToken(ssoUrl, refreshToken, options);
  return accessTokenOf(answer, ssoUrl, started);
}

/** What the SSO answered: its response and, unless it redirected, its body. */
interface SsoAnswer {
  response: Response;
  bytes: Uint8Array;
}

/**
 * Posts the offline token to the SSO, retrying what is worth retrying (5xx,
 * 429, transport failures); a redirect is returned, never followed.
 */
async function postRefreshToken(
  ssoUrl: string,
  refreshToken: string,
  options: ClientOptions,
): Promise<SsoAnswer> {
  return await withRetries(async () => {
    // --timeout: for the headers, then the longest silence of the answer.
    const ms = options.timeoutMs ?? 30_000;
    const idle = idleWatch(ssoUrl, ms, options);
    const res = idle.watch(
      await request(ssoUrl, {
        // A redirect is never followed: a 307/308 would post the offline token
        // to wherever it points.
        redirect: "manual",
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          accept: "application/json",
        },
        body: new URLSearchParams({
          grant_type: "refresh_token",
          client_id: "cloud-services",
          refresh_token: refreshToken,
        }).toString(),
        client: options.client,
        timeoutMs: ms,
        timeoutScope: "headers",
        signal: idle.signal,
      }),
    );
    if (res.status >= 500 || res.status === 429) {
      throw new HttpStatusError(
        res.status,
        ssoUrl,
        await readErrorBody(res),
        parseRetryAfter(res.headers.get("retry-after")),
      );
    }
    if (REDIRECTS.has(res.status)) {
      await res.body?.cancel();
      return { response: res, bytes: new Uint8Array(0) };
    }
    return {
      response: res,
      bytes: await readAnswer(res, {
        url: ssoUrl,
        idle,
        maxBytes: MAX_SSO_BYTES + 1,
        what: "the answer",
      }),
    };
  }, {
    retries: options.retries,
    baseDelayMs: options.baseDelayMs,
    busy: options.busy,
    label: `SSO token exchange at ${redact(ssoUrl)}`,
    onRetry: (err, n, ms) =>
      log.warn(`SSO token exchange: ${errorText(err)}; retry ${n} in ${ms} ms`),
  }).catch((err) => {
    throw new BootError(
      `SSO token exchange at ${redactUrl(ssoUrl)} failed: ${describe(err)}`,
      ExitCode.Api,
      { cause: err },
    );
  });
}

/** The access token of the SSO's answer, or why the answer is not one. */
function accessTokenOf(
  { response, bytes }: SsoAnswer,
  ssoUrl: string,
  started: number,
): AccessToken {
  if (REDIRECTS.has(response.status)) {
    const location = response.headers.get("location");
    throw new BootError(
      `SSO at ${
        redactUrl(ssoUrl)
      } answered HTTP ${response.status} (a redirect${
        location ? ` to ${redact(location.slice(0, 200))}` : ""
      }): not followed, the offline token goes to --sso-url only (give the final URL there)`,
      ExitCode.Api,
    );
  }
  if (bytes.length > MAX_SSO_BYTES) {
    throw new BootError(
      `SSO at ${
        redactUrl(ssoUrl)
      } answered more than ${MAX_SSO_BYTES} bytes, which is not a token answer`,
      ExitCode.Api,
    );
  }
  const text = new TextDecoder().decode(bytes);
  if (!response.ok) {
    throw new BootError(
      `SSO refused the refresh token (HTTP ${response.status}): ${
        errorBodyText(text)
      }`,
      ExitCode.Api,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new BootError(
      `SSO at ${redactUrl(ssoUrl)} answered with something that is not JSON`,
      ExitCode.Api,
      { cause: err },
    );
  }
  // Valid JSON need not be an object: null, a list, a string, a number.
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new BootError(
      `SSO at ${redactUrl(ssoUrl)} answered with JSON that is not an object (${
        parsed === null
          ? "null"
          : Array.isArray(parsed)
          ? "a list"
          : `a ${typeof parsed}`
      }), not a token answer`,
      ExitCode.Api,
    );
  }
  const json = parsed as { access_token?: unknown; expires_in?: unknown };
  if (typeof json.access_token !== "string" || json.access_token === "") {
    throw new BootError(
      `SSO at ${redactUrl(ssoUrl)} answered without an access_token`,
      ExitCode.Api,
    );
  }
  addSecret(json.access_token);
  if (!isHeaderToken(json.access_token)) {
    throw new BootError(
      `SSO at ${
        redactUrl(ssoUrl)
      } answered an access_token that cannot be sent in an HTTP header (it holds spaces, control or non-ASCII characters)`,
      ExitCode.Api,
    );
  }
  const ttl = typeof json.expires_in === "number" && json.expires_in > 0
    ? json.expires_in
    : 300;
  log.info(`SSO: access token obtained, valid for ${ttl} s`);
  return { token: json.access_token, expiresAt: started + ttl * 1000 };
}

/** Supplies `Authorization` values, exchanging the offline token when needed. */
export interface TokenProvider {
  /** The header value, or undefined when the API needs none. */
  authorization(): Promise<string | undefined>;
  /** Forgets the cached access token; true when a new one can be obtained (refresh-token auth). */
  invalidate(): boolean;
}

/** Creates the {@linkcode TokenProvider} for an auth mode. */
export function createTokenProvider(
  auth: ApiAuth,
  options: ClientOptions = {},
): TokenProvider {
  let cached: AccessToken | undefined;
  return {
    authorization: async () => {
      if (auth.kind === "none") return undefined;
      if (auth.kind === "token") return `Bearer ${auth.token}`;
      if (!cached || Date.now() > cached.expiresAt - 30_000) {
        cached = await exchangeRefreshToken(
          auth.ssoUrl,
          auth.refreshToken,
          options,
        );
      }
      return `Bearer ${cached.token}`;
    },
    invalidate: () => {
      cached = undefined;
      return auth.kind === "refresh";
    },
  };
}
