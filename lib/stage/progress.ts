/**
 * Download progress on stderr: a live bar per artifact on a terminal, or one
 * journal-friendly line per 10 % (or per 10 s) otherwise, and a final summary
 * line per artifact (size, sha256, time, throughput).
 *
 * @module
 */

import { escapeControls, log, setLineWrapper } from "../log.ts";

/** How progress is shown: `auto` picks `tty` when stderr is a terminal, else `lines`. */
export type ProgressMode = "auto" | "tty" | "lines" | "none";

/** What a download reports to its tracker. */
export interface ProgressTracker {
  /** Bytes on disk so far, and the total when known. */
  update(bytes: number, total?: number): void;
  /** The download finished and was verified. */
  finish(summary: { size: number; sha256: string }): void;
  /** The download failed (the bar stops). */
  fail(): void;
}

/** Options for {@linkcode createProgress}. */
export interface ProgressOptions {
  /** Raw terminal output for the bars (default: stderr). */
  write?: (text: string) => void;
  /** Line output for `lines` mode and summaries (default: `log.info`). */
  line?: (text: string) => void;
  /** Whether stderr is a terminal (default: asks the runtime). */
  isTerminal?: boolean;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/** Shows the progress of several concurrent downloads. */
export interface Progress {
  /** Starts tracking one artifact. */
  track(label: string): ProgressTracker;
}

/**
 * Formats a byte count (or a rate in bytes per second, which is rarely an
 * integer) for humans: whole bytes below 1 KiB, else binary units with one
 * decimal.
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  if (Math.round(bytes) < 1024) return `${Math.round(bytes)} B`;
  let value = bytes / 1024;
  let unit = 1;
  // Move up a unit once the rounded value would read 1024.0.
  while (value >= 1023.95 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "--:--";
  const total = Math.max(0, Math.round(s));
  const m = Math.floor(total / 60);
  return `${String(m).padStart(2, "0")}:${String(total % 60).padStart(2, "0")}`;
}

interface Bar {
  label: string;
  bytes: number;
  total?: number;
  start: number;
}

/** Where progress goes, and the clock it is timed by. */
interface Output {
  now: () => number;
  line: (text: string) => void;
  write: (text: string) => void;
}

/** Creates the progress display for `mode`. */
export function createProgress(
  mode: ProgressMode = "auto",
  options: ProgressOptions = {},
): Progress {
  const encoder = new TextEncoder();
  const out: Output = {
    now: options.now ?? (() => performance.now()),
    line: options.line ?? ((text: string) => log.info(text)),
    write: options.write ??
      ((text: string) => Deno.stderr.writeSync(encoder.encode(text))),
  };
  const terminal = options.isTerminal ?? safeIsTerminal();
  const effective = mode === "auto" ? (terminal ? "tty" : "lines") : mode;
  if (effective === "none") {
    return { track: () => ({ update() {}, finish() {}, fail() {} }) };
  }
  if (effective === "lines") {
    return { track: (label) => lineTracker(label, out) };
  }
  const bars = new TerminalBars(out);
  return { track: (label) => bars.track(label) };
}

function summary(
  bar: Bar,
  done: { size: number; sha256: string; now: number },
): string {
  const seconds = Math.max((done.now - bar.start) / 1000, 0.001);
  return `${bar.label}: ${formatBytes(done.size)} in ${seconds.toFixed(1)} s (${
    formatBytes(done.size / seconds)
  }/s), sha256 ${done.sha256}`;
}

/** One journal-friendly line per 10 % (or per 10 s), then the summary. */
function lineTracker(label: string, out: Output): ProgressTracker {
  const bar: Bar = { label: escapeControls(label), bytes: 0, start: out.now() };
  let lastLine = bar.start;
  let lastDecile = 0;
  out.line(`${label}: downloading`);
  return {
    update(bytes, total) {
      const t = out.now();
      const decile = total ? Math.floor(bytes * 10 / total) : 0;
      // The summary line follows a complete download: no "100%" line.
      if (total && bytes >= total) return;
      if ((total && decile > lastDecile) || t - lastLine >= 10_000) {
        lastDecile = Math.max(lastDecile, decile);
        lastLine = t;
        const seconds = Math.max((t - bar.start) / 1000, 0.001);
        const pct = total ? ` (${Math.floor(bytes * 100 / total)}%)` : "";
        const of = total ? ` of ${formatBytes(total)}` : "";
        out.line(
          `${label}: ${formatBytes(bytes)}${of}${pct}, ${
            formatBytes(bytes / seconds)
          }/s`,
        );
      }
    },
    finish({ size, sha256 }) {
      out.line(summary(bar, { size, sha256, now: out.now() }));
    },
    fail() {},
  };
}

/**
 * A live bar per running download, redrawn in place at most every 100 ms;
 * log lines written meanwhile go above the bars, not through them.
 */
class TerminalBars {
  readonly #out: Output;
  readonly #bars: Bar[] = [];
  #drawn = 0;
  #lastDraw = -Infinity;

