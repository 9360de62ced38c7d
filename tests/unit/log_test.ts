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
  redactUrl,
  safeJson,
} from "../../lib/log.ts";
import { hasCredential, isCredentialParam } from "../../lib/credentials.ts";
import { isCacheable, isSignedUrl } from "../../lib/stage/artifact_url.ts";
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

Deno.test("redact: user:password@ whatever characters it holds", () => {
  for (
    const password of [
      "pa'ss",
      'pa"ss',
      "p<a>ss",
      "p%20ss",
      "p;a,s=s",
      "p:a:ss",
    ]
  ) {
    const line = redact(
      `fetching the iPXE script http://user:${password}@127.0.0.1:18081/script?x=1, then`,
    );
    assert.equal(
      line,
      "fetching the iPXE script http://REDACTED@127.0.0.1:18081/script?x=1, then",
      password,
    );
  }
});

Deno.test("redact: a credential parameter in any spelling a server decodes, its whole value, and the text after it intact", () => {
  const cases: [string, string][] = [
    [
      "plan: kernel http://h/k?api_key=SECRET1, 0 initrd(s)",
      "plan: kernel http://h/k?api_key=REDACTED, 0 initrd(s)",
    ],
    [
      "http://h/k?api%5Fkey=SECRET2&arch=x86_64",
      "http://h/k?api%5Fkey=REDACTED&arch=x86_64",
    ],
    ["http://h/k?image%5ftoken=SECRET3", "http://h/k?image%5ftoken=REDACTED"],
    ["http://h/k?%61pi_key=SECRET4#f", "http://h/k?%61pi_key=REDACTED#f"],
    ["http://h/k?API_KEY=SECRET5", "http://h/k?API_KEY=REDACTED"],
    ["http://h/k?a=1;token=SECRET6 next", "http://h/k?a=1;token=REDACTED next"],
    [
      "http://h/k?X-Amz-Signature=SECRET7&X-Amz-Date=1",
      "http://h/k?X-Amz-Signature=REDACTED&X-Amz-Date=1",
    ],
    ['http://h/k?api_key=SEC"RET8 rest', "http://h/k?api_key=REDACTED rest"],
    ["http://h/k?api_key=SEC'RET9, rest", "http://h/k?api_key=REDACTED, rest"],
    ['config: api_key="SEC RET10" rest', 'config: api_key="REDACTED" rest'],
    [
      "config: refresh_token='SEC RET11' rest",
      "config: refresh_token='REDACTED' rest",
    ],
    [
      '{"url":"http://h/k?api_key=SECRET12"}',
      '{"url":"http://h/k?api_key=REDACTED"}',
    ],
    [
      'Authorization: Bearer SEC"RET13, then',
      "Authorization: Bearer REDACTED, then",
    ],
    [
      "Authorization: Basic dXNlcjpwYXNz14 then",
      "Authorization: Basic REDACTED then",
    ],
    [
      '{"access_token":"SEC\\"RET15","x":1}',
      '{"access_token":"REDACTED","x":1}',
    ],
  ];
  for (const [text, expected] of cases) {
    assert.equal(redact(text), expected, text);
    assert.ok(!/SEC.?RET|SECRET/.test(redact(text)), text);
    // Redacting again changes nothing (log lines are redacted twice).
    assert.equal(redact(redact(text)), expected, text);
  }
  // Not credentials: other names, and names that only contain one.
  for (
    const text of [
      "http://h/k?tokens=1&my_api_key=2&arch=x86_64",
      "http://h/k?version=4.18&file_name=ipxe-script",
    ]
  ) {
    assert.equal(redact(text), text);
  }
});

Deno.test("redact and redactUrl: an URL cannot pass for another host in a log line", () => {
  // A URL parser reads "\" as "/" in http(s): the host is 127.0.0.1.
  assert.equal(
    redact("kernel http://127.0.0.1:18081\\@good.example.com/k"),
    "kernel http://127.0.0.1:18081/@good.example.com/k",
  );
  assert.equal(
    redact("http:\\\\evil.test\\@good.example.com/k"),
    "http://evil.test/@good.example.com/k",
  );
  assert.equal(
    new URL("http://127.0.0.1:18081\\@good.example.com/k").host,
    "127.0.0.1:18081",
  );
  assert.equal(
    redactUrl("http://127.0.0.1:18081\\@good.example.com/k"),
    "http://127.0.0.1:18081/@good.example.com/k",
  );
  // A look-alike host is shown as the host it is.
  assert.equal(
    redactUrl("http://\u0430pple.com/k"),
    "http://xn--pple-43d.com/k",
  );
  assert.equal(
    redactUrl("HTTP://u:p'w@H:80/./k?api%5Fkey=s3cret"),
    "http://REDACTED@h/k?api%5Fkey=REDACTED",
  );
  assert.equal(redactUrl("not a url?api_key=x"), "not a url?api_key=REDACTED");
});

Deno.test("credentials: the cache, the signed-URL refetch and the bearer scope share the redaction's notion of a credential", () => {
  const credentialed = [
    "http://h/k?api_key=v",
    "http://h/k?api%5Fkey=v",
    "http://h/k?%61pi_key=v",
    "http://h/k?IMAGE%5fTOKEN=v",
    "http://h/k?a=1;token=v",
    "http://h/k?X-Amz-Signature=v",
    "http://h/k?api+key=1&image_token=v",
    "http://u:p@h/k",
    "http://u@h/k",
  ];
  for (const url of credentialed) {
    assert.ok(hasCredential(url), url);
    assert.ok(isSignedUrl(url), url);
    assert.ok(!isCacheable(url), url);
    assert.notEqual(redact(url), url, `${url} is not redacted`);
  }
  for (
    const url of [
      "http://h/k",
      "http://h/k?arch=x86_64&version=4.18",
      "http://h/k?tokens=1",
      "http://h/k#api_key=v",
    ]
  ) {
    assert.ok(!hasCredential(url), url);
    assert.ok(isCacheable(url), url);
    assert.equal(redact(url), url);
  }
  assert.ok(isCredentialParam("Api%5FKey"));
  assert.ok(!isCredentialParam("api_keys"));
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
