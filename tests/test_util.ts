/**
 * Helpers shared by the tests: a temporary directory that is always removed,
 * and log capture.
 *
 * @module
 */

import { configureLog } from "../lib/log.ts";

/** Runs `fn` with a fresh temporary directory, removed afterwards whatever happens. */
export async function withTemp<T>(
  fn: (dir: string) => Promise<T>,
  prefix = "assisted_test_",
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `fn` with every log line captured (not printed); returns its value and the lines. */
export async function captureLog<T>(
  fn: () => Promise<T>,
): Promise<[T, string[]]> {
  const lines: string[] = [];
  configureLog({ sink: (line) => lines.push(line) });
  try {
    return [await fn(), lines];
  } finally {
    configureLog({
      sink: (line) =>
        Deno.stderr.writeSync(new TextEncoder().encode(line + "\n")),
    });
  }
}
