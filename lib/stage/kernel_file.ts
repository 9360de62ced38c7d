/**
 * The kernel file `kexec_file_load` gets, from the verified download: on
 * aarch64 a gzip'd `Image` or a zboot `vmlinuz` is unpacked into an `Image`
 * (hashed through the descriptor its identity comes from); a bzImage's
 * command line must fit its `cmdline_size` (`kexec_file_load` would answer a
 * bare EINVAL).
 *
 * @module
 */

import { BootError, ExitCode } from "../errors.ts";
import {
  bzImageCmdlineSize,
  type Format,
  readHeadOf,
  unpackArm64Kernel,
} from "./formats.ts";
import { log } from "../log.ts";
import { sha256Of } from "./sha256.ts";
import {
  diskError,
  type FileIdentity,
  identityOf,
  openOwnFile,
} from "./work_dir.ts";

/** A verified file: where, how large, its sha256. */
export interface VerifiedFile {
  /** Where it is. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** sha256, hex. */
  sha256: string;
}

/** The verified kernel download {@linkcode kernelFile} starts from. */
export interface DownloadedKernel extends VerifiedFile {
  /** The file that was verified. */
  identity: FileIdentity;
  /** What its format check found. */
  format: Format;
}

/** Options for {@linkcode kernelFile}. */
export interface KernelFileOptions {
  /** Where the kernel came from (named, redacted, in errors). */
  url: string;
  /** The command line it will be loaded with. */
  cmdline: string;
  /** Architecture as `Deno.build.arch` names it. */
  arch: string;
  /** The work directory (the unpacked `kernel.Image` goes there). */
  dir: string;
}

/** The file to load, the identity `kexecLoad` checks, and the download it was unpacked from. */
export interface KernelFile {
  /** The file handed to the kernel. */
  file: VerifiedFile;
  /** Its identity. */
  identity: FileIdentity;
  /** The downloaded file, when it had to be unpacked. */
  unpackedFrom?: VerifiedFile;
}

/**
 * The kernel file to load from the verified download `kernel`. Throws a
 * {@linkcode BootError}: Verify (cannot be unpacked, command line too long
 * for this bzImage), Disk (the file cannot be read or was replaced).
 */
export async function kernelFile(
  kernel: DownloadedKernel,
  options: KernelFileOptions,
): Promise<KernelFile> {
  const { format, identity } = kernel;
  const downloaded: VerifiedFile = {
    path: kernel.path,
    size: kernel.size,
    sha256: kernel.sha256,
  };
  if (format === "bzimage") {
    let head: Uint8Array;
    try {
      using file = await openOwnFile(kernel.path, identity);
      head = await readHeadOf(file);
    } catch (err) {
      throw diskError(err, kernel.path);
    }
    const max = bzImageCmdlineSize(head);
    const length = new TextEncoder().encode(options.cmdline).length;
    if (max > 0 && length > max) {
      throw new BootError(
        `The kernel command line is ${length} bytes; this kernel accepts at most ${max}`,
        ExitCode.Verify,
      );
    }
  }
  if (options.arch !== "aarch64" || format === "arm64-image") {
    return { file: downloaded, identity };
  }
  const image = await unpackArm64Kernel(
    kernel.path,
    `${options.dir}/kernel.Image`,
    { url: options.url, arch: options.arch, identity },
  );
  let unpacked: KernelFile;
  try {
    using file = await openOwnFile(image);
    const unpackedIdentity = identityOf(await file.stat());
    unpacked = {
      file: {
        path: image,
        size: unpackedIdentity.size,
        sha256: await sha256Of(file),
      },
      identity: unpackedIdentity,
      unpackedFrom: downloaded,
    };
  } catch (err) {
    throw diskError(err, image);
  }
  log.info(
    `kernel: unpacked ${format} to an arm64 Image (${unpacked.file.size} bytes)`,
  );
  return unpacked;
}
