/**
 * The InfraEnv client: builds the script URL, authenticates (sso.ts), fetches scripts for the
 * iPXE interpreter, and recognises the service's answers to a MAC-specific
 * script request: 404 "boot from local disk", thrown as a
 * {@linkcode LocalBootAnswer}, and 500 "more than one host has this MAC",
 * after which the script is fetched without the MAC, as iPXE given the plain
 * script URL would.
 *
 * The bearer token (from {@linkcode createTokenProvider}) is sent only to
 * the API's own origin and path (the `--api-url` prefix, checked again on
 * every redirect hop), never to a URL that carries its own credential
 * (`image_token`, `api_key`), and never to image-service URLs: the artifact
 * downloader sends no `Authorization` at all. A token sent over plain http
 * (bearer, a script URL's `api_key`) is worth a warning, once per origin.
 *
 * @module
 */

import { BootError, errorText, ExitCode } from "../errors.ts";
import { idleWatch } from "../http/idle.ts";
import { parseRetryAfter } from "../http/retry_after.ts";
import {
  HttpStatusError,
  isTransient,
  readAtMost,
  readErrorBody,
  request,
} from "../http/request.ts";
import { hasCredential } from "../credentials.ts";
import { log, redact, redactUrl } from "../log.ts";
import {
  isAmbiguousMacAnswer,
  isMacScriptRequest,
  withoutMac,
} from "./mac_request.ts";
import { withRetries } from "../http/retry.ts";
import { assertNotSpecialFile } from "../regular_file.ts";
import { assertTrustedPath } from "../path_trust.ts";
import { type ApiAuth, createTokenProvider } from "./sso.ts";
import {
  type ClientOptions,
  describe,
  errorBodyText,
  readAnswer,
  warnPlainHttp,
} from "./service_requests.ts";

/** Where the first iPXE script comes from. */
export type ScriptSource =
  | { kind: "ipxe-url"; url: string }
  | {
    kind: "infraenv";
    apiUrl: string;
    infraEnvId: string;
    auth: ApiAuth;
    scriptType?: string;
  };

/** Options for {@linkcode createScriptClient}. */
export interface ScriptClientOptions extends ClientOptions {
  /**
   * The boot NIC's MAC. Sent with the first InfraEnv request (unless an
   * `ipxe_script_type` was asked for) so that the service can answer 404 for
   * a host that is already installed instead of booting it into discovery.
   */
  mac?: string;
}

/** The API URL without its trailing slashes: the root of every API path and of the bearer's scope. */
function apiRoot(apiUrl: string): string {
  return apiUrl.replace(/\/+$/, "");
}

/** Builds the InfraEnv's iPXE script URL (`…/downloads/files?file_name=ipxe-script`). */
export function scriptUrl(
  apiUrl: string,
  infraEnvId: string,
  options: { scriptType?: string; mac?: string } = {},
): string {
  const url = new URL(
    `${apiRoot(apiUrl)}/assisted-install/v2/infra-envs/${
      encodeURIComponent(infraEnvId)
    }/downloads/files`,
  );
  url.searchParams.set("file_name", "ipxe-script");
  if (options.scriptType) {
    url.searchParams.set("ipxe_script_type", options.scriptType);
  }
  if (options.mac) url.searchParams.set("mac", options.mac);
  return url.href;
}

/**
 * The service's "boot from the local disk" answer: 404 "IPXE booting
 * skipped" to a MAC-specific script request (the host is installed), from
 * the origin of the first script (the API, or the `--ipxe-url`). Thrown
 * by the script fetcher; `resolvePlan` turns it into a `LocalBootPlan`, and
 * anywhere else it is what it also is, an API answer that boots nothing (Api).
 */
export class LocalBootAnswer extends BootError {
  /** The service's message (redacted, one line). */
  readonly reason: string;

  /** Creates the answer for `url` with the service's `reason`. */
  constructor(url: string, reason: string) {
    super(
      `${
        redactUrl(url)
      } answered HTTP 404: ${reason} (boot from the local disk)`,
      ExitCode.Api,
    );
    this.name = "LocalBootAnswer";
    this.reason = reason;
  }
}

