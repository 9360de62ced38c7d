/**
 * Staging the installed system's boot entry (`lib/local_boot/find.ts` found it):
 * the kernel and initrds are copied from the boot partition, opened
 * read-only and read by `lib/local_boot/ext4.ts`, into the work directory (files of
 * ours, created exclusively, hashed while copied, their length checked
 * against the file system's), then checked like downloads (kernel format and
 * length, initrd formats, the command line against the kernel's limit) and
 * the initrds assembled into one; `kexecLoad` then loads these very files.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { BootError, errorText, ExitCode } from "../errors.ts";
import { type Ext4, Ext4Error, fileReader, openExt4 } from "./ext4.ts";
import {
  checkInitrd,
  checkKernel,
  type Format,
  SNIFF_BYTES,
} from "../stage/formats.ts";
import { assembleInitrd } from "../stage/initrd.ts";
import type { KexecImage } from "../kexec/libc.ts";
import { kernelFile, type VerifiedFile } from "../stage/kernel_file.ts";
import type { LocalKexecPlan } from "./find.ts";
import { log } from "../log.ts";
import {
  createFile,
  discard,
  diskError,
  type FileIdentity,
  identityOf,
  type WorkDirLock,
} from "../stage/work_dir.ts";

/** Largest kernel or initrd copied from a local disk (2 GiB). */
const MAX_LOCAL_FILE = 2 ** 31;

/** Options for {@linkcode stageLocalBoot}. */
export interface StageOptions {
  /** The caller's lock on the work directory (`lockWorkDir`), where the files go. */
  lock: WorkDirLock;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
}

/** The staged files of a local boot: what `kexecLoad` loads, and what `--no-kexec` prints. */
export interface StagedLocalBoot extends KexecImage {
  /** The kernel file to load. */
  kernel: VerifiedFile & {
    /** Format of the copied file. */
    format: Format;
    /** The copy, when it had to be unpacked (arm64). */
    copy?: VerifiedFile;
  };
  /** The assembled initrd, when the entry has initrds. */
  initrd?: VerifiedFile & { parts: (VerifiedFile & { offset: number })[] };
}

type Copied = VerifiedFile & { identity: FileIdentity; head: Uint8Array };

/** Copies `path` of `fs` to a new file `dest` of ours, hashing it and checking its length. */
async function copyOut(
  fs: Ext4,
  path: string,
  dest: string,
  where: string,
): Promise<Copied> {
  let expected: number;
  try {
    const info = await fs.stat(path);
    if (info.kind !== "file") throw new Ext4Error("not a regular file");
    expected = info.size;
  } catch (err) {
    throw new BootError(
      `${where} cannot be read: ${errorText(err)}`,
      ExitCode.Verify,
      { cause: err },
    );
  }
  if (expected > MAX_LOCAL_FILE) {
    throw new BootError(
      `${where} is ${expected} bytes, more than the ${MAX_LOCAL_FILE} a boot file may be`,
      ExitCode.Verify,
    );
  }
  const out = await createFile(dest);
  const hash = createHash("sha256");
  const head = new Uint8Array(SNIFF_BYTES);
  let size = 0;
  try {
    for await (const chunk of fs.chunks(path)) {
      if (size < SNIFF_BYTES) {
        head.set(chunk.subarray(0, SNIFF_BYTES - size), size);
      }
      hash.update(chunk);
      let done = 0;
      while (done < chunk.length) {
        done += await out.write(chunk.subarray(done));
      }
      size += chunk.length;
    }
    if (size !== expected) {
      throw new BootError(
        `${where} is ${size} bytes, not the ${expected} its inode says`,
        ExitCode.Verify,
      );
    }
    const identity = identityOf(await out.stat());
    return {
      path: dest,
      size,
      sha256: hash.digest("hex"),
      identity,
      head: head.subarray(0, Math.min(size, SNIFF_BYTES)),
    };
  } catch (err) {
    await discard(dest);
    if (err instanceof Ext4Error) {
      throw new BootError(
        `${where} cannot be read: ${err.message}`,
        ExitCode.Verify,
        {
          cause: err,
        },
      );
    }
    throw diskError(err, dest);
  } finally {
    out.close();
  }
}

