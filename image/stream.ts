/**
 * Fedora CoreOS stream metadata, downloads (the bootloader's own downloader:
 * resumable, verified, with progress) and GPG signature verification for the
 * disk image pipeline.
 *
 * @module
 */

import {
  DigestMismatchError,
  download as fetchVerified,
} from "../lib/stage/download.ts";
import { BootError, errorText, ExitCode } from "../lib/errors.ts";
import { createProgress } from "../lib/stage/progress.ts";
import { sha256File } from "../lib/stage/sha256.ts";

/** Default stream metadata URL for a stream name. */
export function streamUrl(stream: string): string {
  return `https://builds.coreos.fedoraproject.org/streams/${stream}.json`;
}

/** The metal `raw.xz` artifact of a stream, as the metadata describes it. */
export interface MetalArtifact {
  /** FCOS release, e.g. `42.20250901.3.0`. */
  release: string;
  /** URL of the `raw.xz`. */
  location: string;
  /** URL of its detached GPG signature (over the compressed bytes). */
  signature?: string;
  /** sha256 of the compressed file. */
  sha256: string;
  /** sha256 after decompression. */
  uncompressedSha256: string;
}

function fail(message: string, code: number = ExitCode.Download): BootError {
  return new BootError(message, code as typeof ExitCode[keyof typeof ExitCode]);
}

