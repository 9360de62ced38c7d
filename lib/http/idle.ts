/**
 * `--timeout` for a small body read whole (a script, an SSO answer, an
 * error page): the longest silence, not the whole exchange. A body that keeps
 * coming, however slowly, is read to its end (its size is bounded by the
 * reader); one that stops for `ms` is cut with a {@linkcode NetworkError}
 * (`no data for 30 s after 512 bytes of the body`: the caller names the URL).
 *
 * @module
 */

import { NetworkError } from "./request.ts";

/** A silence watch for one request: its signal goes to `request`, its response through `watch`. */
export interface IdleWatch {
  /** Aborts the request (and so its body) after `ms` of silence once watching. */
  readonly signal: AbortSignal;
  /** The response with its body watched: every chunk restarts the clock. */
  watch(response: Response): Response;
  /** Stops the clock (done at the body's end, or when it is cancelled). */
  stop(): void;
}

/** Statuses whose response has no body. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * Creates a silence watch of `ms` milliseconds for a request to `url`. The
 * clock starts when {@linkcode IdleWatch.watch} is given the response (the
 * wait for the headers is `request`'s own timeout).
 *
 * @example
 * ```ts
 * import { request } from "./request.ts";
 * const idle = idleWatch("http://127.0.0.1:8080/s", 30_000);
 * try {
 *   const res = idle.watch(
 *     await request("http://127.0.0.1:8080/s", { signal: idle.signal, timeoutScope: "headers" }),
 *   );
 *   await res.text();
 * } finally {
 *   idle.stop();
 * }
 * ```
 */
export function idleWatch(url: string, ms: number): IdleWatch {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let bytes = 0;
  const stop = () => clearTimeout(timer);
  const arm = () => {
    stop();
    timer = setTimeout(() => {
      abort.abort(
        new NetworkError(
          `no data for ${ms / 1000} s after ${bytes} bytes of the body`,
          url,
        ),
      );
    }, ms);
  };
  return {
    signal: abort.signal,
    watch(response) {
      if (!response.body || NULL_BODY.has(response.status)) return response;
      arm();
      const body = response.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            bytes += chunk.length;
            arm();
            controller.enqueue(chunk);
          },
          flush: stop,
          cancel: stop,
        }),
      );
      const watched = new Response(body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
      Object.defineProperty(watched, "url", { value: response.url });
      return watched;
    },
    stop,
  };
}
