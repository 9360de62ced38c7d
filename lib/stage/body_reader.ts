/**
 * Reading a download's body into one reused buffer (a BYOB reader, flat
 * memory). The watchdog that cuts a body which stalls or trickles is
 * `lib/http/idle.ts`'s.
 *
 * @module
 */

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
