/**
 * A switchable fault layer for the test servers (the mock InfraEnv, the
 * benchmark server): rules pick requests by server, method and path, and turn
 * their answers into the failures a fleet meets on bad networks — a body cut
 * mid-stream, a body shorter than its `Content-Length`, 5xx bursts, 429 with
 * `Retry-After`, a stalled or slow server, HTML error pages, redirect loops,
 * a body that never ends — or run a side effect first (expire a token) and
 * answer normally, or edit the headers either way as a broken or hostile
 * server would (ignore `If-Range`, drop `Content-Length`, announce another
 * `Content-Range`).
 *
 * Every answer that goes through the layer is recorded with its size and
 * sha256, so a test can compare what the client says it verified with what the
 * server really sent in one complete response.
 *
 * ```ts
 * const faults = createFaults();
 * const mock = await startMock({ faults });
 * faults.add({ match: { path: "/boot-artifacts/kernel" }, fault: { kind: "reset", afterBytes: 65536 }, times: 1 });
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Which requests a rule applies to; every given field must match. */
export interface FaultMatch {
  /** Server name the request came to (`api`, `image`, …). */
  server?: string;
  /** HTTP method (default: any; note that clients may send `HEAD`). */
  method?: string;
  /** A substring of, or a pattern for, the path and query. */
  path?: string | RegExp;
}

/** What happens to a matching request. */
export type Fault =
  /** Answer with this status, body and headers instead of the real answer. */
  | {
    kind: "status";
    status: number;
    body?: string | Uint8Array;
    headers?: Record<string, string>;
  }
  /** Send the real headers and `afterBytes` bytes of the body, then abort the connection. */
  | { kind: "reset"; afterBytes: number }
  /** Send the real headers (with the full `Content-Length`) and `afterBytes` bytes, then end the body cleanly. */
  | { kind: "short"; afterBytes: number }
  /** Send the real headers and `afterBytes` bytes, then nothing until the client gives up. */
  | { kind: "stall"; afterBytes: number }
  /** Never answer (not even headers) until the client gives up. */
  | { kind: "hang" }
  /** Send the real answer `chunkBytes` at a time, one chunk every `intervalMs`. */
  | { kind: "slow"; chunkBytes: number; intervalMs: number }
  /** Redirect (302 by default) to `location`, a URL or a function of the request URL. */
  | {
    kind: "redirect";
    location: string | ((url: URL) => string);
    status?: number;
  }
  /** Run `run` (expire tokens, change the mock), then answer normally. */
  | { kind: "before"; run: () => void | Promise<void> }
  /**
   * Answer with this status and headers and a body without a length that
   * never ends (`chunk` repeated, default 64 KiB of "x"), until the client
   * stops reading.
   */
  | {
    kind: "endless";
    status?: number;
    headers?: Record<string, string>;
    chunk?: string;
  }
  /**
   * Answer normally, edited: `run` first (change the mock), then the server
   * gets the request without the `dropRequest` headers (e.g. `if-range`: a
   * server that ignores it), and the client gets the answer with
   * `setResponse` (a value, or a function of the current value; `null`
   * drops the header) applied and, with `endAfter`, only that many body
   * bytes, ended cleanly. Dropping `content-length` sends the body without a
   * length (chunked), so that a body that ends early looks complete.
   */
  | {
    kind: "edit";
    run?: () => void | Promise<void>;
    dropRequest?: string[];
    setResponse?: Record<
      string,
      string | null | ((value: string | null) => string | null)
    >;
    endAfter?: number;
  };

/** A rule: which requests, what fault, how often. */
export interface FaultRule {
  /** Requests the rule applies to (default: all). */
  match?: FaultMatch;
  /** The fault. */
  fault: Fault;
  /** Matching requests let through untouched before the fault starts (default 0). */
  skip?: number;
  /** Matching requests faulted, after `skip` (default: all of them). */
  times?: number;
}

/** A rule added to a {@linkcode FaultLayer}, with its counters. */
export interface ActiveRule extends FaultRule {
  /** Matching requests seen so far. */
  seen: number;
  /** Requests this rule faulted so far. */
  hits: number;
}

/** One answer that went through the layer. */
export interface ServedRecord {
  /** Server name. */
  server: string;
  /** HTTP method. */
  method: string;
  /** Path and query. */
  path: string;
  /** Status sent. */
  status: number;
  /** The fault applied, if any. */
  fault?: Fault["kind"];
  /** Body bytes sent. */
  size: number;
  /** sha256 (hex) of the body bytes sent. */
  sha256: string;
  /** True when the whole body was sent and nothing was cut. */
  complete: boolean;
  /** When the request arrived (epoch ms). */
  at: number;
}