/** Fetches scripts for the iPXE interpreter. */
export interface ScriptClient {
  /** URL of the first script. */
  firstUrl: string;
  /**
   * The interpreter's fetcher (see `lib/ipxe/mod.ts`): throws a
   * {@linkcode LocalBootAnswer} when the service says the host is installed,
   * a `BootError` (Api) for any other refusal.
   */
  fetch(
    url: string,
    options: { maxBytes: number; timeoutMs?: number },
  ): Promise<{ url: string; body: Uint8Array }>;
}

/**
 * Creates the script client for a source. The first URL is the InfraEnv's
 * script URL (API mode) or `--ipxe-url`; chained URLs go through the same
 * fetcher, with the bearer token only where the API expects it.
 */
export function createScriptClient(
  source: ScriptSource,
  options: ScriptClientOptions = {},
): ScriptClient {
  const auth = source.kind === "infraenv"
    ? source.auth
    : { kind: "none" as const };
  const tokens = createTokenProvider(auth, options);
  const apiBase = source.kind === "infraenv"
    ? new URL(apiRoot(source.apiUrl) + "/")
    : undefined;
  const firstUrl = source.kind === "infraenv"
    ? scriptUrl(source.apiUrl, source.infraEnvId, {
      scriptType: source.scriptType,
      mac: source.scriptType === undefined ? options.mac : undefined,
    })
    : source.url;

  // Whose "boot from the local disk" counts: the service the first script
  // comes from (the API; with --ipxe-url, the origin of the user's URL, a
  // hub's service whose redirect script chains the MAC request), never
  // another server a script names.
  const serviceOrigin = new URL(apiBase?.href ?? firstUrl).origin;
  const fromService = (...urls: string[]) =>
    serviceOrigin !== "null" &&
    urls.every((u) => u === "" || new URL(u).origin === serviceOrigin);

  // Local files only when the user's own first script is one.
  const localSource = source.kind === "ipxe-url" &&
    new URL(source.url).protocol === "file:";

  // The bearer's scope: the API origin and path, checked on every hop; never
  // an URL with a credential of its own.
  const wantsBearer = (url: URL) =>
    apiBase !== undefined && url.origin === apiBase.origin &&
    url.pathname.startsWith(apiBase.pathname) && !hasCredential(url.href);

  const scripts: ScriptClient = {
    firstUrl,
    fetch: async (url, fetchOptions) => {
      const parsed = new URL(url);
      const scheme = parsed.protocol.slice(0, -1);
      if (scheme === "file") {
        if (!localSource) {
          throw new BootError(
            `Refused to read ${
              redactUrl(url)
            }: local files are read only when --ipxe-url is a file: URL`,
            ExitCode.Api,
          );
        }
        return await readLocalScript(url, fetchOptions.maxBytes);
      }
      if (scheme !== "http" && scheme !== "https") {
        throw new BootError(
          `Unsupported URL scheme "${scheme}" in ${
            redactUrl(url)
          } (only http, https and file)`,
          ExitCode.Api,
        );
      }
      const bearer = wantsBearer(parsed);
      if (bearer && auth.kind !== "none") {
        warnPlainHttp(parsed, "The API token");
      } else if (hasCredential(url)) {
        // A hub's script URL carries its credential in the query.
        warnPlainHttp(parsed, "The api_key or image_token of a script URL");
      }
      let reauthenticated = false;
      for (;;) {
        const answer = await getScript(url, {
          ...options,
          authorization: bearer ? await tokens.authorization() : undefined,
          authorizationScope: wantsBearer,
          maxBytes: fetchOptions.maxBytes,
          timeoutMs: fetchOptions.timeoutMs ?? options.timeoutMs,
        });
        if (answer.ambiguous !== undefined) {
          log.warn(
            `the service cannot tell which host has this MAC (HTTP 500: ${answer.ambiguous}): fetching the script without mac=, as iPXE given the plain script URL would`,
          );
          return await scripts.fetch(withoutMac(url), fetchOptions);
        }
        const { response, body } = answer;
        if (
          response.status === 401 && bearer && !reauthenticated &&
          tokens.invalidate()
        ) {
          await response.body?.cancel();
          log.warn("the API answered 401: exchanging the refresh token again");
          reauthenticated = true;
          continue;
        }
        if (!response.ok) {
          throw await refusal(url, response, {
            bearer,
            fromService: fromService(url, response.url),
          });
        }
        return { url: response.url || url, body: body ?? new Uint8Array(0) };
      }
    },
  };
  return scripts;
}

