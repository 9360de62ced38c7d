/**
 * The resume rules (lib/stage/resume.ts) on answers built in memory: which
 * validators are kept (lib/http/entity.ts), when an attempt may resume, and where each answer's
 * bytes go, with the reason an answer is refused. download_test and
 * download_keep_part_test cover the same rules through real servers.
 */

import assert from "node:assert/strict";
import { contentLength, validators } from "../../lib/http/entity.ts";
import { HttpStatusError, NetworkError } from "../../lib/http/request.ts";
import { resumeFrom, startOf, type State } from "../../lib/stage/resume.ts";

const URL = "http://h/k";
const LM = "Wed, 01 Jan 2025 00:00:00 GMT";

function answer(
  status: number,
  headers: Record<string, string> = {},
  body: string | null = "x",
): Response {
  return new Response(body, { status, headers });
}

/** The state after a first answer of 10 bytes with `Accept-Ranges`, 5 of them on disk. */
function halfway(extra: Partial<State> = {}): State {
  return {
    have: 5,
    ranges: true,
    total: 10,
    resumed: false,
    etag: '"a"',
    lastModified: LM,
    ...extra,
  };
}

/** Expects `startOf` to refuse with a NetworkError whose message ends with `reason`. */
async function refused(
  response: Response,
  state: State,
  from: number,
  message: string,
): Promise<void> {
  await assert.rejects(startOf(response, state, from, URL), (err: unknown) => {
    assert.ok(err instanceof NetworkError, String(err));
    assert.equal(err.message, message);
    return true;
  });
}

Deno.test("validators: an ETag or Last-Modified is kept only when the whole value is well-formed", () => {
  const of = (headers: Record<string, string>) =>
    validators(answer(200, headers));
  assert.deepEqual(of({ etag: '"a"', "last-modified": LM }), {
    etag: '"a"',
    lastModified: LM,
  });
  assert.equal(of({ etag: 'W/"a"' }).etag, 'W/"a"');
  for (const etag of ['x"a"', '"a"x', "a", '"a b"']) {
    assert.equal(of({ etag }).etag, undefined, etag);
  }
  // A date that parses, but with a tab (not printable ASCII) inside.
  assert.equal(
    of({ "last-modified": "Wed,\t01 Jan 2025 00:00:00 GMT" }).lastModified,
    undefined,
  );
  assert.equal(of({ "last-modified": "yesterday" }).lastModified, undefined);
  // Blanks around a value are the header's, not the value's.
  assert.deepEqual(of({ etag: ' \t"a" ', "last-modified": ` ${LM}\t` }), {
    etag: '"a"',
    lastModified: LM,
  });
});

Deno.test("contentLength: digits only, else unknown", () => {
  assert.equal(contentLength(answer(200, { "content-length": "10" })), 10);
  assert.equal(contentLength(answer(200, { "content-length": " 10\t" })), 10);
  for (const value of ["x10", "10x", "1 0"]) {
    assert.equal(
      contentLength(answer(200, { "content-length": value })),
      undefined,
      value,
    );
  }
  assert.equal(contentLength(new Response(new ReadableStream())), undefined);
});

Deno.test("resumeFrom: only a part of a known length, short of it, with ranges and a validator", () => {
  assert.equal(resumeFrom(halfway(), true), 5);
  assert.equal(resumeFrom(halfway(), false), 0);
  assert.equal(resumeFrom(halfway({ have: 10 }), true), 0, "complete");
  assert.equal(resumeFrom(halfway({ have: 12 }), true), 0, "too long");
  assert.equal(resumeFrom(halfway({ ranges: false }), true), 0);
  assert.equal(resumeFrom(halfway({ total: undefined }), true), 0);
  assert.equal(
    resumeFrom(halfway({ etag: undefined, lastModified: undefined }), true),
    0,
  );
  // A weak ETag is no If-Range validator; the Last-Modified then is.
  assert.equal(resumeFrom(halfway({ etag: 'W/"a"' }), true), 5);
  assert.equal(
    resumeFrom(halfway({ etag: 'W/"a"', lastModified: undefined }), true),
    0,
  );
  // An earlier run's bytes: resumed whenever the caller may.
  assert.equal(resumeFrom(halfway({ leftover: true, have: 3 }), true), 3);
  assert.equal(resumeFrom(halfway({ leftover: true }), false), 0);
});

Deno.test("startOf: a 200 starts over and its length, ranges and validators become the state's", async () => {
  for (const leftover of [false, true]) {
    const state = halfway({ leftover, resumed: true });
    const from = await startOf(
      answer(200, { "content-length": "1", etag: '"b"' }),
      state,
      5,
      URL,
    );
    assert.equal(from, 0);
    assert.deepEqual(state, {
      have: 5,
      ranges: false,
      total: 1,
      resumed: false,
      leftover: false,
      etag: '"b"',
      lastModified: undefined,
    });
  }
  const ranged = halfway();
  await startOf(
    answer(200, { "accept-ranges": "bytes", "content-length": "1" }),
    ranged,
    0,
    URL,
  );
  assert.equal(ranged.ranges, true);
});

