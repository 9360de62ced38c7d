/**
 * Finding the installed system: when the plan is a local boot (the service
 * says the host is installed, or the script handed the machine back to the
 * firmware), the boot entry its boot menu would boot on the local disks.
 *
 * Every partition named `boot` (GPT partition name) or holding an ext2/3/4
 * file system labelled `boot` — the layout of Fedora CoreOS and RHCOS — on a
 * disk that holds no mounted file system (never the disk the bootloader runs
 * from), carrying Boot Loader Specification entries; the entry GRUB would
 * boot by default (`lib/local_boot/bls.ts`), with its variables. The partition is
 * opened read-only and its file system read by `lib/local_boot/ext4.ts`: nothing is
 * mounted, nothing written, no journal replayed. `lib/local_boot/stage.ts` then
 * copies and verifies the entry's files.
 *
 * @module
 */

import {
  type BlsEntry,
  bootSpec,
  defaultEntry,
  grubVariables,
  parseBlsEntry,
  parseGrubenv,
  sortEntries,
} from "./bls.ts";
import { errorText } from "../errors.ts";
import { type Ext4, Ext4Error, fileReader, openExt4 } from "./ext4.ts";
import {
  type DiskPaths,
  disksInUse,
  listPartitions,
  type Partition,
} from "./disks.ts";
import { log } from "../log.ts";

export type { DiskPaths } from "./disks.ts";

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

/** Largest entry, `grubenv` or stamp read. */
const MAX_SMALL_FILE = 64 * 1024;
const ENTRY_DIRS = ["loader/entries", "boot/loader/entries"];
const GRUBENVS = ["grub2/grubenv", "boot/grub2/grubenv"];
const FIRSTBOOT_STAMP = "ignition.firstboot";

/** The default entry found on a boot partition, and what GRUB would have with it. */
interface Found {
  partition: Partition;
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
      dir,
      entry,
      grubenv,
      firstboot: await readOptional(fs, FIRSTBOOT_STAMP),
    };
  }
  return undefined;
}

/**
 * Reads one partition: undefined when it is not a boot partition (not named
 * or labelled `boot`), else its default entry, if it has entries. Throws
 * when a partition named `boot` cannot be read.
 */
async function readPartition(
  partition: Partition,
): Promise<{ found?: Found } | undefined> {
  using file = await Deno.open(partition.device, { read: true });
  let fs: Ext4;
  try {
    fs = await openExt4(fileReader(file));
  } catch (err) {
    if (partition.partLabel === "boot") throw err;
    return undefined; // Not ext2/3/4: not a boot partition of ours.
  }
  if (partition.partLabel !== "boot" && fs.label !== "boot") return undefined;
  if (fs.needsRecovery) {
    log.warn(
      `${partition.device}: its journal was not replayed (not cleanly unmounted): reading it as last written back`,
    );
  }
  const found = await defaultOf(partition, fs);
  if (!found) log.info(`${partition.device}: a boot partition without entries`);
  return { found };
}

/** What `found` boots, as GRUB would. */
function planOf(found: Found, reason: string): LocalKexecPlan {
  const { vars, ignored } = grubVariables(found.grubenv, {
    firstbootStamp: found.firstboot,
  });
  for (const line of ignored) {
    log.warn(
      `${found.partition.device}:/${FIRSTBOOT_STAMP}: ignored "${line}" (only "set NAME=VALUE" lines are read)`,
    );
  }
  const spec = bootSpec(found.entry, vars)!;
  return {
    action: "local-kexec",
    reason,
    device: found.partition.device,
    entry: `${found.dir}/${found.entry.id}.conf`,
    ...(found.entry.title !== undefined ? { title: found.entry.title } : {}),
    kernel: spec.kernel,
    initrds: spec.initrds,
    cmdline: spec.cmdline,
    firstboot: found.firstboot !== undefined,
  };
}

/**
 * Finds the installed system: the default entry of the first boot partition
 * (in disk order) with entries, on a disk that holds no mounted file system.
 * Returns undefined, having said why, when there is none. A partition that
 * cannot be read is passed over with a warning.
 */
export async function findLocalBoot(
  reason: string,
  options: DiskPaths = {},
): Promise<LocalKexecPlan | undefined> {
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
    try {
      const read = await readPartition(partition);
      if (read) candidates++;
      if (read?.found) found.push(read.found);
    } catch (err) {
      log.warn(
        `${partition.device}: cannot read it (${
          err instanceof Ext4Error ? err.message : errorText(err)
        }): skipped`,
      );
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
  for (const other of found.slice(1)) {
    log.warn(
      `${other.partition.device} holds an installed system too; booting ${
        found[0].partition.device
      }, the first disk`,
    );
  }
  return planOf(found[0], reason);
}
