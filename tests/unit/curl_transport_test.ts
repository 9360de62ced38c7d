/**
 * The `--insecure` transport against a scripted curl: a fake program that
 * writes a given head to stderr, a given body to stdout, then a given tail
 * (its error, its `--write-out` line) and exits with a given code. Real curl
 * never lies about its own transfer; the fake does, so every check the
 * transport makes of curl's output is seen refusing what it must refuse.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import type { HttpClient, SendInit } from "../../lib/http/request.ts";
import { curlTransport } from "../../lib/http/curl_transport.ts";
import { captureLog, fakeProgram, withPath, withTemp } from "../test_util.ts";

const URL_HTTPS = "https://images.example.test/boot/vmlinuz";

/** What the fake curl writes and how it ends. */
interface Script {
  /** Written to stderr first (the `--dump-header` head). */
  head: string;
  /** Written to stdout. */
  body?: string;
  /** Written to stderr after the body (curl's error, the write-out line). */
  tail?: string;
  /** Exit code. */
  code?: number;
}

/** The `--write-out` line real curl ends with. */
function wrote(status: number, size: number): string {
  return `\n@@assisted-bootloader-curl ${status} ${size}\n`;
}

/** A head with CRLF lines. */
function head(...lines: string[]): string {
  return lines.map((l) => `${l}\r\n`).join("") + "\r\n";
}

/**
 * Runs `fn` with an `--insecure` client whose curl follows `script`; the
 * fake records its arguments and its stdin (the `--config`) in `dir`.
 */
