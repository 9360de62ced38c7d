/**
 * Booting the installed system: when the plan is a local boot (the service
 * says the host is installed, or the script handed the machine back to the
 * firmware), find the installed system on the local disks and stage what
 * its boot menu would boot, verified, for `kexec_file_load`.
 *
 * Finding: every partition named `boot` (GPT partition name) or holding an
 * ext2/3/4 file system labelled `boot` — the layout of Fedora CoreOS and
 * RHCOS — on a disk that holds no mounted file system (never the disk the
 * bootloader runs from), carrying Boot Loader Specification entries; the
 * entry GRUB would boot by default (`lib/bls.ts`), with its variables.
 *
 * Reading: the partition is opened read-only and its file system read by
 * `lib/ext4.ts`: nothing is mounted, nothing written, no journal replayed.
 *
 * Staging: the kernel and initrds are copied into the work directory (files
 * of ours, created exclusively, hashed while copied, their length checked
 * against the file system's), then checked like downloads (kernel format and
 * length, initrd formats, the command line against the kernel's limit) and
 * the initrds assembled into one; `kexecLoad` then loads these very files.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  type BlsEntry,
  bootSpec,
  defaultEntry,
  grubVariables,
  parseBlsEntry,
  parseGrubenv,
  sortEntries,
} from "./bls.ts";
import { BootError, ExitCode } from "./errors.ts";
import { type Ext4, Ext4Error, fileReader, openExt4 } from "./ext4.ts";
import {
  checkInitrd,
  checkKernel,
  type Format,
  SNIFF_BYTES,
} from "./formats.ts";
import { errorText } from "./http.ts";
import { assembleInitrd } from "./initrd.ts";
import type { KexecImage } from "./kexec.ts";
import { kernelFile, type LoadedFile } from "./load.ts";
import {
  type DiskPaths,
  disksInUse,
  listPartitions,
  type Partition,
} from "./local_disks.ts";
import { log } from "./log.ts";
import {
  createFile,
  discard,
  diskError,
  type FileIdentity,
  identityOf,
  type WorkDirLock,
} from "./work_dir.ts";

export type { DiskPaths } from "./local_disks.ts";

/** The installed system to boot: what `--print-plan` prints for a local boot. */
export interface LocalKexecPlan {
  /** Discriminator. */
  action: "local-kexec";
  /** Why the local disk: the service's message or the script line. */
  reason: string;
  /** The boot partition, e.g. `/dev/vdb3`. */
  device: string;
  /** The entry's file, e.g. `loader/entries/ostree-1-rhcos.conf`. */
  entry: string;
  /** The entry's `title`, when it has one. */
  title?: string;
  /** Kernel path on the boot partition. */
  kernel: string;
  /** Initrd paths on the boot partition, in order. */
  initrds: string[];
  /** The command line GRUB would give the kernel. */
  cmdline: string;
  /** The `/ignition.firstboot` stamp is there: the installed system's first boot. */
  firstboot: boolean;
}

/** Largest kernel or initrd copied from a local disk. */
export const MAX_LOCAL_FILE = 2 ** 31;
/** Largest entry, `grubenv` or stamp read. */
const MAX_SMALL_FILE = 64 * 1024;
const ENTRY_DIRS = ["loader/entries", "boot/loader/entries"];
const GRUBENVS = ["grub2/grubenv", "boot/grub2/grubenv"];
const FIRSTBOOT_STAMP = "ignition.firstboot";

/** Opens a partition read-only (tests open image files). */
export type OpenDevice = (path: string) => Promise<Deno.FsFile>;

function openReadOnly(path: string): Promise<Deno.FsFile> {
  return Deno.open(path, { read: true });
}

/** Options for {@linkcode findLocalBoot}. */
export interface FindOptions extends DiskPaths {
  /** Opens a partition (default: `Deno.open` read-only). */
  openDevice?: OpenDevice;
}

/** An entry found on a boot partition, and where. */
interface Found {
  partition: Partition;
  fs: Ext4;
  dir: string;
  entry: BlsEntry;
  firstboot?: string;
  grubenv: Map<string, string>;
}

