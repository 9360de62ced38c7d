/**
 * Byte counts and rates as people read them: whole bytes below 1 KiB (a rate
 * is rarely an integer), one decimal above, and no "1024.0" before a unit
 * change.
 */

import assert from "node:assert/strict";
import { createProgress, formatBytes } from "../../lib/stage/progress.ts";

Deno.test("formatBytes: whole bytes below 1 KiB, one decimal in binary units above", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1003.6140140646469), "1004 B");
  assert.equal(formatBytes(0.4), "0 B");
  assert.equal(formatBytes(1023.6), "1.0 KiB");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(123456.789), "120.6 KiB");
  assert.equal(formatBytes(1024 * 1024 - 1), "1.0 MiB");
  assert.equal(formatBytes(10 * 1048576), "10.0 MiB");
  assert.equal(formatBytes(3 * 1024 ** 3), "3.0 GiB");
  assert.equal(formatBytes(5 * 1024 ** 5), "5120.0 TiB");
});

Deno.test("progress: a small file's progress and summary lines give a rounded rate", () => {
  let now = 0;
  const lines: string[] = [];
  const progress = createProgress("lines", {
    now: () => now,
    line: (l) => lines.push(l),
  });
  const slow = progress.track("initrd");
  now = 10_300; // past the 10 s line interval, total unknown
  slow.update(700);
  assert.equal(lines[1], "initrd: 700 B, 68 B/s");
  lines.length = 0;
  const fast = progress.track("kernel");
  now += 996.4; // 1000 B in 996.4 ms: 1003.6140140646469 B/s
  fast.finish({ size: 1000, sha256: "ab".repeat(32) });
  assert.equal(
    lines[1],
    `kernel: 1000 B in 1.0 s (1004 B/s), sha256 ${"ab".repeat(32)}`,
  );
});