async function withCurl<T>(
  script: Script,
  fn: (client: HttpClient, dir: string) => Promise<T>,
): Promise<T> {
  return await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/head`, script.head);
    await Deno.writeTextFile(`${dir}/body`, script.body ?? "");
    await Deno.writeTextFile(`${dir}/tail`, script.tail ?? "");
    const curl = `${dir}/curl`;
    await Deno.writeTextFile(
      curl,
      `#!/bin/sh
[ "$1" = --version ] && exit 0
printf '%s\\n' "$@" > '${dir}/args'
cat > '${dir}/config'
cat '${dir}/head' >&2
cat '${dir}/body'
cat '${dir}/tail' >&2
exit ${script.code ?? 0}
`,
      { mode: 0o755 },
    );
    const plainSent: string[] = [];
    const [result] = await captureLog(async () => {
      const client = curlTransport({
        curl,
        plain: () => ({
          insecure: false,
          send: (url: string) => {
            plainSent.push(url);
            return Promise.resolve(new Response("plain"));
          },
          close: () => {},
          [Symbol.dispose]: () => {},
        }),
      });
      return await fn(client, dir);
    });
    return result;
  });
}

function init(extra: Partial<SendInit> = {}): SendInit {
  return {
    method: "GET",
    headers: new Headers(),
    signal: new AbortController().signal,
    ...extra,
  };
}

Deno.test("curl transport: a whole answer streams its body, with its status, headers and the URL that answered", async () => {
  await withCurl({
    head: head("HTTP/1.1 200 OK", "Content-Length: 5", 'ETag:  "v1"  '),
    body: "hello",
    tail: wrote(200, 5),
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    assert.equal(response.status, 200);
    assert.equal(response.url, URL_HTTPS);
    assert.equal(response.headers.get("etag"), '"v1"');
    assert.equal(await response.text(), "hello");
  });
});

Deno.test("curl transport: informational heads are skipped, LF-only lines and HTTP/2 status lines read, folded fields joined", async () => {
  await withCurl({
    head: "HTTP/1.1 100 Continue\n\nHTTP/2 200\nX-Long: one\n\ttwo\n\n",
    body: "abc",
    tail: wrote(200, 3),
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("x-long"), "one two");
    assert.equal(await response.text(), "abc");
  });
});

Deno.test("curl transport: the body is refused when it is shorter than Content-Length, or curl's account disagrees", async () => {
  const cases: [string, Script, RegExp][] = [
    [
      "short body",
      {
        head: head("HTTP/1.1 200 OK", "Content-Length: 10"),
        body: "hello",
        tail: wrote(200, 5),
      },
      /the body ended after 5 of 10 bytes/,
    ],
    [
      "no write-out line",
      { head: head("HTTP/1.1 200 OK"), body: "hello" },
      /curl's account of the transfer \(none\) is not the answer read \(HTTP 200, 5 bytes\)/,
    ],
    [
      "another final status",
      { head: head("HTTP/1.1 200 OK"), body: "hello", tail: wrote(404, 5) },
      /\(HTTP 404, 5 bytes\) is not the answer read \(HTTP 200, 5 bytes\)/,
    ],
    [
      "another size",
      { head: head("HTTP/1.1 200 OK"), body: "hello", tail: wrote(200, 7) },
      /\(HTTP 200, 7 bytes\) is not the answer read \(HTTP 200, 5 bytes\)/,
    ],
    [
      "curl failed after the body",
      {
        head: head("HTTP/1.1 200 OK", "Content-Length: 5"),
        body: "hello",
        tail: "curl: (56) Recv failure: Connection reset by peer\n" +
          wrote(200, 5),
        code: 56,
      },
      /^Error: curl: \(56\) Recv failure: Connection reset by peer$/,
    ],
    [
      "curl failed without a message",
      { head: head("HTTP/1.1 200 OK"), body: "x", tail: "", code: 23 },
      /^Error: curl exited with code 23$/,
    ],
  ];
  for (const [what, script, error] of cases) {
    await withCurl(script, async (client) => {
      const response = await client.send(URL_HTTPS, init());
      await assert.rejects(response.text(), error, what);
    });
  }
});

Deno.test("curl transport: heads that cannot be trusted are refused before any body", async () => {
  const cases: [string, string, RegExp][] = [
    [
      "conflicting lengths",
      head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"),
      /conflicting Content-Length headers \(5, 6\)/,
    ],
    [
      "a list of lengths that disagree",
      head("HTTP/1.1 200 OK", "Content-Length: 5, 6"),
      /conflicting Content-Length headers \(5, 6\)/,
    ],
    [
      "a length that is no number",
      head("HTTP/1.1 200 OK", "Content-Length: 5x"),
      /invalid Content-Length \(5x\)/,
    ],
    [
      "a status past 599",
      head("HTTP/1.1 600 Odd"),
      /invalid HTTP status 600/,
    ],
    [
      "a line without a colon",
      head("HTTP/1.1 200 OK", "NoColonHere"),
      /malformed header line "NoColonHere"/,
    ],
    [
      "a line starting with its colon",
      head("HTTP/1.1 200 OK", ": value"),
      /malformed header line ": value"/,
    ],
    [
      "a name Headers refuses",
      head("HTTP/1.1 200 OK", "Bad Name: x"),
      /invalid header "Bad Name"/,
    ],
    [
      "a head past 64 KiB",
      head("HTTP/1.1 200 OK", ...Array(700).fill(`X-Pad: ${"p".repeat(100)}`)),
      /the response head is too large/,
    ],
    [
      "one line past 64 KiB",
      head("HTTP/1.1 200 OK", `X-Pad: ${"p".repeat(70 * 1024)}`),
      /the response head is too large/,
    ],
  ];
  for (const [what, text, error] of cases) {
    await withCurl(
      { head: text, body: "hello", tail: wrote(200, 5) },
      async (client) => {
        await assert.rejects(client.send(URL_HTTPS, init()), error, what);
      },
    );
  }
});

Deno.test("curl transport: the same length twice, a status of 599 and a field's padding are fine", async () => {
  await withCurl({
    head: head("HTTP/1.1 599 Odd", "Content-Length: 2, 2", "X-A:\t padded \t"),
    body: "ok",
    tail: wrote(599, 2),
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    assert.equal(response.status, 599);
    assert.equal(response.headers.get("x-a"), "padded");
    assert.equal(await response.text(), "ok");
  });
});

Deno.test("curl transport: curl's own error before any head is the error, else its exit code", async () => {
  await withCurl({
    head: "curl: (7) Failed to connect to images.example.test port 443\n",
    code: 7,
  }, async (client) => {
    await assert.rejects(
      client.send(URL_HTTPS, init()),
      /^Error: curl: \(7\) Failed to connect to images\.example\.test port 443$/,
    );
  });
  await withCurl({ head: "", code: 6 }, async (client) => {
    await assert.rejects(
      client.send(URL_HTTPS, init()),
      /^Error: curl exited with code 6$/,
    );
  });
  // A head cut before its end is curl failing, not an answer.
  await withCurl(
    { head: "HTTP/1.1 200 OK\r\nX-A: 1\r\n", code: 18 },
    async (client) => {
      await assert.rejects(
        client.send(URL_HTTPS, init()),
        /^Error: curl exited with code 18$/,
      );
    },
  );
  // A status code of four digits is no status line.
  await withCurl(
    { head: "HTTP/1.1 2000 OK\r\n\r\n", code: 0 },
    async (client) => {
      await assert.rejects(
        client.send(URL_HTTPS, init()),
        /HTTP\/1\.1 2000 OK/,
      );
    },
  );
});

Deno.test("curl transport: HEAD, 204 and 304 answers have no body", async () => {
  for (
    const [status, method] of [[200, "HEAD"], [204, "GET"], [
      304,
      "GET",
    ]] as const
  ) {
    await withCurl({
      head: head(`HTTP/1.1 ${status} X`, "Content-Length: 99"),
      tail: wrote(status, 0),
    }, async (client) => {
      const response = await client.send(URL_HTTPS, init({ method }));
      assert.equal(response.status, status);
      assert.equal(response.body, null, `${method} ${status}`);
    });
  }
});

Deno.test("curl transport: the request goes to curl on stdin, quoted, never on its command line", async () => {
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "x",
    tail: wrote(200, 1),
  }, async (client, dir) => {
    const headers = new Headers({ authorization: 'Bearer a"b\\c' });
    const response = await client.send(
      `${URL_HTTPS}?token=secret`,
      init({
        method: "POST",
        headers,
        body: new URLSearchParams({ a: "1\n2" }),
      }),
    );
    await response.text();
    const config = await Deno.readTextFile(`${dir}/config`);
    assert.equal(
      config,
      `url = "${URL_HTTPS}?token=secret"\n` +
        `request = "POST"\n` +
        `data-binary = "a=1%0A2"\n` +
        `header = "authorization: Bearer a\\"b\\\\c"\n` +
        `header = "content-type: application/x-www-form-urlencoded;charset=UTF-8"\n` +
        `header = "user-agent: Deno"\n`,
    );
    const args = await Deno.readTextFile(`${dir}/args`);
    assert.doesNotMatch(args, /secret|Bearer/);
    // No ~/.curlrc (first), no redirects, https only, HTTP/1.1, no globbing,
    // the head on stderr, not a proxy's CONNECT answer, the request on stdin.
    const list = args.trim().split("\n");
    assert.equal(list[0], "--disable");
    for (
      const pair of [
        ["--max-redirs", "0"],
        ["--proto", "=https"],
        ["--dump-header", "/proc/self/fd/2"],
        ["--config", "-"],
      ]
    ) {
      const at = list.indexOf(pair[0]);
      assert.ok(at >= 0 && list[at + 1] === pair[1], pair.join(" "));
    }
    for (
      const flag of [
        "--insecure",
        "--http1.1",
        "--globoff",
        "--suppress-connect-headers",
        "--silent",
        "--show-error",
      ]
    ) {
      assert.ok(list.includes(flag), flag);
    }
  });
});