async function readOptional(
  fs: Ext4,
  path: string,
): Promise<string | undefined> {
  try {
    if ((await fs.stat(path)).kind !== "file") return undefined;
  } catch {
    return undefined;
  }
  return new TextDecoder().decode(await fs.readFile(path, MAX_SMALL_FILE));
}

/** The default entry of the boot partition `fs` holds, if it has entries. */
async function defaultOf(
  partition: Partition,
  fs: Ext4,
): Promise<Found | undefined> {
  for (const dir of ENTRY_DIRS) {
    let names: string[];
    try {
      names = (await fs.readDir(dir)).map((e) => e.name);
    } catch {
      continue;
    }
    const entries: BlsEntry[] = [];
    for (const name of names.sort()) {
      if (name.startsWith(".") || !name.endsWith(".conf") || name.length <= 5) {
        continue;
      }
      const text = await readOptional(fs, `${dir}/${name}`);
      if (text !== undefined) {
        entries.push(parseBlsEntry(name.slice(0, -5), text));
      }
    }
    const sorted = sortEntries(entries);
    if (sorted.length === 0) continue;
    let grubenv = new Map<string, string>();
    for (const path of GRUBENVS) {
      const text = await readOptional(fs, path);
      if (text !== undefined) {
        grubenv = parseGrubenv(text);
        break;
      }
    }
    const entry = defaultEntry(sorted, { saved: grubenv.get("saved_entry") })!;
    log.info(
      `${partition.device}: ${sorted.length} boot entr${
        sorted.length === 1 ? "y" : "ies"
      } (${sorted.map((e) => e.id).join(", ")}), default ${entry.id}${
        grubenv.has("saved_entry")
          ? ` (grubenv saved_entry=${grubenv.get("saved_entry")})`
          : ""
      }`,
    );
    return {
      partition,
      fs,
      dir,
      entry,
      grubenv,
      firstboot: await readOptional(fs, FIRSTBOOT_STAMP),
    };
  }
  return undefined;
}

/**
 * Finds the installed system: the default entry of the first boot partition
 * (in disk order) with entries, on a disk that holds no mounted file system.
 * Returns undefined, having said why, when there is none. A partition that
 * cannot be read is passed over with a warning.
 */
export async function findLocalBoot(
  reason: string,
  options: FindOptions = {},
): Promise<LocalKexecPlan | undefined> {
  const open = options.openDevice ?? openReadOnly;
  const inUse = await disksInUse(options);
  const partitions = await listPartitions(options);
  const found: Found[] = [];
  let candidates = 0;
  for (const partition of partitions) {
    if (inUse.has(partition.disk)) {
      if (partition.partLabel === "boot") {
        log.info(
          `${partition.device}: on ${partition.disk}, the disk the running system uses: skipped`,
        );
      }
      continue;
    }
    let file: Deno.FsFile | undefined;
    try {
      file = await open(partition.device);
      let fs: Ext4;
      try {
        fs = await openExt4(fileReader(file));
      } catch (err) {
        if (partition.partLabel === "boot") throw err;
        continue; // Not ext2/3/4: not a boot partition of ours.
      }
      if (partition.partLabel !== "boot" && fs.label !== "boot") continue;
      candidates++;
      if (fs.needsRecovery) {
        log.warn(
          `${partition.device}: its journal was not replayed (not cleanly unmounted): reading it as last written back`,
        );
      }
      const entry = await defaultOf(partition, fs);
      if (entry) found.push(entry);
      else log.info(`${partition.device}: a boot partition without entries`);
    } catch (err) {
      log.warn(
        `${partition.device}: cannot read it (${
          err instanceof Ext4Error ? err.message : errorText(err)
        }): skipped`,
      );
    } finally {
      file?.close();
    }
  }
  if (found.length === 0) {
    log.warn(
      `no installed system found on the local disks (${partitions.length} partition(s), ${candidates} boot partition(s) not in use${
        inUse.size ? `; in use: ${[...inUse].join(", ")}` : ""
      })`,
    );
    return undefined;
  }
  const chosen = found[0];
  for (const other of found.slice(1)) {
    log.warn(
      `${other.partition.device} holds an installed system too; booting ${chosen.partition.device}, the first disk`,
    );
  }
  const { vars, ignored } = grubVariables(chosen.grubenv, {
    firstbootStamp: chosen.firstboot,
  });
  for (const line of ignored) {
    log.warn(
      `${chosen.partition.device}:/${FIRSTBOOT_STAMP}: ignored "${line}" (only "set NAME=VALUE" lines are read)`,
    );
  }
  const spec = bootSpec(chosen.entry, vars)!;
  return {
    action: "local-kexec",
    reason,
    device: chosen.partition.device,
    entry: `${chosen.dir}/${chosen.entry.id}.conf`,
    ...(chosen.entry.title !== undefined ? { title: chosen.entry.title } : {}),
    kernel: spec.kernel,
    initrds: spec.initrds,
    cmdline: spec.cmdline,
    firstboot: chosen.firstboot !== undefined,
  };
}