/**
 * A script in a local file: never one another user can change (they would
 * choose the script), nor a FIFO or a device (it would wait past every
 * timeout).
 */
async function readLocalScript(
  url: string,
  maxBytes: number,
): Promise<{ url: string; body: Uint8Array }> {
  try {
    const parsed = new URL(url);
    assertTrustedPath(parsed);
    await assertNotSpecialFile(parsed);
    const file = await Deno.open(parsed);
    return {
      url,
      body: await readAtMost(file.readable, maxBytes + 1),
    };
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "no such file"
      : errorText(err);
    throw new BootError(`Cannot read ${url}: ${why}`, ExitCode.Api, {
      cause: err,
    });
  }
}

/** Options for {@linkcode getScript}. */
interface GetScriptOptions extends ClientOptions {
  /** The `Authorization` value, if this URL gets the bearer. */
  authorization?: string;
  /** Which redirect hops keep it. */
  authorizationScope: (url: URL) => boolean;
  /** The largest script read. */
  maxBytes: number;
}

/** What a script URL answered, after the retries. */
interface ScriptAnswer {
  response: Response;
  /** The body of a 2xx answer. */
  body?: Uint8Array;
  /** The service's "more than one host has this MAC", when it said so. */
  ambiguous?: string;
}

/**
 * One script request, retried on what is transient (5xx, 429, a body cut
 * mid-way): never half a script.
 */
async function getScript(
  url: string,
  options: GetScriptOptions,
): Promise<ScriptAnswer> {
  const macRequest = isMacScriptRequest(url);
  try {
    return await withRetries(async () => {
      // --timeout: for the headers, then the longest silence of the body.
      const ms = options.timeoutMs ?? 30_000;
      const idle = idleWatch(url, ms, options);
      const res = idle.watch(
        await request(url, {
          authorization: options.authorization,
          authorizationScope: options.authorizationScope,
          client: options.client,
          timeoutMs: ms,
          timeoutScope: "headers",
          signal: idle.signal,
        }),
      );
      if (res.status >= 500 || res.status === 429) {
        const errorBody = await readErrorBody(res);
        // Not transient: the same MAC finds the same hosts every time.
        if (macRequest && isAmbiguousMacAnswer(res.status, errorBody)) {
          return { response: res, ambiguous: errorBodyText(errorBody) };
        }
        throw new HttpStatusError(
          res.status,
          url,
          errorBody,
          parseRetryAfter(res.headers.get("retry-after")),
        );
      }
      if (!res.ok) return { response: res };
      // A body cut mid-way (reset, or shorter than Content-Length) is a
      // network error like any other: retried, never half-run.
      const body = await readAnswer(res, {
        url,
        idle,
        maxBytes: options.maxBytes + 1,
        what: "the body",
      });
      return { response: res, body };
    }, {
      retries: options.retries,
      baseDelayMs: options.baseDelayMs,
      busy: options.busy,
      label: `script ${redact(url)}`,
      retryable: isTransient,
      onRetry: (err, n, ms) =>
        log.warn(
          `script ${redactUrl(url)}: ${describe(err)}; retry ${n} in ${ms} ms`,
        ),
    });
  } catch (err) {
    throw new BootError(
      `Cannot fetch ${redactUrl(url)}: ${describe(err)}`,
      ExitCode.Api,
      { cause: err },
    );
  }
}

/**
 * The error for a script URL's non-2xx answer: the service's "boot from the
 * local disk", or a refusal with a hint about the credential.
 */
async function refusal(
  url: string,
  response: Response,
  context: { bearer: boolean; fromService: boolean },
): Promise<BootError> {
  const text = errorBodyText(await readErrorBody(response));
  // "IPXE booting skipped…" is the service's "boot from local disk"; any
  // other 404 (an unknown InfraEnv, no access), or this one from another
  // server, is an error.
  if (
    response.status === 404 && isMacScriptRequest(url) &&
    context.fromService && /IPXE booting skipped/i.test(text)
  ) {
    return new LocalBootAnswer(url, text);
  }
  const hint = response.status === 401 || response.status === 403
    ? context.bearer
      ? " (check the token)"
      : " (the URL's credential was refused or has expired)"
    : "";
  return new BootError(
    `${redactUrl(url)} answered HTTP ${response.status}: ${
      text || response.statusText
    }${hint}`,
    ExitCode.Api,
  );
}