Deno.test("curl transport: a text body gets a text content type unless it has one, a HEAD writes nothing to stdout", async () => {
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "x",
    tail: wrote(200, 1),
  }, async (client, dir) => {
    await (await client.send(URL_HTTPS, init({ method: "PUT", body: "t\r\t" })))
      .text();
    assert.match(
      await Deno.readTextFile(`${dir}/config`),
      /^request = "PUT"\ndata-binary = "t\\r\\t"\nheader = "content-type: text\/plain;charset=UTF-8"\n/m,
    );
    const headers = new Headers({ "content-type": "application/json" });
    await (await client.send(
      URL_HTTPS,
      init({ method: "POST", headers, body: new TextEncoder().encode("{}") }),
    )).text();
    const config = await Deno.readTextFile(`${dir}/config`);
    assert.match(config, /^data-binary = "\{\}"$/m);
    assert.match(config, /^header = "content-type: application\/json"$/m);
    assert.doesNotMatch(config, /text\/plain/);
  });
  await withCurl({
    head: head("HTTP/1.1 200 OK", "Content-Length: 3"),
    tail: wrote(200, 0),
  }, async (client, dir) => {
    await client.send(URL_HTTPS, init({ method: "HEAD" }));
    const config = await Deno.readTextFile(`${dir}/config`);
    assert.match(config, /^head\noutput = "\/dev\/null"\n/m);
    assert.doesNotMatch(config, /request =/);
  });
});

