/**
 * A body's blocks on their way to disk and to the hash, in order and
 * overlapped: while block N is written (on the runtime's blocking threads)
 * and block N-1 is hashed (on the sha256 worker), the caller fills block N+1
 * from the network. A few blocks circulate, so memory stays flat.
 *
 * @module
 */

import type { Sha256Stream } from "./sha256_stream.ts";

/** Options for {@linkcode WritePipeline}. */
export interface WritePipelineOptions {
  /** Writes every byte given, at the file's position (in order). */
  write: (bytes: Uint8Array) => Promise<void>;
  /** Hashes each block after it was written, when given. */
  hash?: Sha256Stream;
  /** Called after each block is written, with its length. */
  onWritten?: (bytes: number) => void;
  /** Bytes per block (default 1 MiB). */
  blockSize?: number;
  /** Blocks in circulation (default 4). */
  depth?: number;
}

/**
 * Blocks written in order, then hashed in order, while the caller fills the
 * next: `fill` them from a reader (or `take` a block, fill it, `push` it),
 * and `drain` at the end.
 */
export class WritePipeline {
  #options: WritePipelineOptions;
  #allocated = 0;
  #inflight: Promise<ArrayBuffer>[] = [];
  #writes: Promise<void> = Promise.resolve();

  /** A pipeline writing and hashing as `options` says. */
  constructor(options: WritePipelineOptions) {
    this.#options = options;
  }

  /** The size of every block. */
  get blockSize(): number {
    return this.#options.blockSize ?? 1 << 20;
  }

  /**
   * A free block: a new one while fewer than `depth` circulate, else the
   * oldest in flight once it is written and hashed. Throws the failure of a
   * write or of the hash.
   */
  async take(): Promise<ArrayBuffer> {
    if (this.#allocated < (this.#options.depth ?? 4)) {
      this.#allocated++;
      return new ArrayBuffer(this.blockSize);
    }
    return await this.#inflight.shift()!;
  }

  /**
   * Queues the first `length` bytes of `block` (taken from this pipeline):
   * written after every block pushed before it, then hashed. The block is
   * the pipeline's again until `take` returns it.
   */
  push(block: ArrayBuffer, length: number): void {
    const { write, hash, onWritten } = this.#options;
    const written = this.#writes.then(async () => {
      await write(new Uint8Array(block, 0, length));
      onWritten?.(length);
    });
    this.#writes = written;
    const done = written.then(() => hash ? hash.update(block, length) : block);
    // Observed by `take` or `drain`; never an unhandled rejection meanwhile.
    done.catch(() => {});
    this.#inflight.push(done);
  }

  /**
   * Reads `read` to its end into blocks of this pipeline, pushing each full
   * one; `onChunk` is told each chunk's length as it comes. However the
   * reading ends, the block being filled is pushed too: what came before a
   * failed read is written (a resume starts after it). A failed read is
   * thrown as it is; `drain` waits for the writes and hashes.
   */
  async fill(
    read: () => Promise<ReadableStreamReadResult<Uint8Array>>,
    onChunk?: (bytes: number) => void,
  ): Promise<void> {
    let block: ArrayBuffer | undefined;
    let used = 0;
    try {
      for (;;) {
        const chunk = await read();
        if (chunk.done) return;
        let value = chunk.value;
        onChunk?.(value.length);
        while (value.length > 0) {
          block ??= await this.take();
          const n = Math.min(value.length, block.byteLength - used);
          new Uint8Array(block, used, n).set(value.subarray(0, n));
          used += n;
          value = value.subarray(n);
          if (used === block.byteLength) {
            this.push(block, used);
            block = undefined;
            used = 0;
          }
        }
      }
    } finally {
      // A block taken holds at least one byte: nothing empty is pushed.
      if (block) this.push(block, used);
    }
  }

  /**
   * Waits until every pushed block is written and hashed; throws the first
   * failure (after waiting for the rest, so nothing is left running).
   */
  async drain(): Promise<void> {
    let failure: unknown;
    let failed = false;
    for (const pending of this.#inflight.splice(0)) {
      try {
        await pending;
      } catch (err) {
        if (!failed) failure = err;
        failed = true;
      }
    }
    if (failed) throw failure;
  }
}
