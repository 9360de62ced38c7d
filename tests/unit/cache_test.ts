/**
 * The artifact cache's parts that need no server: the reasons a kept copy is
 * stale, one entry written once when the same file is recorded twice at
 * once, the removal of half-written entries when a run is stopped, and
 * `--no-cache` emptying only a cache of ours. The reuse rule end to end is
 * tests/integration/cache_test.ts.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  clear,
  discardPartialSync,
  record,
  staleReason,
} from "../../lib/stage/cache.ts";
import type { DownloadResult } from "../../lib/stage/download.ts";
import { identityOf } from "../../lib/stage/work_dir.ts";
import { captureLog, withTemp } from "../test_util.ts";

const isRoot = Deno.uid() === 0;
/** A uid that is not ours (nobody). */
const OTHER = 65534;
const LM1 = new Date(Date.UTC(2025, 0, 1)).toUTCString();
const LM2 = new Date(Date.UTC(2025, 5, 1)).toUTCString();

function namesIn(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("staleReason: a validator on one side only is a change, the missing side named 'none'", () => {
  const m = { size: 10 };
  assert.equal(
    staleReason({ ...m, lastModified: LM1 }, {
      status: 200,
      lastModified: LM1,
      etag: '"b"',
    }),
    'ETag changed (none → "b")',
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"', lastModified: LM1 }, {
      status: 200,
      lastModified: LM1,
    }),
    'ETag changed ("a" → none)',
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"' }, {
      status: 200,
      etag: '"a"',
      lastModified: LM2,
    }),
    `Last-Modified changed (none → ${LM2})`,
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"', lastModified: LM1 }, {
      status: 200,
      etag: '"a"',
      lastModified: LM2,
    }),
    `Last-Modified changed (${LM1} → ${LM2})`,
  );
  assert.equal(
    staleReason({ ...m, etag: '"a"', lastModified: LM1 }, {
      status: 200,
      etag: '"a"',
    }),
    `Last-Modified changed (${LM1} → none)`,
  );
});

Deno.test("record: the same file recorded three times at once is written once, without a clash", async () => {
  await withTemp(async (dir) => {
    const bytes = new TextEncoder().encode("an initrd named three times");
    await Deno.writeFile(`${dir}/initrd-part-0`, bytes);
    const result: DownloadResult = {
      url: "http://h/a.gz",
      path: `${dir}/initrd-part-0`,
      size: bytes.length,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      identity: identityOf(await Deno.lstat(`${dir}/initrd-part-0`)),
      resumed: false,
      attempts: 1,
      etag: '"a1"',
    };
    // Concurrent writers of one entry would clash on its names: the later
    // ones wait for the first instead.
    const [, lines] = await captureLog(() =>
      Promise.all([0, 1, 2].map(() => record(dir, result)))
    );
    assert.deepEqual(lines, []);
    const names = namesIn(`${dir}/cache`);
    assert.equal(names.length, 2, names.join(" "));
    const file = names.find((n) => !n.endsWith(".json"))!;
    assert.deepEqual(await Deno.readFile(`${dir}/cache/${file}`), bytes);
  });
});

Deno.test("discardPartialSync: removes the .part files of cache entries and nothing else (other names, finished entries, a directory); no cache/ is no error", async () => {
  await withTemp(async (dir) => {
    discardPartialSync(dir);
    await Deno.mkdir(`${dir}/cache`);
    const kept: string[] = [];
    // Names that are no cache entry's among the entries, whatever order
    // the directory lists them in.
    for (let i = 0; i < 8; i++) {
      const key = i.toString(16).repeat(32);
      for (
        const name of [`notes${i}.part`, `${key}.part`, `${key}.json.part`]
      ) {
        Deno.writeTextFileSync(`${dir}/cache/${name}`, "x");
      }
      for (const name of [key, `${key}.json`]) {
        Deno.writeTextFileSync(`${dir}/cache/${name}`, "x");
        kept.push(name);
      }
      kept.push(`notes${i}.part`);
    }
    const directory = `${"f".repeat(32)}.part`;
    await Deno.mkdir(`${dir}/cache/${directory}`);
    kept.push(directory);
    discardPartialSync(dir);
    assert.deepEqual(namesIn(`${dir}/cache`), kept.sort());
  });
});

Deno.test({
  name:
    "clear (--no-cache): empties a cache/ of ours, leaves another user's cache/ untouched",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (dir) => {
      const key = "a".repeat(32);
      await Deno.mkdir(`${dir}/cache`, { mode: 0o700 });
      for (const name of [key, `${key}.json`, "notes.txt"]) {
        await Deno.writeTextFile(`${dir}/cache/${name}`, "x");
      }
      await Deno.chown(`${dir}/cache`, OTHER, OTHER);
      await clear(dir);
      assert.deepEqual(namesIn(`${dir}/cache`), [
        key,
        `${key}.json`,
        "notes.txt",
      ]);
      await Deno.chown(`${dir}/cache`, Deno.uid(), Deno.gid());
      await clear(dir);
      assert.deepEqual(namesIn(`${dir}/cache`), ["notes.txt"]);
    });
  },
});
