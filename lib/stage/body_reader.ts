/**
 * Reading a download's body: into one reused buffer (a BYOB reader, flat
 * memory), with a watchdog that cuts a body which stalls or trickles below
 * a minimum rate.
 *
 * @module
 */

import { NetworkError } from "../http/request.ts";
import { redactUrl } from "../log.ts";

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

/**
 * Reads a body into one reused buffer with a BYOB reader when the body is a
 * byte stream (fetch bodies are): no allocation per chunk, so memory stays
 * flat and the garbage collector has nothing to chase. Falls back to the
 * default reader (the `--insecure` path). A chunk is valid until the next call.
 */
export function bodyReader(
  body: ReadableStream<Uint8Array> | null,
): (() => Promise<ReadableStreamReadResult<Uint8Array>>) | undefined {
  if (!body) return undefined;
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    const reader = body.getReader();
    return () => reader.read();
  }
  let buffer = new ArrayBuffer(256 * 1024);
  return async () => {
    const result = await byob.read(new Uint8Array(buffer));
    if (result.value) buffer = result.value.buffer as ArrayBuffer;
    return result.done
      ? { done: true, value: undefined }
      : { done: false, value: result.value };
  };
}