Deno.test("curl transport: only https goes to curl; a request aborted before it starts runs nothing", async () => {
  await withCurl({ head: head("HTTP/1.1 200 OK") }, async (client, dir) => {
    const plain = await client.send("http://images.example.test/a", init());
    assert.equal(await plain.text(), "plain");
    await assert.rejects(Deno.stat(`${dir}/config`), Deno.errors.NotFound);
    const controller = new AbortController();
    controller.abort(new Error("stopped"));
    await assert.rejects(
      client.send(URL_HTTPS, init({ signal: controller.signal })),
      /stopped/,
    );
    await assert.rejects(Deno.stat(`${dir}/config`), Deno.errors.NotFound);
  });
});

Deno.test("curl transport: a curl that cannot run is a usage error naming it", () => {
  assert.throws(
    () =>
      curlTransport({
        curl: "/nonexistent/curl",
        plain: () => {
          throw new Error("not reached");
        },
      }),
    (err: unknown) =>
      err instanceof BootError && err.exitCode === ExitCode.Usage &&
      /--insecure needs curl, and \/nonexistent\/curl cannot be run/.test(
        err.message,
      ),
  );
});

/** A plain transport that must not be built. */
function noPlain(): HttpClient {
  throw new Error("not reached");
}

/** A plain transport that sends nothing. */
function fakePlain(): HttpClient {
  return {
    insecure: false,
    send: () => Promise.reject(new Error("not sent")),
    close: () => {},
    [Symbol.dispose]: () => {},
  };
}

/** Asserts that `fn` throws a usage error whose message is `message`. */
function usage(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.equal(err.message, message);
    return true;
  });
}

Deno.test("curl transport: curl is found only in absolute PATH entries: one in the working directory or a relative entry is never run", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const marker = `${dir}/ran`;
    // Builtins only: PATH holds no cat (their stdin is read to its end).
    const script = `while read -r _; do :; done; echo "$0" >> '${marker}'`;
    await fakeProgram(`${dir}/curl`, { script });
    await Deno.mkdir(`${dir}/bin`);
    await fakeProgram(`${dir}/bin/curl`, { script });
    await Deno.mkdir(`${dir}/abs`);
    const abs = await fakeProgram(`${dir}/abs/curl`, { script });
    const cwd = Deno.cwd();
    Deno.chdir(dir);
    try {
      await withPath("::.:bin:./bin", () =>
        usage(
          () => curlTransport({ plain: noPlain }),
          "--insecure needs curl, and curl cannot be run (Deno cannot skip TLS verification by itself)",
        ));
      await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
      // An absolute entry after them: that curl, by its path, for its
      // --version and for every request (this one gets no answer).
      await withPath(`.:bin:${dir}/abs`, async () => {
        const [client] = await captureLog(() =>
          Promise.resolve(curlTransport({ plain: fakePlain }))
        );
        await captureLog(() =>
          assert.rejects(
            client.send(URL_HTTPS, init()),
            /^Error: curl exited with code 0$/,
          )
        );
        client.close();
      });
      assert.equal(await Deno.readTextFile(marker), `${abs}\n${abs}\n`);
    } finally {
      Deno.chdir(cwd);
    }
  });
});

Deno.test("curl transport: a curl another user can change is a usage error naming it and why, never run", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const marker = `${dir}/ran`;
    const script = `echo "$0" >> '${marker}'`;
    await Deno.mkdir(`${dir}/open`);
    await Deno.chmod(`${dir}/open`, 0o777);
    await Deno.mkdir(`${dir}/good`);
    await fakeProgram(`${dir}/open/curl`, { script });
    await fakeProgram(`${dir}/good/curl`, { script });
    const wide = await fakeProgram(`${dir}/good/wide`, { script, mode: 0o757 });
    await withPath(`${dir}/open:${dir}/good`, () =>
      usage(
        () => curlTransport({ plain: noPlain }),
        `--insecure needs curl, and curl (${dir}/open/curl) is reached through ${dir}/open, writable by other users without the sticky bit (mode 0777): whoever can change it decides what this machine boots (chmod go-w ${dir}/open)`,
      ));
    usage(
      () => curlTransport({ curl: wide, plain: noPlain }),
      `--insecure needs curl, and ${wide} is writable by other users (mode 0757): whoever can change it decides what this machine boots (chmod go-w ${wide})`,
    );
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  });
});

