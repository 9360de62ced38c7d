/**
 * One-line error texts: a network error says its URL once and Deno's
 * wrapping not at all; a binary error body is not shown.
 */
import assert from "node:assert/strict";
import { bodyExcerpt, networkReason } from "../../lib/http/error_text.ts";
import { request } from "../../lib/http/request.ts";
import { download } from "../../lib/stage/download.ts";
import { fakeKernel } from "../../dev/mock_infraenv.ts";
import { withTemp } from "../test_util.ts";

/** A loopback port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("networkReason: a refused connection names neither the URL nor Deno's wrapping", async () => {
  const url = `http://127.0.0.1:${closedPort()}/k`;
  const err = await fetch(url).then(() => undefined, (e: unknown) => e);
  const reason = networkReason(err);
  assert.match(reason, /^fetch failed: .*Connection refused/, reason);
  assert.ok(!reason.includes("127.0.0.1"), reason);
  assert.ok(!/error sending request|client error/.test(reason), reason);
  // Through request(): the URL once, "fetch failed" once.
  const failed = await request(url, { timeoutMs: 5000 }).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  assert.ok(failed);
  assert.equal(failed.message.split("127.0.0.1").length - 1, 1, failed.message);
  assert.equal(
    failed.message.split("fetch failed").length - 1,
    1,
    failed.message,
  );
});

Deno.test("bodyExcerpt: text is shown (first line, bounded, redacted), binary is not", () => {
  assert.equal(bodyExcerpt("Not Found\nmore"), "Not Found");
  assert.equal(bodyExcerpt("x".repeat(500)).length, 120);
  assert.equal(bodyExcerpt("a\tb\r"), "a\tb");
  assert.equal(bodyExcerpt("MZ\u0000\u0000\u0000"), "");
  assert.equal(bodyExcerpt("\u001f\u008b\u0008"), "");
  assert.equal(bodyExcerpt("ok \ufffd\ufffd"), "");
  assert.equal(
    bodyExcerpt("size=1&api_key=SECRET1234"),
    "size=1&api_key=REDACTED",
  );
});

Deno.test("download: a 206 to a request for the whole file is one clean line, not its binary body", async () => {
  const kernel = fakeKernel(5000);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(kernel.slice() as Uint8Array<ArrayBuffer>, {
        status: 206,
        headers: { "content-range": "bytes 0-4999/5000" },
      }),
  );
  const url = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}/k`;
  try {
    await withTemp(async (dir) => {
      await assert.rejects(
        download(url, `${dir}/kernel`, { retries: 0, timeoutMs: 5000 }),
        (err: Error) => {
          assert.equal(err.message, `Cannot download ${url}: HTTP 206`);
          return true;
        },
      );
    });
  } finally {
    await server.shutdown();
  }
});
