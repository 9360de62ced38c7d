/**
 * The pure half of `deno task mutate` (dev/mutate.ts): turns StrykerJS's JSON
 * report of one module into mutants with stable ids, applies the list of
 * accepted (equivalent or deliberately unpinned) mutants, scores the module
 * and renders the text report and the results section of docs/mutation.md.
 *
 * A mutant's id is a hash of what the mutant is, not of where it sits: the
 * module, the mutator, the replaced code, the replacement and the text of the
 * line it starts on, plus its rank among identical mutants. An edit elsewhere
 * in the file keeps it; an edit of that line makes a new mutant, reviewed anew.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** A mutant's outcome as StrykerJS names it (mutation-testing-report-schema). */
export type MutantStatus =
  | "Killed"
  | "Survived"
  | "Timeout"
  | "NoCoverage"
  | "CompileError"
  | "RuntimeError"
  | "Ignored"
  | "Pending";

/** A position in a source file, both 1-based, as StrykerJS reports it. */
export interface Position {
  /** Line, from 1. */
  line: number;
  /** Column, from 1. */
  column: number;
}

/** The part of StrykerJS's JSON report (`reporters: ["json"]`) read here. */
export interface StrykerReport {
  /** Mutated files by path relative to the project root. */
  files: Record<string, {
    source: string;
    mutants: {
      mutatorName: string;
      replacement?: string;
      status: MutantStatus;
      location: { start: Position; end: Position };
    }[];
  }>;
}

/** One mutant of a module, with its stable id. */
export interface Mutant {
  /** Stable id: 10 hex digits (see the module comment). */
  id: string;
  /** Module path relative to the repository root. */
  file: string;
  /** Where the replaced code starts. */
  line: number;
  /** Column (1-based) where the replaced code starts. */
  column: number;
  /** StrykerJS mutator, e.g. `EqualityOperator`. */
  mutator: string;
  /** The replaced code. */
  original: string;
  /** What replaced it. */
  replacement: string;
  /** The outcome. */
  status: MutantStatus;
}

/** An entry of dev/mutation_accepted.json. */
export interface AcceptedMutant {
  /** The mutant's stable id. */
  id: string;
  /** The module the mutant is in (stale entries are reported per module). */
  module: string;
  /** The mutation, for the reader. */
  mutant?: string;
  /** Why no test should kill it: equivalent, or what pinning it would cost. */
  reason: string;
}

/** One module's run, as kept in dev/mutation_results/. */
export interface ModuleRun {
  /** Module path relative to the repository root. */
  module: string;
  /** The test files run against every mutant. */
  tests: string[];
  /** When the run ended (ISO 8601). */
  date: string;
  /** Wall time of the run in seconds. */
  seconds: number;
  /** One line naming the machine. */
  machine: string;
  /** Every mutant and its outcome. */
  mutants: Mutant[];
}

/** A run's mutants sorted by what they mean for the score. */
export interface Score {
  /** Detected: a test failed (Killed) or the tests hung (Timeout). */
  killed: number;
  /** Of those, how many by timeout. */
  timeout: number;
  /** Not detected and not accepted: each one a gap or a new entry for the accepted list. */
  survived: Mutant[];
  /** Not detected, but listed as equivalent or accepted, with the reason. */
  accepted: (Mutant & { reason: string })[];
  /** Mutants that did not load (CompileError, RuntimeError, Ignored): outside the score. */
  invalid: number;
  /** killed / (killed + survived), in percent; 100 when nothing counts. */
  percent: number;
}

function offsetOf(lineStarts: number[], pos: Position): number {
  return lineStarts[pos.line - 1] + pos.column - 1;
}

function hash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 10);
}