Deno.test("startOf: a 206 that is the rest of the same file goes on where asked", async () => {
  for (const range of ["bytes 5-9/10", "BYTES  5-9/10", "bytes 5-5/10"]) {
    const state = halfway();
    const from = await startOf(
      answer(206, { "content-range": range, etag: '"a"', "last-modified": LM }),
      state,
      5,
      URL,
    );
    assert.equal(from, 5, range);
    assert.equal(state.resumed, true);
  }
});

Deno.test("startOf: a 206 that is not the rest of the same file is refused with its reason; the next attempt starts over", async () => {
  const same = { etag: '"a"', "last-modified": LM };
  const cases: [Record<string, string>, string][] = [
    [{ ...same }, "no valid Content-Range"],
    [{ ...same, "content-range": "xbytes 5-9/10" }, "no valid Content-Range"],
    [{ ...same, "content-range": "bytes 5-9/10x" }, "no valid Content-Range"],
    [
      { ...same, "content-range": "bytes 6-9/10" },
      "it starts at byte 6, not 5",
    ],
    [
      { ...same, "content-range": "bytes 5-9/*" },
      "the file is now of unknown length, not 10 bytes",
    ],
    [
      { ...same, "content-range": "bytes 5-19/20" },
      "the file is now 20 bytes, not 10 bytes",
    ],
    [
      { ...same, "content-range": "bytes 5-4/10" },
      "its range 5-4 is not inside the file",
    ],
    [
      { ...same, "content-range": "bytes 5-10/10" },
      "its range 5-10 is not inside the file",
    ],
    [
      { "content-range": "bytes 5-9/10", "last-modified": LM },
      'its ETag changed ("a" → none)',
    ],
    [
      { "content-range": "bytes 5-9/10", etag: '"b"', "last-modified": LM },
      'its ETag changed ("a" → "b")',
    ],
    [
      { "content-range": "bytes 5-9/10", etag: '"a"' },
      `its Last-Modified changed (${LM} → none)`,
    ],
  ];
  for (const [headers, why] of cases) {
    const state = halfway();
    await refused(
      answer(206, headers),
      state,
      5,
      `${URL}: the answer to a resume is not the rest of the same file (${why}), starting over`,
    );
    assert.equal(state.ranges, false, why);
  }
  // What the first answer lacked, named as none.
  await refused(
    answer(206, {
      "content-range": "bytes 5-9/10",
      etag: '"a"',
      "last-modified": LM,
    }),
    halfway({ etag: undefined, lastModified: undefined }),
    5,
    `${URL}: the answer to a resume is not the rest of the same file (its ETag changed (none → "a")), starting over`,
  );
  await refused(
    answer(206, { "content-range": "bytes 5-9/10", "last-modified": LM }),
    halfway({ etag: undefined, lastModified: undefined }),
    5,
    `${URL}: the answer to a resume is not the rest of the same file (its Last-Modified changed (none → ${LM})), starting over`,
  );
  // Without a body to cancel, the same refusal.
  await refused(
    answer(206, {}, null),
    halfway(),
    5,
    `${URL}: the answer to a resume is not the rest of the same file (no valid Content-Range), starting over`,
  );
});

Deno.test("startOf: a 416 to a resume starts over; a 206 or 416 to a request from byte 0 is an HTTP error", async () => {
  for (const body of ["x", null]) {
    const state = halfway({ leftover: false });
    await refused(
      answer(416, {}, body),
      state,
      5,
      `${URL}: the server refused to resume (416), starting over`,
    );
    assert.equal(state.ranges, false);
    assert.equal(state.leftover, false);
  }
  for (const leftover of [false, true]) {
    for (const status of [206, 416]) {
      await assert.rejects(
        startOf(
          answer(status, { "content-range": "bytes 0-9/10" }),
          halfway({ leftover }),
          0,
          URL,
        ),
        (err: unknown) =>
          err instanceof HttpStatusError && err.status === status,
      );
    }
  }
});

Deno.test("startOf: an earlier run's bytes go on only under a Content-Range that starts there inside a known length", async () => {
  const state = halfway({
    leftover: true,
    ranges: false,
    total: undefined,
    etag: undefined,
    lastModified: undefined,
  });
  const from = await startOf(
    answer(206, { "content-range": "bytes 5-9/10", etag: '"n"' }),
    state,
    5,
    URL,
  );
  assert.equal(from, 5);
  assert.deepEqual(state, {
    have: 5,
    ranges: true,
    total: 10,
    resumed: true,
    leftover: false,
    etag: '"n"',
    lastModified: undefined,
  });
  // A range of one byte is a range.
  assert.equal(
    await startOf(
      answer(206, { "content-range": "bytes 5-5/6" }),
      halfway({ leftover: true }),
      5,
      URL,
    ),
    5,
  );
  for (
    const range of [
      undefined,
      "bytes 4-9/10",
      "bytes 5-9/*",
      "bytes 5-4/10",
      "bytes 5-10/10",
    ]
  ) {
    for (const body of ["x", null]) {
      const leftover = halfway({ leftover: true });
      await refused(
        answer(206, range ? { "content-range": range } : {}, body),
        leftover,
        5,
        `${URL}: the answer to the resume of an earlier run's bytes has no usable Content-Range, starting over`,
      );
      assert.equal(leftover.leftover, false, range);
    }
  }
});