/**
 * Copies and verifies what `plan` boots into the locked work directory: the kernel
 * (`kernel`, and `kernel.Image` when an arm64 kernel is unpacked) and one
 * assembled `initrd`. Throws a {@linkcode BootError}: Verify (6) for a file
 * that is missing, unreadable or not what it should be, Disk (8) for the
 * work directory.
 */
export async function stageLocalBoot(
  plan: LocalKexecPlan,
  options: StageOptions,
): Promise<StagedLocalBoot> {
  const dir = options.lock.dir;
  const made: string[] = [];
  let device: Deno.FsFile;
  try {
    device = await Deno.open(plan.device, { read: true });
  } catch (err) {
    throw new BootError(
      `Cannot open ${plan.device} to read the installed system: ${
        errorText(err)
      }`,
      ExitCode.Verify,
      { cause: err },
    );
  }
  try {
    let fs: Ext4;
    try {
      fs = await openExt4(fileReader(device));
    } catch (err) {
      throw new BootError(
        `${plan.device} no longer holds a readable file system: ${
          errorText(err)
        }`,
        ExitCode.Verify,
        { cause: err },
      );
    }
    const staged = await stageKernel(fs, plan, {
      dir,
      arch: options.arch ?? Deno.build.arch,
      made,
    });
    if (plan.initrds.length > 0) {
      const { initrd, identity } = await stageInitrds(fs, plan, { dir, made });
      staged.initrd = initrd;
      staged.verified.initrd = identity;
    }
    return staged;
  } catch (err) {
    for (const path of made) await discard(path);
    throw err;
  } finally {
    device.close();
  }
}

/** Where the staging writes, and the names it made (removed on failure). */
interface StageContext {
  dir: string;
  made: string[];
}

/** Copies and checks the kernel (unpacked on arm64, its command-line limit checked). */
async function stageKernel(
  fs: Ext4,
  plan: LocalKexecPlan,
  context: StageContext & { arch: string },
): Promise<StagedLocalBoot> {
  const { dir, made, arch } = context;
  const where = `${plan.device}:${plan.kernel}`;
  made.push(`${dir}/kernel`);
  const kernel = await copyOut(fs, plan.kernel, `${dir}/kernel`, where);
  const format = checkKernel(kernel.head, {
    url: where,
    arch,
    size: kernel.size,
  });
  made.push(`${dir}/kernel.Image`);
  const loaded = await kernelFile({ ...kernel, format }, {
    url: where,
    cmdline: plan.cmdline,
    arch,
    dir,
  });
  log.info(
    `kernel: ${where} copied and verified (${format}, ${kernel.size} bytes, sha256 ${kernel.sha256})`,
  );
  const { path, size, sha256 } = loaded.file;
  return {
    kernel: {
      path,
      size,
      sha256,
      format,
      ...(loaded.unpackedFrom ? { copy: loaded.unpackedFrom } : {}),
    },
    cmdline: plan.cmdline,
    verified: { kernel: loaded.identity },
  };
}

/** Copies and checks every initrd, and assembles them into one `initrd`. */
async function stageInitrds(
  fs: Ext4,
  plan: LocalKexecPlan,
  context: StageContext,
): Promise<
  { initrd: NonNullable<StagedLocalBoot["initrd"]>; identity: FileIdentity }
> {
  const { dir, made } = context;
  const parts: Copied[] = [];
  for (const [i, path] of plan.initrds.entries()) {
    const where = `${plan.device}:${path}`;
    const dest = `${dir}/initrd-part-${i}`;
    made.push(dest);
    const part = await copyOut(fs, path, dest, where);
    checkInitrd(part.head, { url: where });
    parts.push(part);
  }
  made.push(`${dir}/initrd`);
  const assembled = await assembleInitrd(
    parts.map((p) => ({
      path: p.path,
      identity: p.identity,
      sha256: p.sha256,
    })),
    `${dir}/initrd`,
  );
  for (const part of parts) await discard(part.path);
  log.info(
    `initrd: ${parts.length} file(s) copied, verified and assembled (${assembled.size} bytes, sha256 ${assembled.sha256})`,
  );
  return {
    initrd: {
      path: assembled.path,
      size: assembled.size,
      sha256: assembled.sha256,
      parts: parts.map((p, i) => ({
        path: plan.initrds[i],
        size: p.size,
        sha256: p.sha256,
        offset: assembled.layout[i].offset,
      })),
    },
    identity: assembled.identity,
  };
}
