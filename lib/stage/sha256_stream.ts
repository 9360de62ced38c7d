/**
 * sha256 on another core: a worker hashes the blocks a download or a
 * re-hash hands over (transferred, never copied) and hands each back when it
 * is done, so the main thread keeps reading the network or the disk, and the
 * writes run on the runtime's blocking threads, while the hash runs.
 *
 * One worker serves every open stream of the process (the kernel and the
 * initrds download at the same time) and is stopped when the last stream
 * ends, so nothing keeps the process or a test alive. Where a worker cannot
 * start, the same interface hashes on the calling thread.
 *
 * @example
 * ```ts
 * const stream = openSha256Stream();
 * const block = new TextEncoder().encode("abc").buffer as ArrayBuffer;
 * await stream.update(block, 3); // the block, back
 * await stream.digest(); // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";

/** An incremental sha256 whose updates may run on another thread. */
export interface Sha256Stream {
  /**
   * Hashes the first `length` bytes of `block`. The block is transferred
   * away (detached here) until the promise gives it back, hashed.
   */
  update(block: ArrayBuffer, length: number): Promise<ArrayBuffer>;
  /** The hex digest of every update, in order; ends the stream. */
  digest(): Promise<string>;
  /** Ends the stream without a digest (a failed download). */
  close(): void;
}

/** Options for {@linkcode openSha256Stream}. */
export interface Sha256StreamOptions {
  /** Hash on the calling thread, without the worker. */
  inline?: boolean;
}

// The worker's whole program. It is a string (a blob URL at run time) so
// that `deno compile` and `deno bundle` carry it without a second module.
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
const hashes = new Map();
self.onmessage = (event) => {
  const m = event.data;
  if (m.op === "open") {
    hashes.set(m.id, createHash("sha256"));
  } else if (m.op === "update") {
    hashes.get(m.id).update(new Uint8Array(m.block, 0, m.length));
    self.postMessage({ id: m.id, block: m.block }, [m.block]);
  } else if (m.op === "digest") {
    const digest = hashes.get(m.id).digest("hex");
    hashes.delete(m.id);
    self.postMessage({ id: m.id, digest });
  } else if (m.op === "close") {
    hashes.delete(m.id);
  }
};
`;

interface Waiter {
  resolve: (value: ArrayBuffer | string) => void;
  reject: (err: Error) => void;
}

interface Shared {
  worker: Worker;
  /** Per stream, the answers still to come, in the order they were asked. */
  waiters: Map<number, Waiter[]>;
  /** Why the worker stopped, once it failed: every later ask gets it. */
  failure?: Error;
}

let shared: Shared | undefined;
let workerUrl: string | undefined;
let nextId = 1;
let workerFailed = false;

function startWorker(): Shared | undefined {
  if (shared) return shared;
  if (workerFailed) return undefined;
  try {
    workerUrl ??= URL.createObjectURL(
      new Blob([WORKER_SOURCE], { type: "application/javascript" }),
    );
    const worker = new Worker(workerUrl, { type: "module" });
    const state: Shared = { worker, waiters: new Map() };
    worker.onmessage = (event) => {
      const { id, block, digest } = event.data;
      const waiter = state.waiters.get(id)?.shift();
      waiter?.resolve(digest ?? block);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      const err = new Error(`The sha256 worker failed: ${event.message}`);
      state.failure = err;
      for (const queue of state.waiters.values()) {
        for (const waiter of queue.splice(0)) waiter.reject(err);
      }
      state.worker.terminate();
      if (shared === state) shared = undefined;
      workerFailed = true;
    };
    shared = state;
    return state;
  } catch {
    workerFailed = true;
    return undefined;
  }
}

function release(state: Shared, id: number): void {
  const queue = state.waiters.get(id) ?? [];
  state.waiters.delete(id);
  for (const waiter of queue) {
    waiter.reject(new Error("The sha256 stream has ended"));
  }
  if (state.waiters.size === 0 && shared === state) {
    state.worker.terminate();
    shared = undefined;
  }
}

/**
 * Opens a sha256 stream: on the shared worker when one can start (or runs),
 * else on the calling thread (`inline`, or a runtime without workers).
 */
export function openSha256Stream(
  options: Sha256StreamOptions = {},
): Sha256Stream {
  const state = options.inline ? undefined : startWorker();
  if (!state) return inlineStream(createHash("sha256"));
  const id = nextId++;
  state.waiters.set(id, []);
  state.worker.postMessage({ op: "open", id });
  let ended = false;
  function ask<T>(message: object, transfer: Transferable[]): Promise<T> {
    const queue = state!.waiters.get(id);
    if (ended || !queue) {
      return Promise.reject(new Error("The sha256 stream has ended"));
    }
    // A stream opened on a worker that failed since: nothing would answer.
    if (state!.failure) return Promise.reject(state!.failure);
    return new Promise<T>((resolve, reject) => {
      queue.push({ resolve: resolve as Waiter["resolve"], reject });
      state!.worker.postMessage(message, transfer);
    });
  }
  return {
    update: (block, length) =>
      ask<ArrayBuffer>({ op: "update", id, block, length }, [block]),
    digest: async () => {
      try {
        return await ask<string>({ op: "digest", id }, []);
      } finally {
        ended = true;
        release(state, id);
      }
    },
    close: () => {
      if (ended) return;
      ended = true;
      if (shared === state) state.worker.postMessage({ op: "close", id });
      release(state, id);
    },
  };
}

function inlineStream(hash: Hash): Sha256Stream {
  let ended = false;
  return {
    update: (block, length) => {
      if (ended) {
        return Promise.reject(new Error("The sha256 stream has ended"));
      }
      hash.update(new Uint8Array(block, 0, length));
      return Promise.resolve(block);
    },
    digest: () => {
      if (ended) {
        return Promise.reject(new Error("The sha256 stream has ended"));
      }
      ended = true;
      return Promise.resolve(hash.digest("hex"));
    },
    close: () => {
      ended = true;
    },
  };
}
