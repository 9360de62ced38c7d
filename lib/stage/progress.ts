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

/** Creates the progress display for `mode`. */
export function createProgress(
  mode: ProgressMode = "auto",
  options: ProgressOptions = {},
): Progress {
  const now = options.now ?? (() => performance.now());
  const line = options.line ?? ((text: string) => log.info(text));
  const encoder = new TextEncoder();
  const write = options.write ??
    ((text: string) => Deno.stderr.writeSync(encoder.encode(text)));
  const terminal = options.isTerminal ?? safeIsTerminal();
  const effective = mode === "auto" ? (terminal ? "tty" : "lines") : mode;

  const bars: Bar[] = [];
  let drawn = 0;
  let lastDraw = -Infinity;

  function render(force: boolean): void {
    const t = now();
    if (!force && t - lastDraw < 100) return;
    lastDraw = t;
    const columns = safeColumns();
    let text = drawn > 0 ? `\x1b[${drawn}A` : "";
    const width = Math.min(
      24,
      Math.max(...bars.map((bar) => bar.label.length)),
    );
    for (const bar of bars) {
      text += "\r\x1b[2K" + barLine(bar, t, columns, width) + "\n";
    }
    drawn = bars.length;
    write(text);
  }

  /** Erases the drawn block (the cursor ends where it began). */
  function erase(): void {
    if (drawn > 0) write(`\x1b[${drawn}A\r\x1b[J`);
    drawn = 0;
  }

  /** Removes a bar and erases the drawn block. */
  function retire(bar: Bar): void {
    const index = bars.indexOf(bar);
    if (index >= 0) bars.splice(index, 1);
    erase();
    if (bars.length === 0) setLineWrapper(undefined);
  }

  /** Log lines written while bars are shown go above them, not through them. */
  function wrapLogLines(emit: () => void): void {
    erase();
    emit();
    if (bars.length) render(true);
  }

  function summary(bar: Bar, size: number, sha256: string): string {
    const seconds = Math.max((now() - bar.start) / 1000, 0.001);
    return `${bar.label}: ${formatBytes(size)} in ${seconds.toFixed(1)} s (${
      formatBytes(size / seconds)
    }/s), sha256 ${sha256}`;
  }

  return {
    track(label: string): ProgressTracker {
      // The label may carry a name from the script: the bars are written to
      // the terminal directly, so no escape sequence may reach it raw.
      const bar: Bar = { label: escapeControls(label), bytes: 0, start: now() };
      if (effective === "none") {
        return { update() {}, finish() {}, fail() {} };
      }
      if (effective === "tty") {
        bars.push(bar);
        setLineWrapper(wrapLogLines);
        render(true);
        return {
          update(bytes, total) {
            bar.bytes = bytes;
            bar.total = total;
            render(false);
          },
          finish({ size, sha256 }) {
            // The summary goes above the bars still running.
            retire(bar);
            line(summary(bar, size, sha256));
            if (bars.length) render(true);
          },
          fail() {
            retire(bar);
            if (bars.length) render(true);
          },
        };
      }
      let lastLine = bar.start;
      let lastDecile = 0;
      line(`${label}: downloading`);
      return {
        update(bytes, total) {
          const t = now();
          const decile = total ? Math.floor(bytes * 10 / total) : 0;
          // The summary line follows a complete download: no "100%" line.
          if (total && bytes >= total) return;
          if ((total && decile > lastDecile) || t - lastLine >= 10_000) {
            lastDecile = Math.max(lastDecile, decile);
            lastLine = t;
            const seconds = Math.max((t - bar.start) / 1000, 0.001);
            const pct = total ? ` (${Math.floor(bytes * 100 / total)}%)` : "";
            const of = total ? ` of ${formatBytes(total)}` : "";
            line(
              `${label}: ${formatBytes(bytes)}${of}${pct}, ${
                formatBytes(bytes / seconds)
              }/s`,
            );
          }
        },
        finish({ size, sha256 }) {
          line(summary(bar, size, sha256));
        },
        fail() {},
      };
    },
  };
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