/** The mutants of `file` in a StrykerJS report, in source order, with stable ids. */
export function mutantsOf(report: StrykerReport, file: string): Mutant[] {
  const entry = report.files[file];
  if (!entry) return [];
  const lines = entry.source.split("\n");
  const lineStarts: number[] = [];
  let at = 0;
  for (const line of lines) {
    lineStarts.push(at);
    at += line.length + 1;
  }
  const sorted = [...entry.mutants].sort((a, b) =>
    a.location.start.line - b.location.start.line ||
    a.location.start.column - b.location.start.column
  );
  const seen = new Map<string, number>();
  return sorted.map((m) => {
    const { start, end } = m.location;
    const original = entry.source.slice(
      offsetOf(lineStarts, start),
      offsetOf(lineStarts, end),
    );
    const replacement = m.replacement ?? "";
    const key = [
      file,
      m.mutatorName,
      original,
      replacement,
      lines[start.line - 1].trim(),
    ].join("\0");
    const rank = seen.get(key) ?? 0;
    seen.set(key, rank + 1);
    return {
      id: hash(`${key}\0${rank}`),
      file,
      line: start.line,
      column: start.column,
      mutator: m.mutatorName,
      original,
      replacement,
      status: m.status,
    };
  });
}

/** Scores mutants against the accepted list (id → reason). */
export function score(
  mutants: Mutant[],
  accepted: ReadonlyMap<string, string>,
): Score {
  const result: Score = {
    killed: 0,
    timeout: 0,
    survived: [],
    accepted: [],
    invalid: 0,
    percent: 100,
  };
  for (const m of mutants) {
    if (m.status === "Killed" || m.status === "Timeout") {
      result.killed++;
      if (m.status === "Timeout") result.timeout++;
    } else if (m.status === "Survived" || m.status === "NoCoverage") {
      const reason = accepted.get(m.id);
      if (reason === undefined) result.survived.push(m);
      else result.accepted.push({ ...m, reason });
    } else {
      result.invalid++;
    }
  }
  const counted = result.killed + result.survived.length;
  if (counted > 0) result.percent = (100 * result.killed) / counted;
  return result;
}

/**
 * Parses dev/mutation_accepted.json: an array of {@linkcode AcceptedMutant}.
 * Throws on an entry without a well-formed id, a module or a reason, and on
 * an id listed twice.
 */
export function parseAccepted(text: string): AcceptedMutant[] {
  const list = JSON.parse(text) as unknown;
  if (!Array.isArray(list)) {
    throw new Error("the accepted list is not an array");
  }
  const ids = new Set<string>();
  for (const item of list as Partial<AcceptedMutant>[]) {
    if (
      typeof item?.id !== "string" || !/^[0-9a-f]{10}$/.test(item.id) ||
      typeof item.module !== "string" ||
      typeof item.reason !== "string" || item.reason.trim() === ""
    ) {
      throw new Error(
        `accepted entry ${
          JSON.stringify(item)
        } needs an id, a module and a reason`,
      );
    }
    if (ids.has(item.id)) throw new Error(`accepted twice: ${item.id}`);
    ids.add(item.id);
  }
  return list as AcceptedMutant[];
}

/** The accepted list as id → reason, the form {@linkcode score} takes. */
export function acceptedReasons(
  list: AcceptedMutant[],
): Map<string, string> {
  return new Map(list.map((a) => [a.id, a.reason]));
}

/** Accepted entries for `run`'s module that match none of its mutants (the code changed: review them). */
export function staleAccepted(
  run: ModuleRun,
  list: AcceptedMutant[],
): AcceptedMutant[] {
  const ids = new Set(run.mutants.map((m) => m.id));
  return list.filter((a) => a.module === run.module && !ids.has(a.id));
}

/** The mutation in one line: `EqualityOperator: a > b → a >= b`. */
export function describeMutant(m: Mutant, width = 140): string {
  const flat = (s: string) => s.replace(/\s+/g, " ").trim();
  const clip = (s: string) => s.length > 60 ? `${s.slice(0, 57)}...` : s;
  const text = `${m.mutator}: ${clip(flat(m.original))} → ${
    clip(flat(m.replacement))
  }`;
  return text.length > width ? `${text.slice(0, width - 3)}...` : text;
}

