/**
 * The option table machinery (lib/config/option_table.ts) on a small table of
 * its own: flags, boolean words, values from `KEY=VALUE` pairs, layers and
 * `--help` rows. The bootloader's, the generator's and the image builder's
 * tables are tested through their own parsers.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  envName,
  firstSet,
  helpRows,
  type OptionTable,
  type OptionValues,
  parseFlags,
  readEnv,
  storeValue,
} from "../../lib/config/option_table.ts";

const TABLE: OptionTable = {
  "a-b": { kind: "string", arg: "X", help: "a string" },
  x: { kind: "boolean", short: "y", help: "a boolean" },
  l: { kind: "list", arg: "V", help: "a list", env: "THE_LIST" },
  help: { kind: "boolean", help: "help" },
};

function usage(message: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.equal(err.message, message);
    return true;
  };
}

Deno.test("parseFlags: long and short flags, repeated lists; errors end with one pointer to --help", () => {
  assert.deepEqual(
    { ...parseFlags(["-y", "--a-b", "v", "--l", "1", "--l", "2"], TABLE) },
    {
      x: true,
      "a-b": "v",
      l: ["1", "2"],
    },
  );
  assert.throws(
    () => parseFlags(["pos"], TABLE),
    usage('Unexpected argument "pos" (see --help)'),
  );
  assert.throws(
    () => parseFlags(["--a.b"], TABLE),
    usage("Unknown option '--a.b' (see --help)"),
  );
});

Deno.test("storeValue: boolean words in any case, a list appended, a missing value named", () => {
  const values: OptionValues = {};
  for (const word of ["1", "true", "TRUE", "Yes", "on", "ON"]) {
    storeValue(values, "x", "boolean", word, "X");
    assert.equal(values.x, true, word);
  }
  for (const word of ["0", "false", "False", "NO", "off", "Off", ""]) {
    storeValue(values, "x", "boolean", word, "X");
    assert.equal(values.x, false, JSON.stringify(word));
  }
  storeValue(values, "x", "boolean", undefined, "X");
  assert.equal(values.x, true, "no value at all");
  assert.throws(
    () => storeValue(values, "x", "boolean", "maybe", "X"),
    usage('X must be a boolean (1/0, true/false), got "maybe"'),
  );
  storeValue(values, "l", "list", "a", "L");
  storeValue(values, "l", "list", "b", "L");
  assert.deepEqual(values.l, ["a", "b"]);
  for (const kind of ["list", "string"] as const) {
    assert.throws(
      () => storeValue(values, "s", kind, undefined, "--s"),
      usage("--s needs a value"),
    );
  }
});

Deno.test("readEnv: derived and given names, a list split on any whitespace, empty and missing values, unknown names", () => {
  assert.equal(envName("a-b", TABLE["a-b"]), "A_B");
  assert.equal(envName("a-b", TABLE["a-b"], "P_"), "P_A_B");
  assert.equal(envName("l", TABLE.l, "P_"), "THE_LIST");
  // No prefix, no flagOnly, no normalizeKey.
  assert.deepEqual(
    readEnv([["A_B", "v"], ["HELP", "1"], ["THE_LIST", " a  b\tc "]], TABLE, {
      where: "variable",
    }),
    { "a-b": "v", help: true, l: ["a", "b", "c"] },
  );
  const unknown: string[] = [];
  const read = (
    pairs: [string, string | undefined][],
    emptyIsUnset = false,
  ) =>
    readEnv(pairs, TABLE, {
      where: "variable",
      prefix: "P_",
      flagOnly: ["help"],
      normalizeKey: (k) => k.toUpperCase(),
      onUnknown: (k) => unknown.push(k),
      emptyIsUnset,
    });
  assert.deepEqual(read([["p_a_b", "v"], ["P_X", "off"]]), {
    "a-b": "v",
    x: false,
  });
  assert.deepEqual(read([["P_HELP", "1"], ["OTHER", "1"], ["P_Y", "1"]]), {});
  assert.deepEqual(unknown, ["P_HELP", "P_Y"]);
  // A variable without a value is unset; an empty one only when asked.
  assert.deepEqual(read([["P_A_B", undefined], ["P_X", undefined]]), {});
  assert.deepEqual(read([["P_A_B", ""], ["P_X", ""]]), { "a-b": "", x: false });
  assert.deepEqual(read([["P_A_B", ""], ["P_X", ""]], true), {});
  assert.deepEqual(read([["P_A_B", "v"], ["P_X", "1"]], true), {
    "a-b": "v",
    x: true,
  });
  assert.throws(
    () => read([["P_X", "maybe"]]),
    usage('Variable P_X must be a boolean (1/0, true/false), got "maybe"'),
  );
});

Deno.test("firstSet: the first layer that sets an option wins; a layer that leaves it undefined does not", () => {
  assert.deepEqual(
    firstSet([{ x: true, "a-b": undefined }, { "a-b": "low", x: false }, {
      l: ["a"],
    }]),
    { x: true, "a-b": "low", l: ["a"] },
  );
});

Deno.test("helpRows: flag column 34 wide by default, an optional variable column", () => {
  assert.deepEqual(helpRows(TABLE), [
    `  ${"    --a-b X".padEnd(34)} a string`,
    `  ${"-y, --x".padEnd(34)} a boolean`,
    `  ${"    --l V".padEnd(34)} a list`,
    `  ${"    --help".padEnd(34)} help`,
  ]);
  assert.deepEqual(
    helpRows(TABLE, {
      flagWidth: 12,
      envWidth: 9,
      prefix: "P_",
      noEnv: (name) => name === "help" ? "-" : undefined,
    }),
    [
      `  ${"    --a-b X".padEnd(12)} ${"P_A_B".padEnd(9)} a string`,
      `  ${"-y, --x".padEnd(12)} ${"P_X".padEnd(9)} a boolean`,
      `  ${"    --l V".padEnd(12)} ${"THE_LIST".padEnd(9)} a list`,
      `  ${"    --help".padEnd(12)} ${"-".padEnd(9)} help`,
    ],
  );
  assert.equal(
    helpRows({ l: TABLE.l }, { envWidth: 0 })[0],
    `  ${"    --l V".padEnd(34)} THE_LIST a list`,
  );
});