/** The fault layer a server routes its requests through. */
export interface FaultLayer {
  /** Adds a rule (rules are tried in the order they were added; the first one that fires wins). */
  add(rule: FaultRule): ActiveRule;
  /** Removes every rule. */
  clear(): void;
  /** Every answer so far, in the order their bodies ended. */
  served: ServedRecord[];
  /** Answers `req` arriving at `server`, calling `next` for the real answer. */
  handle(
    req: Request,
    server: string,
    next: (req: Request) => Promise<Response>,
  ): Promise<Response>;
  /** Ends every stalled or hanging answer (call before shutting a server down). */
  release(): void;
}

function matches(rule: FaultRule, req: Request, server: string): boolean {
  const m = rule.match ?? {};
  if (m.server !== undefined && m.server !== server) return false;
  if (m.method !== undefined && m.method !== req.method) return false;
  if (m.path !== undefined) {
    const url = new URL(req.url);
    const target = url.pathname + url.search;
    if (
      typeof m.path === "string"
        ? !target.includes(m.path)
        : !m.path.test(target)
    ) {
      return false;
    }
  }
  return true;
}

/** Resolves after `ms`, or early when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Creates an empty fault layer (every request passes through until a rule is added). */
export function createFaults(): FaultLayer {
  const rules: ActiveRule[] = [];
  const served: ServedRecord[] = [];
  let released = new AbortController();

  const pick = (req: Request, server: string): ActiveRule | undefined => {
    for (const rule of rules) {
      if (!matches(rule, req, server)) continue;
      rule.seen++;
      if (rule.seen <= (rule.skip ?? 0)) continue;
      if (rule.hits >= (rule.times ?? Infinity)) continue;
      rule.hits++;
      return rule;
    }
    return undefined;
  };

  /** Wraps a body: records it, and applies a body fault. */
  const wrap = (
    res: Response,
    record: Omit<ServedRecord, "size" | "sha256" | "complete">,
    fault: Fault | undefined,
    signal: AbortSignal,
  ): Response => {
    const hash = createHash("sha256");
    let size = 0;
    let done = false;
    const finish = (complete: boolean) => {
      if (done) return;
      done = true;
      served.push({ ...record, size, sha256: hash.digest("hex"), complete });
    };
    if (!res.body) {
      finish(true);
      return res;
    }
    const reader = res.body.getReader();
    let pending: Uint8Array | undefined;
    const limit = fault && "afterBytes" in fault
      ? fault.afterBytes
      : fault?.kind === "edit"
      ? fault.endAfter ?? Infinity
      : Infinity;
    const step = fault?.kind === "slow" ? fault.chunkBytes : Infinity;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (size >= limit) {
          await reader.cancel().catch(() => {});
          finish(false);
          if (fault?.kind === "short" || fault?.kind === "edit") {
            return controller.close();
          }
          if (fault?.kind === "stall") await pause(3_600_000, signal);
          return controller.error(
            new Error(`fault: ${fault?.kind} after ${size} bytes`),
          );
        }
        if (!pending || pending.length === 0) {
          const next = await reader.read();
          if (next.done) {
            finish(true);
            return controller.close();
          }
          pending = next.value;
        }
        if (fault?.kind === "slow") await pause(fault.intervalMs, signal);
        const take = Math.min(pending.length, limit - size, step);
        const out = pending.subarray(0, take);
        pending = pending.subarray(take);
        hash.update(out);
        size += take;
        controller.enqueue(out);
      },
      async cancel(reason) {
        finish(false);
        await reader.cancel(reason).catch(() => {});
      },
    }, { highWaterMark: 0 });
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };

  return {
    served,
    add(rule) {
      const active: ActiveRule = { ...rule, seen: 0, hits: 0 };
      rules.push(active);
      return active;
    },
    clear() {
      rules.length = 0;
    },
    release() {
      released.abort();
      released = new AbortController();
    },
    async handle(req, server, next) {
      const url = new URL(req.url);
      const rule = pick(req, server);
      const fault = rule?.fault;
      const signal = AbortSignal.any([released.signal, req.signal]);
      const record = {
        at: Date.now(),
        server,
        method: req.method,
        path: url.pathname + url.search,
        fault: fault?.kind,
      };
      let res: Response;
      switch (fault?.kind) {
        case "status":
          res = new Response(
            req.method === "HEAD" ? null : fault.body as BodyInit ?? null,
            { status: fault.status, headers: fault.headers },
          );
          break;
        case "redirect": {
          const location = typeof fault.location === "string"
            ? fault.location
            : fault.location(url);
          res = new Response(null, {
            status: fault.status ?? 302,
            headers: { location },
          });
          break;
        }
        case "hang":
          await pause(3_600_000, signal);
          res = new Response("fault: hang released", { status: 503 });
          break;
        case "before":
          await fault.run();
          res = await next(req);
          break;
        case "endless": {
          const chunk = new TextEncoder().encode(
            fault.chunk ?? "x".repeat(65536),
          );
          const body = new ReadableStream<Uint8Array>({
            pull(controller) {
              controller.enqueue(chunk);
            },
          }, { highWaterMark: 0 });
          // No length on purpose: recorded, never buffered.
          return wrap(
            new Response(req.method === "HEAD" ? null : body, {
              status: fault.status ?? 200,
              headers: fault.headers,
            }),
            { ...record, status: fault.status ?? 200 },
            undefined,
            signal,
          );
        }
        case "edit": {
          await fault.run?.();
          const headers = new Headers(req.headers);
          for (const name of fault.dropRequest ?? []) headers.delete(name);
          res = await next(new Request(req, { headers }));
          const edited = new Headers(res.headers);
          for (const [name, value] of Object.entries(fault.setResponse ?? {})) {
            const next = typeof value === "function"
              ? value(edited.get(name))
              : value;
            if (next === null) edited.delete(name);
            else edited.set(name, next);
          }
          res = new Response(res.body, {
            status: res.status,
            statusText: res.statusText,
            headers: edited,
          });
          break;
        }
        default:
          res = await next(req);
      }
      const unframed = fault?.kind === "edit" &&
        fault.setResponse?.["content-length"] === null;
      if (res.body && !res.headers.has("content-length") && !unframed) {
        // Keep the framing Deno.serve uses for a fixed body (a length, not
        // chunks), so that a cut body stays detectable by the client.
        const bytes = new Uint8Array(await res.arrayBuffer());
        const headers = new Headers(res.headers);
        headers.set("content-length", String(bytes.length));
        res = new Response(bytes, {
          status: res.status,
          statusText: res.statusText,
          headers,
        });
      }
      const bodyFault = fault &&
          ["reset", "short", "stall", "slow", "edit"].includes(fault.kind)
        ? fault
        : undefined;
      return wrap(res, { ...record, status: res.status }, bodyFault, signal);
    },
  };
}