Deno.test("curl transport: blank lines before the head are skipped; a line that only contains a status line is not one", async () => {
  await withCurl({
    head: "\r\n\n" + head("HTTP/1.1 200 OK", "X-A : v"),
    body: "ok",
    tail: wrote(200, 2),
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    assert.deepEqual([...response.headers], [["x-a", "v"]]);
    assert.equal(await response.text(), "ok");
  });
  await withCurl(
    { head: head("junk HTTP/1.1 200 OK"), code: 0 },
    async (client) => {
      await assert.rejects(
        client.send(URL_HTTPS, init()),
        /junk HTTP\/1\.1 200 OK/,
      );
    },
  );
});

Deno.test("curl transport: more heads that cannot be trusted", async () => {
  const long = "y".repeat(200);
  const cases: [string, string, RegExp][] = [
    [
      "a length with something after it",
      head("HTTP/1.1 200 OK", "Content-Length: 5, x"),
      /invalid Content-Length \(x\)$/,
    ],
    [
      "a length with something before it",
      head("HTTP/1.1 200 OK", "Content-Length: x5"),
      /invalid Content-Length \(x5\)$/,
    ],
    [
      "a carriage return inside a value",
      head("HTTP/1.1 200 OK", "X-A: a\rb"),
      /invalid header "X-A"$/,
    ],
    [
      "a folded line with no field before it",
      head("HTTP/1.1 200 OK", " continued"),
      /malformed header line " continued"$/,
    ],
    [
      "a long malformed line, quoted at most 80 characters",
      head("HTTP/1.1 200 OK", long),
      new RegExp(`malformed header line "${"y".repeat(80)}"$`),
    ],
    [
      "a long invalid name, quoted at most 80 characters",
      head("HTTP/1.1 200 OK", `${long} x: v`),
      new RegExp(`invalid header "${"y".repeat(80)}"$`),
    ],
  ];
  for (const [what, text, error] of cases) {
    await withCurl({ head: text, tail: wrote(200, 0) }, async (client) => {
      await assert.rejects(client.send(URL_HTTPS, init()), error, what);
    });
  }
});

Deno.test("curl transport: curl's message is its last 'curl: (N)' line, found among warnings, even without a final newline", async () => {
  await withCurl({
    head:
      "Warning: ignoring something\ncurl: (3) first\ncurl: (7) Failed to connect",
    code: 7,
  }, async (client) => {
    await assert.rejects(
      client.send(URL_HTTPS, init()),
      /^Error: curl: \(7\) Failed to connect$/,
    );
  });
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "x",
    tail: "Warning: a trailer\ncurl: (56) Recv failure\n" + wrote(200, 1),
    code: 56,
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    await assert.rejects(response.text(), /^Error: curl: \(56\) Recv failure$/);
  });
  // Its write-out line is never taken for a message.
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "x",
    tail: wrote(200, 1),
    code: 23,
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    await assert.rejects(response.text(), /^Error: curl exited with code 23$/);
  });
});

Deno.test("curl transport: only curl's last write-out line counts (a trailer cannot forge it)", async () => {
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "hello",
    // A trailer is dumped to stderr before curl's own line.
    tail: "\n@@assisted-bootloader-curl 200 5\n" + wrote(200, 7),
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    await assert.rejects(
      response.text(),
      /\(HTTP 200, 7 bytes\) is not the answer read/,
    );
  });
  for (
    const [line, whole] of [[" 200 5 \n", true], [" 200 5 x\n", false]] as const
  ) {
    await withCurl({
      head: head("HTTP/1.1 200 OK"),
      body: "hello",
      tail: `\n@@assisted-bootloader-curl${line}`,
    }, async (client) => {
      const body = (await client.send(URL_HTTPS, init())).text();
      if (whole) assert.equal(await body, "hello");
      else await assert.rejects(body, /\(none\) is not the answer read/);
    });
  }
  // What curl writes after the body is read up to 64 KiB: a write-out line
  // past that is not seen.
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "hello",
    tail: `${"n".repeat(100 * 1024)}\n${wrote(200, 5)}`,
  }, async (client) => {
    const response = await client.send(URL_HTTPS, init());
    await assert.rejects(response.text(), /\(none\) is not the answer read/);
  });
});