/** Options for {@linkcode stageLocalBoot}. */
export interface StageOptions {
  /** The caller's lock on the work directory (`lockWorkDir`), where the files go. */
  lock: WorkDirLock;
  /** Architecture (default `Deno.build.arch`). */
  arch?: string;
  /** Opens the partition (default: `Deno.open` read-only). */
  openDevice?: OpenDevice;
}

/** The staged files of a local boot: what `kexecLoad` loads, and what `--no-kexec` prints. */
export interface StagedLocalBoot extends KexecImage {
  /** The kernel file to load. */
  kernel: LoadedFile & {
    /** Format of the copied file. */
    format: Format;
    /** The copy, when it had to be unpacked (arm64). */
    copy?: LoadedFile;
  };
  /** The assembled initrd, when the entry has initrds. */
  initrd?: LoadedFile & { parts: (LoadedFile & { offset: number })[] };
}

type Copied = LoadedFile & { identity: FileIdentity; head: Uint8Array };

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
  const arch = options.arch ?? Deno.build.arch;
  const dir = options.lock.dir;
  const open = options.openDevice ?? openReadOnly;
  const made: string[] = [];
  let device: Deno.FsFile;
  try {
    device = await open(plan.device);
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
    const name = (path: string) => `${plan.device}:${path}`;
    made.push(`${dir}/kernel`);
    const kernel = await copyOut(
      fs,
      plan.kernel,
      `${dir}/kernel`,
      name(plan.kernel),
    );
    const format = checkKernel(kernel.head, {
      url: name(plan.kernel),
      arch,
      size: kernel.size,
    });
    made.push(`${dir}/kernel.Image`);
    const loaded = await kernelFile(kernel, {
      format,
      head: kernel.head,
      url: name(plan.kernel),
      cmdline: plan.cmdline,
      arch,
      dir,
    });
    const parts: Copied[] = [];
    for (const [i, path] of plan.initrds.entries()) {
      const dest = `${dir}/initrd-part-${i}`;
      made.push(dest);
      const part = await copyOut(fs, path, dest, name(path));
      checkInitrd(part.head, { url: name(path) });
      parts.push(part);
    }
    const { path, size, sha256 } = loaded.file;
    const staged: StagedLocalBoot = {
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
    log.info(
      `kernel: ${
        name(plan.kernel)
      } copied and verified (${format}, ${kernel.size} bytes, sha256 ${kernel.sha256})`,
    );
    if (parts.length > 0) {
      made.push(`${dir}/initrd`);
      const assembled = await assembleInitrd(
        parts.map((p) => ({ path: p.path, identity: p.identity })),
        `${dir}/initrd`,
      );
      for (const part of parts) await discard(part.path);
      staged.initrd = {
        path: assembled.path,
        size: assembled.size,
        sha256: assembled.sha256,
        parts: parts.map((p, i) => ({
          path: plan.initrds[i],
          size: p.size,
          sha256: p.sha256,
          offset: assembled.layout[i].offset,
        })),
      };
      staged.verified.initrd = assembled.identity;
      log.info(
        `initrd: ${parts.length} file(s) copied, verified and assembled (${assembled.size} bytes, sha256 ${assembled.sha256})`,
      );
    }
    return staged;
  } catch (err) {
    for (const path of made) await discard(path);
    throw err;
  } finally {
    device.close();
  }
}
