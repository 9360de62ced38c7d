/**
 * The `--insecure` transport (curl) gives the same answers as the verified one
 * (fetch) to whatever a server writes: the body is exactly what the server
 * sent for the resource (never a trailer, never a head), checked against its
 * `Content-Length`; an ambiguous or broken head (two lengths that disagree, a
 * length beside `Transfer-Encoding`, a status of 999) is a one-line refusal;
 * and the URL that answered after a redirect is the base of relative URLs.
 * Both transports download the same hand-written answers from a raw TLS
 * server (`dev/raw_server.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startRawServer } from "../../dev/raw_server.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { createClient } from "../../lib/http/client.ts";
import type { HttpClient } from "../../lib/http/request.ts";
import { PolicyError, request } from "../../lib/http/request.ts";
import { createScriptClient } from "../../lib/resolve/infraenv.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import { download } from "../../lib/stage/download.ts";
import {
  captureLog,
  kexecPlan,
  makeTestCerts,
  withTemp,
} from "../test_util.ts";

const BODY = "the bytes of the resource, and nothing else\n";

function sha(text: string | Uint8Array): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The two transports, trusting the test CA (fetch) or nothing (curl). */
async function clients(dir: string): Promise<[string, HttpClient][]> {
  const ca = await Deno.readTextFile(`${dir}/ca.pem`);
  const [[verified, insecure]] = await captureLog(() =>
    Promise.resolve([
      createClient({ caCerts: [ca], systemCerts: [] })!,
      createClient({ insecure: true })!,
    ])
  );
  return [["fetch", verified], ["curl --insecure", insecure]];
}

/** The answers both transports must take as `BODY` exactly. */
const WHOLE: Record<string, string> = {
  "a plain answer":
    `HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
  "a chunked answer with a trailer (never part of the body)":
    `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n${
      BODY.length.toString(16)
    }\r\n${BODY}\r\n0\r\nX-Checksum: HTTP/1.1 404 Not Found\r\n\r\n`,
  "a head with LF-only lines":
    `HTTP/1.1 200 OK\nContent-Length: ${BODY.length}\n\n${BODY}`,
  "a 100 Continue before the answer":
    `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
  "the same length twice":
    `HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
};

/** The answers both transports must refuse: nothing is ever taken as whole. */
const REFUSED: Record<string, [string, RegExp]> = {
  "two lengths that disagree (a truncated body passing for whole)": [
    `HTTP/1.1 200 OK\r\nContent-Length: 20000\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
    /Content-Length|content-length/,
  ],
  "a length beside Transfer-Encoding": [
    `HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n${
      BODY.length.toString(16)
    }\r\n${BODY}\r\n0\r\n\r\n`,
    /Transfer-Encoding|content-length|Content-Length/i,
  ],
  "a body shorter than its length": [
    `HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length + 100}\r\n\r\n${BODY}`,
    /./,
  ],
  "a status of 999": [
    `HTTP/1.1 999 Odd\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`,
    /./,
  ],
  "a 404 (never a 200)": [
    `HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found`,
    /HTTP 404/,
  ],
};

Deno.test("--insecure (curl) and fetch download the same bytes from the same answers, and refuse the same broken ones", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const tls = {
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    };
    let answer = "";
    const server = await startRawServer({ tls, answer: () => answer });
    const transports = await clients(dir);
    try {
      for (const [label, client] of transports) {
        for (const [what, text] of Object.entries(WHOLE)) {
          answer = text;
          const [result] = await captureLog(() =>
            download(`${server.origin}/file`, `${dir}/out`, {
              client,
              retries: 0,
              timeoutMs: 5000,
            })
          );
          assert.equal(result.sha256, sha(BODY), `${label}: ${what}`);
          assert.equal(
            await Deno.readTextFile(`${dir}/out`),
            BODY,
            `${label}: ${what}`,
          );
        }
        for (const [what, [text, pattern]] of Object.entries(REFUSED)) {
          answer = text;
          const [err] = await captureLog(() =>
            download(`${server.origin}/file`, `${dir}/bad`, {
              client,
              retries: 0,
              timeoutMs: 5000,
            }).then(() => undefined, (e) => e)
          );
          assert.ok(
            err instanceof BootError,
            `${label}: ${what}: ${err?.stack ?? "no error"}`,
          );
          assert.equal(err.exitCode, ExitCode.Download, `${label}: ${what}`);
          assert.match(err.message, pattern, `${label}: ${what}`);
          assert.ok(!err.message.includes("\n"), err.message);
          assert.ok(!/RangeError|curl exited/.test(err.message), err.message);
          await assert.rejects(Deno.lstat(`${dir}/bad`), Deno.errors.NotFound);
        }
      }
    } finally {
      for (const [, client] of transports) client.close();
      await server.close();
    }
  });
});

Deno.test("request: conflicting lengths and a length beside Transfer-Encoding are policy refusals, tried once", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const tls = {
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    };
    const server = await startRawServer({
      tls,
      answer: () =>
        `HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    });
    const transports = await clients(dir);
    try {
      for (const [label, client] of transports) {
        await captureLog(() =>
          assert.rejects(
            request(`${server.origin}/x`, { client }),
            (err: unknown) =>
              err instanceof PolicyError &&
              /both Transfer-Encoding and Content-Length, refused/.test(
                err.message,
              ),
            label,
          )
        );
      }
    } finally {
      for (const [, client] of transports) client.close();
      await server.close();
    }
  });
});

Deno.test("--insecure (curl): after a cross-origin redirect, relative URLs resolve against the server that answered", async () => {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    const tls = {
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    };
    const script = "#!ipxe\nkernel vmlinuz\ninitrd ../initrd.img\nboot\n";
    const second = await startRawServer({
      tls,
      answer: () =>
        `HTTP/1.1 200 OK\r\nContent-Length: ${script.length}\r\n\r\n${script}`,
    });
    const first = await startRawServer({
      tls,
      answer: () =>
        `HTTP/1.1 302 Found\r\nLocation: ${second.origin}/dir/sub/boot.ipxe\r\nContent-Length: 0\r\n\r\n`,
    });
    const transports = await clients(dir);
    try {
      for (const [label, client] of transports) {
        const [response] = await captureLog(() =>
          request(`${first.origin}/start`, { client })
        );
        await response.body?.cancel();
        assert.equal(response.url, `${second.origin}/dir/sub/boot.ipxe`, label);
        const [plan] = await captureLog(() =>
          resolvePlan(
            createScriptClient({
              kind: "ipxe-url",
              url: `${first.origin}/start`,
            }, { client, retries: 0 }),
            { settings: {} },
          )
        );
        const kexec = kexecPlan(plan);
        assert.equal(kexec.kernel.url, `${second.origin}/dir/sub/vmlinuz`);
        assert.equal(kexec.initrds[0].url, `${second.origin}/dir/initrd.img`);
      }
    } finally {
      for (const [, client] of transports) client.close();
      await first.close();
      await second.close();
    }
  });
});