Deno.test("curl transport: request bodies: text quoted with its newlines, bytes as text, other types refused; a user agent of the caller's kept", async () => {
  await withCurl({
    head: head("HTTP/1.1 200 OK"),
    body: "x",
    tail: wrote(200, 1),
  }, async (client, dir) => {
    await (await client.send(
      URL_HTTPS,
      init({
        method: "POST",
        body: "a\nb",
        headers: new Headers({ "user-agent": "mine/1" }),
      }),
    )).text();
    const config = await Deno.readTextFile(`${dir}/config`);
    assert.match(config, /^data-binary = "a\\nb"$/m);
    assert.match(config, /^header = "user-agent: mine\/1"$/m);
    assert.doesNotMatch(config, /Deno/);
    await (await client.send(
      URL_HTTPS,
      init({ method: "POST", body: new TextEncoder().encode("b\n") }),
    )).text();
    assert.match(
      await Deno.readTextFile(`${dir}/config`),
      /^data-binary = "b\\n"$/m,
    );
    await assert.rejects(
      client.send(URL_HTTPS, init({ method: "POST", body: new Blob(["z"]) })),
      /^TypeError: this request body type is not supported with --insecure$/,
    );
  });
});

/** A fake curl that writes `head` (and `body`), then waits 20 s before exiting. */
async function withSlowCurl<T>(
  head: string,
  body: string,
  fn: (client: HttpClient) => Promise<T>,
): Promise<T> {
  return await withCurl({ head: "" }, async (client, dir) => {
    await Deno.writeTextFile(
      `${dir}/curl`,
      `#!/bin/sh
[ "$1" = --version ] && exit 0
cat > /dev/null
printf '%s' '${head}' >&2
printf '%s' '${body}'
exec sleep 20
`,
    );
    return await fn(client);
  });
}

Deno.test("curl transport: an abort stops curl at once, before or after its head", async () => {
  await withSlowCurl("", "", async (client) => {
    const controller = new AbortController();
    const started = performance.now();
    const sent = client.send(URL_HTTPS, init({ signal: controller.signal }));
    setTimeout(() => controller.abort(new Error("stopped")), 200);
    await assert.rejects(sent, /^Error: stopped$/);
    assert.ok(performance.now() - started < 10_000, "curl was not stopped");
  });
  await withSlowCurl("HTTP/1.1 200 OK\r\n\r\n", "part", async (client) => {
    const controller = new AbortController();
    const response = await client.send(
      URL_HTTPS,
      init({ signal: controller.signal }),
    );
    const started = performance.now();
    setTimeout(() => controller.abort(new Error("stopped")), 200);
    await assert.rejects(response.text(), /^Error: stopped$/);
    assert.ok(performance.now() - started < 10_000, "curl was not stopped");
  });
});

Deno.test("curl transport: a head line past 64 KiB that never ends is refused before curl ends", async () => {
  await withCurl({
    head: `HTTP/1.1 200 OK\r\nX-Pad: ${"p".repeat(200 * 1024)}`,
  }, async (client) => {
    await assert.rejects(
      client.send(URL_HTTPS, init()),
      /^Error: the response head is too large$/,
    );
  });
});

Deno.test("curl transport: which line of curl's stderr is its message", async () => {
  const cases: [string, string, number][] = [
    // The last line, without a newline, is still read.
    [
      "curl: (6) Could not resolve host: x",
      "curl: (6) Could not resolve host: x",
      6,
    ],
    // A warning first: the message is the line after it, not glued to it.
    ["Warning: x\ncurl: (7) Failed", "curl: (7) Failed", 7],
    // A note after it: the message is still the curl: (N) line.
    [
      "curl: (56) Recv failure\nsome trailing note\n",
      "curl: (56) Recv failure",
      56,
    ],
    // Only a line that starts with curl: (N) is one.
    ["curl: (7) Failed\nNote: curl: (9) quoted\n", "curl: (7) Failed", 7],
  ];
  for (const [stderr, message, code] of cases) {
    await withCurl({ head: stderr, code }, async (client) => {
      await assert.rejects(
        client.send(URL_HTTPS, init()),
        (err: Error) => err.message === message,
        JSON.stringify(stderr),
      );
    });
  }
});