/** Options for {@linkcode slotLimit}. */
export interface SlotLimitOptions {
  /** Requests served at once; the rest are answered `503`. */
  slots: number;
  /** `Retry-After` of the `503` answers, in seconds. */
  retryAfterSeconds: number;
  /** Bytes per second each slot sends a body at. */
  bytesPerSecond: number;
  /** Which requests take a slot (default: all). */
  match?: (req: Request) => boolean;
}

/** A server with K download slots ({@linkcode slotLimit}). */
export interface SlotLimit extends FaultLayer {
  /** `503` answers sent so far. */
  rejected: number;
  /** Answers admitted to a slot so far. */
  admitted: number;
}

/**
 * A fault layer that admits `slots` requests at once, sends their bodies at
 * `bytesPerSecond` each, holds the slot until the body ended (or was
 * cancelled) and answers every other request `503` with `Retry-After`: a
 * loaded image service, for herd tests. Its rules are not used.
 */
export function slotLimit(options: SlotLimitOptions): SlotLimit {
  let busy = 0;
  const layer: SlotLimit = {
    rejected: 0,
    admitted: 0,
    served: [],
    add() {
      throw new Error("slotLimit: no rules");
    },
    clear() {},
    release() {},
    async handle(req, _server, next) {
      if (options.match && !options.match(req)) return await next(req);
      if (busy >= options.slots) {
        layer.rejected++;
        return new Response("busy", {
          status: 503,
          headers: { "retry-after": String(options.retryAfterSeconds) },
        });
      }
      busy++;
      layer.admitted++;
      let freed = false;
      const free = () => {
        if (!freed) busy--;
        freed = true;
      };
      let res: Response;
      try {
        res = await next(req);
      } catch (err) {
        free();
        throw err;
      }
      if (!res.body) {
        free();
        return res;
      }
      const reader = res.body.getReader();
      const chunk = Math.max(1, Math.round(options.bytesPerSecond / 50));
      let pending = new Uint8Array();
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (pending.length === 0) {
            const { done, value } = await reader.read();
            if (done) {
              free();
              controller.close();
              return;
            }
            pending = value;
          }
          const part = pending.subarray(0, chunk);
          pending = pending.subarray(part.length);
          await new Promise((r) =>
            setTimeout(r, (part.length / options.bytesPerSecond) * 1000)
          );
          controller.enqueue(part);
        },
        cancel(reason) {
          free();
          return reader.cancel(reason);
        },
      });
      return new Response(body, { status: res.status, headers: res.headers });
    },
  };
  return layer;
}
