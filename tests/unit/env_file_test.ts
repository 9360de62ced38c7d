/**
 * The config file format: what formatEnvLine writes, parseEnvFile reads back
 * as exactly the value; what it cannot write is refused with one line.
 * (tests/integration/ignition_config_test.ts reads the same lines with
 * systemd's parser.)
 */

import assert from "node:assert/strict";
import {
  formatEnvLine,
  parseEnvFile,
  unwritableReason,
} from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  ENV_FILE_UNWRITABLE as UNWRITABLE,
  ENV_FILE_WRITABLE as WRITABLE,
} from "../test_util.ts";

Deno.test("env file: every writable value is read back unchanged", () => {
  for (const value of WRITABLE) {
    const line = formatEnvLine("ASSISTED_X", value);
    assert.ok(line.endsWith("\n") && line.indexOf("\n") === line.length - 1);
    const pairs = parseEnvFile(`# comment\n${line}ASSISTED_Y=after\n`, "f");
    assert.deepEqual(
      pairs,
      [["ASSISTED_X", value], ["ASSISTED_Y", "after"]],
      JSON.stringify(value),
    );
  }
  // Double quotes unless the value needs single ones.
  assert.equal(formatEnvLine("K", "a'b"), `K="a'b"\n`);
  assert.equal(formatEnvLine("K", 'a"b'), `K='a"b'\n`);
  assert.equal(formatEnvLine("K", "a\\b"), `K='a\\b'\n`);
});

Deno.test("env file: a value no line can carry is a one-line usage error naming it", () => {
  for (const value of UNWRITABLE) {
    assert.ok(unwritableReason(value), JSON.stringify(value));
    assert.throws(
      () => formatEnvLine("ASSISTED_X", value, "IPXE_URL"),
      (err: unknown) => {
        assert.ok(err instanceof BootError);
        assert.equal(err.exitCode, ExitCode.Usage);
        assert.match(
          err.message,
          /^IPXE_URL cannot be written to an environment file: /,
        );
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
  }
  for (const value of WRITABLE) {
    assert.equal(unwritableReason(value), undefined, JSON.stringify(value));
  }
  assert.throws(() => formatEnvLine("NOT-A-NAME", "x"), /not a variable name/);
});

Deno.test("parseEnvFile: blanks around a line and after export, quotes only when the same one opens and closes the value; a line that is not KEY=VALUE from start to end is refused", () => {
  assert.deepEqual(
    parseEnvFile(
      '  A=1  \n\tB=2\r\nexport  C=3\nexport\tD=4\nE=abca\nF=xx\nG="\nH="abc\nI=\'q\'\nJ=""\n',
      "f",
    ),
    [
      ["A", "1"],
      ["B", "2"],
      ["C", "3"],
      ["D", "4"],
      ["E", "abca"],
      ["F", "xx"],
      ["G", '"'],
      ["H", '"abc'],
      ["I", "q"],
      ["J", ""],
    ],
  );
  for (const line of ["junk A=1", "1A=1", "A=x\u2028y", "A=x\u2029y"]) {
    assert.throws(
      () => parseEnvFile(`# first\n${line}\n`, "/etc/f"),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Usage &&
        err.message === "Config file /etc/f line 2: expected KEY=VALUE",
      JSON.stringify(line),
    );
  }
});
