/**
 * One artifact's verified file, from wherever it can be had for the least:
 * this run's earlier copy (a refetched plan naming the same URL, checked
 * again), the artifact cache (`cache.ts`), or a new download
 * (`download.ts`), which the cache then records.
 *
 * @module
 */

import { isCacheable } from "./artifact_url.ts";
import * as cache from "./cache.ts";
import type { Fetched } from "./cache.ts";
import { download } from "./download.ts";
import { type Format, readHeadOf } from "./formats.ts";
import type { BusyBudget } from "../http/busy.ts";
import type { HttpClient } from "../http/request.ts";
import { log } from "../log.ts";
import type { Progress } from "./progress.ts";
import { diskError, openOwnFile } from "./work_dir.ts";

/** Options for {@linkcode fetchArtifact}. */
export interface FetchArtifactOptions {
  /** The work directory (its `cache/` is the cache). */
  workDir: string;
  /** Use the cache (default true). */
  cache?: boolean;
  /** Client with extra CAs or `--insecure`. */
  client?: HttpClient;
  /** Retries after the first attempt, busy answers aside (default 5). */
  retries?: number;
  /** How long busy servers may still be waited for (the run's budget). */
  busy?: BusyBudget;
  /** Milliseconds to wait for headers and for each body read (default 30 s). */
  timeoutMs?: number;
  /** Bytes per second below which a body is cut (default 1024). */
  minSpeed?: number;
  /** The window for `minSpeed`, in milliseconds (default 30 s). */
  minSpeedTimeMs?: number;
  /** This run's verified files by URL: read, and told about the result. */
  done: Map<string, Fetched>;
  /** Where the download's progress goes. */
  progress: Progress;
  /** Aborts the download (or the cache's `HEAD`). */
  signal: AbortSignal;
}

/** One artifact for {@linkcode fetchArtifact}. */
export interface Artifact {
  /** Its URL. */
  url: string;
  /** Where the verified file goes. */
  dest: string;
  /** How it is named in log lines. */
  label: string;
  /** Its pinned sha256, if any. */
  pin?: string;
  /** The format check of its first bytes and size; throws to reject. */
  check: (head: Uint8Array, size: number) => Format;
}

/**
 * The verified file of one artifact: this run's earlier copy (a refetched
 * plan naming the same URL), the cache's, or a new download.
 */
export async function fetchArtifact(
  artifact: Artifact,
  options: FetchArtifactOptions,
): Promise<Fetched> {
  const { url, dest, label, pin, check } = artifact;
  const { done, signal } = options;
  const earlier = done.get(url);
  const useCache = options.cache !== false && isCacheable(url);
  let result: Fetched | undefined;
  if (earlier && earlier.path === dest && (!pin || pin === earlier.sha256)) {
    log.info(`${label}: already downloaded (${earlier.size} bytes)`);
    let format: Format;
    try {
      using file = await openOwnFile(dest, earlier.identity);
      format = check(await readHeadOf(file), earlier.size);
    } catch (err) {
      throw diskError(err, dest);
    }
    result = { ...earlier, format };
  } else {
    for (const [key, value] of done) {
      if (value.path === dest) done.delete(key);
    }
    if (useCache) {
      result = await cache.lookup(url, dest, {
        workDir: options.workDir,
        label,
        pin,
        check,
        client: options.client,
        timeoutMs: options.timeoutMs,
        busy: options.busy,
        signal,
      });
    }
  }
  if (!result) {
    result = await download(url, dest, {
      client: options.client,
      retries: options.retries,
      busy: options.busy,
      timeoutMs: options.timeoutMs,
      minSpeed: options.minSpeed,
      minSpeedTimeMs: options.minSpeedTimeMs,
      sha256: pin,
      signal,
      tracker: options.progress.track(label),
      check,
    });
    if (useCache) await cache.record(options.workDir, result);
  }
  done.set(url, result);
  return result;
}
