/**
 * What reaches the terminal and the journal: control characters and escape
 * sequences from servers are neutralised, credentials in URLs are redacted,
 * one message is one line, and the JSON on stdout carries no raw control
 * character either.
 */
import assert from "node:assert/strict";
import {
  configureLog,
  escapeControls,
  log,
  redact,
  safeJson,
} from "../../lib/log.ts";
import { createProgress } from "../../lib/stage/progress.ts";

function captured(fn: () => void): string[] {
  const lines: string[] = [];
  configureLog({ sink: (l) => lines.push(l), level: "debug" });
  try {
    fn();
  } finally {
    configureLog({ level: "info", sink: (l) => console.error(l) });
  }
  return lines;
}

Deno.test("escapeControls: C0, DEL, C1, separators and bidi controls become visible escapes", () => {
  assert.equal(
    escapeControls("plain text, ünïcode ok"),
    "plain text, ünïcode ok",
  );
  assert.equal(
    escapeControls("\x1b[2J\x1b]0;pwned\x07red\r\n\t\x00\x7f"),
    "\\x1b[2J\\x1b]0;pwned\\x07red\\x0d\\x0a\\x09\\x00\\x7f",
  );
  assert.equal(escapeControls("8-bit CSI \x9b31m"), "8-bit CSI \\x9b31m");
  assert.equal(
    escapeControls("a\u2028b\u2029c\u202eevil\u2066d\u200f"),
    "a\\u{2028}b\\u{2029}c\\u{202e}evil\\u{2066}d\\u{200f}",
  );
});

Deno.test("log: a message is one line whatever a server put in it", () => {
  const lines = captured(() => {
    log.info(
      "script: hello\x1b[1A\x1b[2K\nassisted-bootloader: kernel verified\x9b0m",
    );
    log.error("HTTP 500: \u202egnp.lanimret\u202c");
  });
  assert.deepEqual(lines, [
    "assisted-bootloader: script: hello\\x1b[1A\\x1b[2K\\x0aassisted-bootloader: kernel verified\\x9b0m",
    "assisted-bootloader: error: HTTP 500: \\u{202e}gnp.lanimret\\u{202c}",
  ]);
  for (const line of lines) {
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x1f\x7f-\x9f\u202a-\u202e]/.test(line), line);
  }
});

Deno.test("redact: user:password@ in any URL, every scheme, the last @ of the authority", () => {
  assert.equal(
    redact("fetching http://admin:s3cret@h/boot.ipxe now"),
    "fetching http://REDACTED@h/boot.ipxe now",
  );
  assert.equal(
    redact("https://user@h:8443/x and ftp://a:b@c/d"),
    "https://REDACTED@h:8443/x and ftp://REDACTED@c/d",
  );
  assert.equal(redact("http://u:p@ss@h/x"), "http://REDACTED@h/x");
  assert.equal(redact("HTTP:user:pw@h/x"), "HTTP:REDACTED@h/x");
  assert.equal(redact('"http://u:p@h/"'), '"http://REDACTED@h/"');
  // Not credentials: an @ in the path or the query, or in plain text.
  assert.equal(redact("http://h/a@b?c=d@e"), "http://h/a@b?c=d@e");
  assert.equal(redact("mail admin@example.com"), "mail admin@example.com");
  const lines = captured(() =>
    log.warn("redirected to https://bob:hunter2@mirror.example/k")
  );
  assert.deepEqual(lines, [
    "assisted-bootloader: warn: redirected to https://REDACTED@mirror.example/k",
  ]);
});

Deno.test("safeJson: raw C1, separators and bidi controls are \\u escapes, and it parses back", () => {
  const value = { url: "http://h/\x9b31m\u2028\u202ex", n: 1, s: "\x1b[0m" };
  const text = safeJson(value);
  assert.ok(!/[\x7f-\x9f\u2028\u202e]/.test(text), text);
  // deno-lint-ignore no-control-regex
  assert.ok(!/\x1b/.test(text), text);
  assert.match(text, /\\u009b31m\\u2028\\u202ex/);
  assert.deepEqual(JSON.parse(text), value);
  assert.equal(safeJson({ a: 1 }), '{\n  "a": 1\n}');
});

Deno.test("progress bars: a label from the script cannot write escape sequences to the terminal", () => {
  const out: string[] = [];
  const progress = createProgress("tty", {
    write: (text) => out.push(text),
    line: () => {},
    isTerminal: true,
    now: () => 0,
  });
  const bar = progress.track("i\x1b]0;x\x07\x9b2J");
  bar.update(10, 100);
  bar.fail();
  const text = out.join("");
  assert.match(text, /i\\x1b\]0;x\\x07\\x9b2J/);
  // The bars' own cursor movements only: ESC [ n A, ESC [ J, ESC [ K.
  // deno-lint-ignore no-control-regex
  const escapes = text.match(/\x1b[^A-Za-z]*[A-Za-z]?/g) ?? [];
  for (const e of escapes) {
    // deno-lint-ignore no-control-regex
    assert.match(e, /^\x1b\[\d*[AJK]$/, JSON.stringify(e));
  }
});