/** Reads a URL (http, https, file:) or a local path as bytes. */
export async function readSource(source: string): Promise<Uint8Array> {
  if (/^https?:\/\//.test(source)) {
    let res: Response;
    try {
      res = await fetch(source, { signal: AbortSignal.timeout(60_000) });
    } catch (err) {
      throw fail(
        `Cannot fetch ${source}: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw fail(`Cannot fetch ${source}: HTTP ${res.status}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  }
  const path = source.startsWith("file:") ? new URL(source).pathname : source;
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw fail(
      `Cannot read ${path}: ${(err as Error).message.split("\n")[0]}`,
      ExitCode.Usage,
    );
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Picks the metal `raw.xz` disk for `arch` out of parsed stream metadata
 * (`architectures.<arch>.artifacts.metal.formats["raw.xz"].disk`).
 */
export function metalArtifact(metadata: unknown, arch: string): MetalArtifact {
  // deno-lint-ignore no-explicit-any
  const m = metadata as any;
  const metal = m?.architectures?.[arch]?.artifacts?.metal;
  if (!metal) {
    const known = Object.keys(m?.architectures ?? {}).join(", ") || "none";
    throw fail(
      `The stream metadata has no metal artifact for ${arch} (architectures: ${known})`,
      ExitCode.Usage,
    );
  }
  const disk = metal.formats?.["raw.xz"]?.disk;
  if (!disk?.location) {
    throw fail(
      `The stream metadata has no metal raw.xz disk for ${arch}`,
      ExitCode.Usage,
    );
  }
  const sha256 = String(disk.sha256 ?? "").toLowerCase();
  const uncompressed = String(disk["uncompressed-sha256"] ?? "").toLowerCase();
  if (!HEX64.test(sha256)) {
    throw fail(
      "The stream metadata has no valid sha256 for the metal raw.xz",
      ExitCode.Verify,
    );
  }
  if (!HEX64.test(uncompressed)) {
    throw fail(
      "The stream metadata has no valid uncompressed-sha256 for the metal raw.xz",
      ExitCode.Verify,
    );
  }
  return {
    release: String(metal.release ?? "unknown"),
    location: String(disk.location),
    signature: disk.signature ? String(disk.signature) : undefined,
    sha256,
    uncompressedSha256: uncompressed,
  };
}

/** Resolves the stream metadata at `url` (http(s), file: or a path) to the metal raw.xz for `arch`. */
export async function resolveMetal(
  url: string,
  arch: string,
): Promise<MetalArtifact> {
  const bytes = await readSource(url);
  let metadata: unknown;
  try {
    metadata = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw fail(`The stream metadata at ${url} is not JSON`, ExitCode.Usage);
  }
  return metalArtifact(metadata, arch);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Options for {@linkcode download}. */
export interface DownloadOptions {
  /** Expected sha256 (hex); the file is kept only when it matches. */
  sha256?: string;
  /** Retries on network errors, 5xx and 429, resuming each time (default 5). */
  retries?: number;
  /** Where progress lines go (default stderr). */
  log?: (line: string) => void;
  /** First backoff delay in milliseconds (default 500; tests use less). */
  baseDelayMs?: number;
}

/**
 * Downloads `url` (http, https; `file:` or a path is copied) to `dest` with
 * the bootloader's downloader (`lib/stage/download.ts`: streamed to disk while
 * hashed, retries with backoff, resume, progress), checking the sha256 when
 * given: a mismatching file is deleted so the next run starts afresh. With a
 * sha256, the `.part` an interrupted run left is resumed, and the one a
 * network failure leaves is kept for the next run. A `dest` that already
 * matches is not downloaded again.
 */
export async function download(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<void> {
  const say = options.log ?? ((line: string) => console.error(line));
  const name = dest.slice(dest.lastIndexOf("/") + 1);
  if (await exists(dest)) {
    if (!options.sha256 || await sha256File(dest) === options.sha256) {
      say(`image: ${name}: cached`);
      return;
    }
    say(
      `image: ${name}: cached copy does not match its sha256, downloading again`,
    );
    await Deno.remove(dest);
  }
  if (/^https?:\/\//.test(url)) {
    try {
      await fetchVerified(url, dest, {
        sha256: options.sha256,
        keepPart: true,
        retries: options.retries,
        baseDelayMs: options.baseDelayMs,
        tracker: createProgress("auto", { line: say }).track(`image: ${name}`),
      });
    } catch (err) {
      if (!(err instanceof DigestMismatchError)) throw err;
      throw fail(
        `sha256 mismatch for ${name}: expected ${err.expected}, got ${err.actual} (deleted; refusing to use it)`,
        ExitCode.Verify,
      );
    }
    if (options.sha256) {
      say(`image: ${name}: sha256 ${options.sha256} verified`);
    }
    return;
  }
  const path = url.startsWith("file:") ? new URL(url).pathname : url;
  const part = `${dest}.part`;
  try {
    await Deno.copyFile(path, part);
  } catch (err) {
    throw fail(`Cannot read ${path}: ${errorText(err)}`, ExitCode.Usage);
  }
  if (options.sha256) {
    const got = await sha256File(part);
    if (got !== options.sha256) {
      await Deno.remove(part);
      throw fail(
        `sha256 mismatch for ${name}: expected ${options.sha256}, got ${got} (deleted; refusing to use it)`,
        ExitCode.Verify,
      );
    }
    say(`image: ${name}: sha256 ${got} verified`);
  }
  await Deno.rename(part, dest);
}

/** Options for {@linkcode verifySignature}. */
export interface VerifySignatureOptions {
  /** Public keys (armored or binary OpenPGP) the signature must come from. */
  keys: string;
}

/**
 * Checks a detached GPG signature over `file` with only the given keys, in a
 * throwaway GNUPGHOME; returns the signing key's fingerprint. Requires a
 * `VALIDSIG` status from gpg.
 */
export async function verifySignature(
  file: string,
  signature: string,
  options: VerifySignatureOptions,
): Promise<string> {
  const home = await Deno.makeTempDir({ prefix: "assisted-image-gpg-" });
  try {
    await Deno.chmod(home, 0o700);
    const gpg = async (args: string[]) => {
      const out = await new Deno.Command("gpg", {
        args: [
          "--homedir",
          home,
          "--batch",
          "--no-tty",
          "--no-auto-key-locate",
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return {
        code: out.code,
        stdout: dec.decode(out.stdout),
        stderr: dec.decode(out.stderr),
      };
    };
    const imported = await gpg(["--import", options.keys]);
    if (imported.code !== 0) {
      throw fail(
        `Cannot import the signing keys ${options.keys}: ${
          imported.stderr.trim().split("\n")[0]
        }`,
        ExitCode.Verify,
      );
    }
    const res = await gpg(["--status-fd", "1", "--verify", signature, file]);
    const valid = /^\[GNUPG:\] VALIDSIG ([0-9A-F]+)/m.exec(res.stdout);
    if (
      res.code !== 0 || !valid ||
      /^\[GNUPG:\] (BADSIG|ERRSIG|EXPKEYSIG|REVKEYSIG)/m.test(res.stdout)
    ) {
      const why =
        /^\[GNUPG:\] (BADSIG|ERRSIG|NO_PUBKEY|EXPKEYSIG|REVKEYSIG|NODATA)/m
          .exec(res.stdout)?.[1] ??
          `gpg exit ${res.code}`;
      const name = file.slice(file.lastIndexOf("/") + 1);
      throw fail(
        `GPG signature check failed for ${name} (${why}); refusing to use it`,
        ExitCode.Verify,
      );
    }
    return valid[1];
  } finally {
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
}
