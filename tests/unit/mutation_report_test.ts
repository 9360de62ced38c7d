/**
 * The mutation run's report (dev/mutation_report.ts): ids that survive edits
 * elsewhere in a file, the score, the accepted list and what is printed.
 */
import assert from "node:assert/strict";
import {
  type AcceptedMutant,
  acceptedReasons,
  duration,
  type ModuleRun,
  mutantsOf,
  type MutantStatus,
  parseAccepted,
  renderMarkdown,
  renderText,
  score,
  type StrykerReport,
} from "../../dev/mutation_report.ts";

const SOURCE = [
  "export function f(a: number) {",
  "  if (a > 1) return a > 1;",
  "  return 0;",
  "}",
].join("\n");

/** A report of SOURCE (shifted down by `above` lines) with its mutants. */
function report(above = 0, status: MutantStatus = "Survived"): StrykerReport {
  const at = (line: number, column: number) => ({ line: line + above, column });
  return {
    files: {
      "lib/x.ts": {
        source: "// pad\n".repeat(above) + SOURCE,
        mutants: [
          // Listed out of order: ids are ranked in source order.
          {
            mutatorName: "EqualityOperator",
            replacement: "a >= 1",
            status: "Killed",
            location: { start: at(2, 21), end: at(2, 26) },
          },
          {
            mutatorName: "EqualityOperator",
            replacement: "a >= 1",
            status,
            location: { start: at(2, 7), end: at(2, 12) },
          },
          {
            mutatorName: "BlockStatement",
            replacement: "{}",
            status: "Timeout",
            location: { start: at(1, 30), end: at(4, 2) },
          },
        ],
      },
    },
  };
}

Deno.test("mutantsOf: the replaced code by 1-based position, ids kept when lines move and distinct for twins", () => {
  const mutants = mutantsOf(report(), "lib/x.ts");
  assert.deepEqual(
    mutants.map((m) => [m.line, m.column, m.original, m.status]),
    [
      [1, 30, "{\n  if (a > 1) return a > 1;\n  return 0;\n}", "Timeout"],
      [2, 7, "a > 1", "Survived"],
      [2, 21, "a > 1", "Killed"],
    ],
  );
  assert.ok(mutants.every((m) => /^[0-9a-f]{10}$/.test(m.id)));
  // Same mutation, same line: told apart by rank.
  assert.notEqual(mutants[1].id, mutants[2].id);
  const moved = mutantsOf(report(3), "lib/x.ts");
  assert.deepEqual(moved.map((m) => m.id), mutants.map((m) => m.id));
  assert.deepEqual(moved.map((m) => m.line), [4, 5, 5]);
  // Another replacement is another mutant.
  const other = report();
  other.files["lib/x.ts"].mutants[1].replacement = "a < 1";
  assert.notEqual(mutantsOf(other, "lib/x.ts")[1].id, mutants[1].id);
  assert.deepEqual(mutantsOf(report(), "lib/y.ts"), []);
});

Deno.test("score: killed and timeout detected, accepted survivors apart, invalid mutants outside the score", () => {
  const mutants = mutantsOf(report(), "lib/x.ts");
  const none = score(mutants, new Map());
  assert.equal(none.killed, 2);
  assert.equal(none.timeout, 1);
  assert.deepEqual(none.survived.map((m) => m.id), [mutants[1].id]);
  assert.equal(none.percent, 200 / 3);
  const accepted = score(mutants, new Map([[mutants[1].id, "equivalent"]]));
  assert.deepEqual(accepted.survived, []);
  assert.equal(accepted.accepted[0].reason, "equivalent");
  assert.equal(accepted.percent, 100);
  const invalid = score(
    mutantsOf(report(0, "RuntimeError"), "lib/x.ts"),
    new Map(),
  );
  assert.equal(invalid.invalid, 1);
  assert.equal(invalid.percent, 100);
  assert.equal(score([], new Map()).percent, 100);
});

Deno.test("parseAccepted: every entry needs a 10-digit id, a module and a reason; no id twice", () => {
  const good: AcceptedMutant = {
    id: "0123456789",
    module: "lib/x.ts",
    reason: "equivalent",
  };
  assert.deepEqual(parseAccepted(JSON.stringify([good])), [good]);
  assert.deepEqual(acceptedReasons([good]), new Map([[good.id, "equivalent"]]));
  for (
    const bad of [
      { ...good, id: "0123" },
      { ...good, reason: " " },
      { id: good.id, reason: "r" },
    ]
  ) {
    assert.throws(() => parseAccepted(JSON.stringify([bad])), /needs an id/);
  }
  assert.throws(() => parseAccepted(JSON.stringify([good, good])), /twice/);
  assert.throws(() => parseAccepted("{}"), /not an array/);
});

Deno.test("renderText and renderMarkdown: every survivor with file:line and id, accepted ones with the reason, stale entries named", () => {
  const mutants = mutantsOf(report(), "lib/x.ts");
  const run: ModuleRun = {
    module: "lib/x.ts",
    tests: ["tests/unit/x_test.ts"],
    date: "2026-01-02T03:04:05.000Z",
    seconds: 90,
    machine: "2 CPUs (test)",
    mutants,
  };
  const list: AcceptedMutant[] = [{
    id: "ffffffffff",
    module: "lib/x.ts",
    mutant: "gone",
    reason: "was equivalent",
  }];
  const text = renderText([run], list);
  assert.match(
    text,
    /^lib\/x\.ts: 66\.7% \(2 killed incl\. 1 by timeout, 1 survived, 0 equivalent-accepted, 0 invalid\) in 90 s$/m,
  );
  assert.match(
    text,
    new RegExp(
      `^  survived lib/x\\.ts:2:7 \\[${
        mutants[1].id
      }\\] EqualityOperator: a > 1 → a >= 1$`,
      "m",
    ),
  );
  assert.match(text, /stale accepted entry \[ffffffffff\] gone/);
  const accepted = [{ ...list[0], id: mutants[1].id }];
  const md = renderMarkdown([run], accepted);
  assert.match(md, /^Machine: 2 CPUs \(test\)\.$/m);
  assert.match(
    md,
    /^\| `lib\/x\.ts` \| unit\/x_test\.ts \| 3 \| 2 \| 0 \| 1 \| 0 \| 100\.0% \| 1 min 30 s \| 2026-01-02 \|$/m,
  );
  assert.match(
    md,
    /^All 1 modules: 100\.0% of the non-equivalent mutants killed \(2 of 2\), in 1 min 30 s\.$/m,
  );
  assert.deepEqual([0.4, 59.6, 60, 125, 3600].map(duration), [
    "0 s",
    "1 min 00 s",
    "1 min 00 s",
    "2 min 05 s",
    "60 min 00 s",
  ]);
  assert.match(
    md,
    new RegExp(
      `^- accepted \`lib/x\\.ts:2\` \`${mutants[1].id}\` .*: was equivalent$`,
      "m",
    ),
  );
  assert.match(renderMarkdown([run], []), /^- survived `lib\/x\.ts:2` /m);
  // Markdown's emphasis characters in code are escaped, not rendered.
  const starred = { ...mutants[1], original: "a*b_c|d", replacement: "x" };
  assert.match(
    renderMarkdown([{ ...run, mutants: [starred] }], []),
    /a\\\*b\\_c\\\|d → x$/m,
  );
});