  constructor(out: Output) {
    this.#out = out;
  }

  track(label: string): ProgressTracker {
    // The label may carry a name from the script: the bars are written to
    // the terminal directly, so no escape sequence may reach it raw.
    const bar: Bar = {
      label: escapeControls(label),
      bytes: 0,
      start: this.#out.now(),
    };
    this.#bars.push(bar);
    setLineWrapper((emit) => this.#wrapLogLine(emit));
    this.#render(true);
    return {
      update: (bytes, total) => {
        bar.bytes = bytes;
        bar.total = total;
        this.#render(false);
      },
      finish: ({ size, sha256 }) => {
        // The summary goes above the bars still running.
        this.#retire(bar);
        this.#out.line(summary(bar, { size, sha256, now: this.#out.now() }));
        if (this.#bars.length) this.#render(true);
      },
      fail: () => {
        this.#retire(bar);
        if (this.#bars.length) this.#render(true);
      },
    };
  }

  #render(force: boolean): void {
    const t = this.#out.now();
    if (!force && t - this.#lastDraw < 100) return;
    this.#lastDraw = t;
    const columns = safeColumns();
    let text = this.#drawn > 0 ? `\x1b[${this.#drawn}A` : "";
    const width = Math.min(
      24,
      Math.max(...this.#bars.map((bar) => bar.label.length)),
    );
    for (const bar of this.#bars) {
      text += "\r\x1b[2K" + barLine(bar, t, columns, width) + "\n";
    }
    this.#drawn = this.#bars.length;
    this.#out.write(text);
  }

  /** Erases the drawn block (the cursor ends where it began). */
  #erase(): void {
    if (this.#drawn > 0) this.#out.write(`\x1b[${this.#drawn}A\r\x1b[J`);
    this.#drawn = 0;
  }

  /** Removes a bar and erases the drawn block. */
  #retire(bar: Bar): void {
    const index = this.#bars.indexOf(bar);
    if (index >= 0) this.#bars.splice(index, 1);
    this.#erase();
    if (this.#bars.length === 0) setLineWrapper(undefined);
  }

  #wrapLogLine(emit: () => void): void {
    this.#erase();
    emit();
    if (this.#bars.length) this.#render(true);
  }
}

function barLine(
  bar: Bar,
  t: number,
  columns: number,
  labelWidth: number,
): string {
  const seconds = Math.max((t - bar.start) / 1000, 0.001);
  const rate = bar.bytes / seconds;
  const total = bar.total;
  const pct = total ? Math.min(1, bar.bytes / total) : 0;
  const eta = total && rate > 0 ? (total - bar.bytes) / rate : Infinity;
  const info = ` ${formatBytes(bar.bytes)}${
    total ? "/" + formatBytes(total) : ""
  } ${formatBytes(rate)}/s ETA ${formatSeconds(eta)}`.padEnd(INFO_WIDTH);
  const label = bar.label.length > labelWidth
    ? bar.label.slice(0, labelWidth - 1) + "…"
    : bar.label.padEnd(labelWidth);
  // label + " [" + bar + "] " + "100%" + info fits in columns - 1.
  const width = Math.max(10, columns - 1 - labelWidth - 8 - INFO_WIDTH);
  const filled = Math.round(pct * width);
  const gauge = total
    ? "[" + "#".repeat(filled) + "-".repeat(width - filled) + "] " +
      `${String(Math.floor(pct * 100)).padStart(3)}%`
    : "[" + " ".repeat(width) + "]     ";
  return `${label} ${gauge}${info}`.trimEnd();
}

/** Room kept for " 123.4 MiB/567.8 MiB 12.3 MiB/s ETA 00:00". */
const INFO_WIDTH = 42;

function safeIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function safeColumns(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}