function percent(s: Score): string {
  return `${s.percent.toFixed(1)}%`;
}

/** The console report: one summary line per module, then every survivor. */
export function renderText(
  runs: ModuleRun[],
  list: AcceptedMutant[],
): string {
  const accepted = acceptedReasons(list);
  const out: string[] = [];
  let killed = 0, survived = 0;
  for (const run of runs) {
    const s = score(run.mutants, accepted);
    killed += s.killed;
    survived += s.survived.length;
    out.push(
      `${run.module}: ${
        percent(s)
      } (${s.killed} killed incl. ${s.timeout} by timeout, ${s.survived.length} survived, ${s.accepted.length} equivalent-accepted, ${s.invalid} invalid) in ${
        Math.round(run.seconds)
      } s`,
    );
    for (const m of s.survived) {
      out.push(
        `  survived ${m.file}:${m.line}:${m.column} [${m.id}] ${
          describeMutant(m)
        }`,
      );
    }
    for (const a of staleAccepted(run, list)) {
      out.push(
        `  stale accepted entry [${a.id}] ${
          a.mutant ?? ""
        }: no such mutant now`,
      );
    }
  }
  const total = killed + survived;
  if (runs.length > 1) {
    out.push(
      `all: ${
        total ? (100 * killed / total).toFixed(1) : "100.0"
      }% (${killed} killed, ${survived} survived)`,
    );
  }
  return out.join("\n");
}

/** A run's wall time: `42 s`, `3 min 05 s`. */
export function duration(seconds: number): string {
  const total = Math.round(seconds);
  if (total < 60) return `${total} s`;
  return `${Math.floor(total / 60)} min ${
    String(total % 60).padStart(2, "0")
  } s`;
}

function cell(text: string): string {
  return text.replace(/[\\|*_]/g, "\\$&").replace(/`/g, "'");
}

/** The results section of docs/mutation.md (between its markers). */
export function renderMarkdown(
  runs: ModuleRun[],
  list: AcceptedMutant[],
): string {
  const accepted = acceptedReasons(list);
  const out = [
    "| Module | Tests run per mutant | Mutants | Killed | Survived | Equivalent-accepted | Invalid | Score | Time | Date |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  const rest: string[] = [];
  const machines = new Set<string>();
  for (const run of runs) {
    const s = score(run.mutants, accepted);
    machines.add(run.machine);
    const tests = run.tests.map((t) => t.replace(/^tests\//, "")).join(", ");
    out.push(
      `| \`${run.module}\` | ${tests} | ${run.mutants.length} | ${s.killed} | ${s.survived.length} | ${s.accepted.length} | ${s.invalid} | ${
        percent(s)
      } | ${duration(run.seconds)} | ${run.date.slice(0, 10)} |`,
    );
    for (const m of s.survived) {
      rest.push(
        `- survived \`${m.file}:${m.line}\` \`${m.id}\` ${
          cell(describeMutant(m))
        }`,
      );
    }
    for (const m of s.accepted) {
      rest.push(
        `- accepted \`${m.file}:${m.line}\` \`${m.id}\` ${
          cell(describeMutant(m))
        }: ${m.reason}`,
      );
    }
  }
  const head = [...machines].map((m) => `Machine: ${m}.`);
  const all = runs.map((r) => score(r.mutants, accepted));
  const killed = all.reduce((n, s) => n + s.killed, 0);
  const counted = killed + all.reduce((n, s) => n + s.survived.length, 0);
  const seconds = runs.reduce((n, r) => n + r.seconds, 0);
  const total = `All ${runs.length} modules: ${
    counted ? (100 * killed / counted).toFixed(1) : "100.0"
  }% of the non-equivalent mutants killed (${killed} of ${counted}), in ${
    duration(seconds)
  }.`;
  return [
    ...head,
    "",
    ...out,
    "",
    total,
    "",
    ...(rest.length ? rest : ["No survivor."]),
  ].join("\n");
}
