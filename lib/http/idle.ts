/**
 * Watching a body as it comes: one that stops for `--timeout` is cut, and
 * one that trickles below `--min-speed` bytes per second over a window of
 * `--min-speed-time` is cut too, each with a {@linkcode NetworkError} naming
 * the URL and why (`no data for 30 s after 512 bytes`, `slower than 1024
 * bytes/s (3 bytes in 30 s) after 3 bytes`). Downloads use the watchdog
 * itself ({@linkcode watchBody}); a small body read whole (a script, an SSO
 * answer) goes through {@linkcode idleWatch}, so that no server can hold a
 * boot forever with a body sent a byte at a time.
 *
 * @module
 */

import { NetworkError } from "./request.ts";
import { redactUrl } from "../log.ts";

/** Default `minSpeed`: bytes per second below which a body is cut (`--min-speed`). */
export const DEFAULT_MIN_SPEED = 1024;
/** Default window for `minSpeed`, in milliseconds (`--min-speed-time`). */
export const DEFAULT_MIN_SPEED_TIME_MS = 30_000;

/** Options for {@linkcode watchBody}. */
export interface WatchOptions {
  /** The longest silence, in milliseconds. */
  timeoutMs: number;
  /** Bytes per second below which the body is cut (0: never). */
  minSpeed: number;
  /** The window `minSpeed` is measured over, in milliseconds. */
  windowMs: number;
  /** Bytes of the file on disk or in the buffer, for messages. */
  position: () => number;
  /** Aborts the body read with a {@linkcode NetworkError}. */
  abort: (err: NetworkError) => void;
}

/**
 * Watches a body for a stall (nothing for `timeoutMs`) or a trickle (fewer
 * than `minSpeed` bytes per second over each window of `windowMs`), and
 * aborts it with a network error naming which. Call `received` for every
 * chunk, `stop` at the end.
 */
export function watchBody(
  url: string,
  options: WatchOptions,
): { received: (bytes: number) => void; stop: () => void } {
  const { timeoutMs, minSpeed, windowMs } = options;
  let received = 0;
  let last = Date.now();
  let windowStart = last;
  let windowFrom = 0;
  const seconds = (ms: number) => Number((ms / 1000).toFixed(1));
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - last > timeoutMs) {
      options.abort(
        new NetworkError(
          `${redactUrl(url)}: no data for ${
            seconds(timeoutMs)
          } s after ${options.position()} bytes`,
          url,
        ),
      );
    } else if (minSpeed > 0 && now - windowStart >= windowMs) {
      const got = received - windowFrom;
      if (got < minSpeed * (now - windowStart) / 1000) {
        options.abort(
          new NetworkError(
            `${
              redactUrl(url)
            }: slower than ${minSpeed} bytes/s (${got} bytes in ${
              seconds(now - windowStart)
            } s) after ${options.position()} bytes`,
            url,
          ),
        );
      }
      windowStart = now;
      windowFrom = received;
    }
  }, Math.max(10, Math.min(1000, timeoutMs / 4, windowMs / 4)));
  return {
    received: (bytes) => {
      last = Date.now();
      received += bytes;
    },
    stop: () => clearInterval(timer),
  };
}

/** A silence watch for one request: its signal goes to `request`, its response through `watch`. */
export interface IdleWatch {
  /** Aborts the request (and so its body) after `ms` of silence once watching. */
  readonly signal: AbortSignal;
  /** The response with its body watched: every chunk restarts the clock. */
  watch(response: Response): Response;
  /** Stops the clock (done at the body's end, or when it is cancelled). */
  stop(): void;
}

/** Options for {@linkcode idleWatch}. */
export interface IdleOptions {
  /**
   * Bytes per second below which the body is cut (default
   * {@linkcode DEFAULT_MIN_SPEED}; 0: never).
   */
  minSpeed?: number;
  /** The window `minSpeed` is measured over (default {@linkcode DEFAULT_MIN_SPEED_TIME_MS}). */
  minSpeedTimeMs?: number;
}

/**
 * Creates a watch for a request to `url`: its body is cut after `ms`
 * milliseconds of silence or when it trickles below `options.minSpeed`. The
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
export function idleWatch(
  url: string,
  ms: number,
  options: IdleOptions = {},
): IdleWatch {
  const abort = new AbortController();
  let bytes = 0;
  let watchdog: ReturnType<typeof watchBody> | undefined;
  // The watched body's own end: a cut errors it at once, whichever way the
  // transport carries the abort to the response it already returned.
  let sink: TransformStreamDefaultController<Uint8Array> | undefined;
  const stop = () => watchdog?.stop();
  return {
    signal: abort.signal,
    watch(response) {
      // A 204, 205 or 304 has no body (a Response cannot be made with one).
      if (!response.body) return response;
      watchdog = watchBody(url, {
        timeoutMs: ms,
        minSpeed: options.minSpeed ?? DEFAULT_MIN_SPEED,
        windowMs: options.minSpeedTimeMs ?? DEFAULT_MIN_SPEED_TIME_MS,
        position: () => bytes,
        abort: (err) => {
          stop();
          sink?.error(err);
          abort.abort(err);
        },
      });
      const body = response.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          start(controller) {
            sink = controller;
          },
          transform(chunk, controller) {
            bytes += chunk.length;
            watchdog?.received(chunk.length);
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
