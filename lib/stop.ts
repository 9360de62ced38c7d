/**
 * Stopping on SIGTERM (systemd stopping the unit) or SIGINT (Ctrl-C): one
 * log line, the run's downloads aborted, then its files removed (a
 * half-downloaded file, an assembled initrd holding a signed image's
 * content), the lock released and the process ended with 128 + the signal's
 * number ({@linkcode ExitCode.Interrupted}, {@linkcode ExitCode.Terminated}).
 *
 * The run is given {@linkcode StopWatch.grace} milliseconds to unwind after
 * the abort (a download in flight stops writing), so that nothing is written
 * after the files are removed; what does not unwind in time (a step that
 * takes no abort signal) is cut short by the exit itself.
 *
 * @module
 */

import { ExitCode, type ExitCodeValue } from "./errors.ts";
import { log } from "./log.ts";

/** The signals that stop a run, with the exit code each gives. */
export const STOP_SIGNALS = {
  SIGINT: ExitCode.Interrupted,
  SIGTERM: ExitCode.Terminated,
} as const satisfies Partial<Record<Deno.Signal, ExitCodeValue>>;

/** One of {@linkcode STOP_SIGNALS}. */
export type StopSignal = keyof typeof STOP_SIGNALS;

/** Options for {@linkcode watchStopSignals}. */
export interface StopOptions {
  /**
   * Removes the run's files and releases its lock; synchronous, never
   * throws (it runs just before the exit).
   */
  cleanup: () => void;
  /** Milliseconds the run gets to unwind after the abort (default 2000). */
  graceMs?: number;
  /** Ends the process (default `Deno.exit`). */
  exit?: (code: number) => void;
}

/** A run watching for {@linkcode STOP_SIGNALS}; disposing stops watching (and ends a stopped run). */
export interface StopWatch extends Disposable {
  /** Aborts when a stop signal arrives (its reason names the signal). */
  readonly signal: AbortSignal;
  /** The signal that stopped the run, if one did. */
  readonly stoppedBy: StopSignal | undefined;
  /**
   * Ends a stopped run now: cleanup, exit with the signal's code. Does
   * nothing when no signal arrived. Idempotent.
   */
  finish(): void;
}

/**
 * Watches for SIGTERM and SIGINT. The first one logs `Stopped by SIGTERM`,
 * aborts {@linkcode StopWatch.signal} and gives the run `graceMs` to unwind:
 * the run calls {@linkcode StopWatch.finish} as soon as it has (on the error
 * the abort caused, or when it disposes the watch), else the timer does.
 */
export function watchStopSignals(options: StopOptions): StopWatch {
  const abort = new AbortController();
  const exit = options.exit ?? ((code: number) => Deno.exit(code));
  let stoppedBy: StopSignal | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let finished = false;
  const finish = () => {
    if (stoppedBy === undefined || finished) return;
    finished = true;
    clearTimeout(timer);
    unlisten();
    options.cleanup();
    exit(STOP_SIGNALS[stoppedBy]);
  };
  const handlers = (Object.keys(STOP_SIGNALS) as StopSignal[]).map(
    (name) => {
      const handler = () => {
        if (stoppedBy !== undefined) return;
        stoppedBy = name;
        log.error(`Stopped by ${name}`);
        abort.abort(new DOMException(`Stopped by ${name}`, "AbortError"));
        timer = setTimeout(finish, options.graceMs ?? 2000);
      };
      Deno.addSignalListener(name, handler);
      return [name, handler] as const;
    },
  );
  let listening = true;
  function unlisten(): void {
    if (!listening) return;
    listening = false;
    for (const [name, handler] of handlers) {
      Deno.removeSignalListener(name, handler);
    }
  }
  return {
    signal: abort.signal,
    get stoppedBy() {
      return stoppedBy;
    },
    finish,
    [Symbol.dispose]() {
      if (stoppedBy !== undefined) return finish();
      unlisten();
    },
  };
}
