/**
 * The machine's local disks, as the kernel lists them in `/sys/class/block`:
 * their partitions (GPT partition name, device node), and which disks hold a
 * mounted file system — the disk the running system (and so the bootloader)
 * comes from, whose own boot partition must never be taken for an installed
 * system. Paths are injected so that tests use a fake `/sys`, `/dev` and
 * `/proc` with image files.
 *
 * @module
 */

/** Where the kernel's views are read from (default `/sys`, `/dev`, `/proc`). */
export interface DiskPaths {
  /** sysfs (default `/sys`). */
  sysDir?: string;
  /** Device nodes (default `/dev`). */
  devDir?: string;
  /** procfs (default `/proc`). */
  procDir?: string;
}

/** One partition of a local disk. */
export interface Partition {
  /** Kernel name, e.g. `vdb3`, `nvme0n1p3`. */
  name: string;
  /** Its device node, e.g. `/dev/vdb3`. */
  device: string;
  /** Kernel name of the disk it is on, e.g. `vdb`. */
  disk: string;
  /** GPT partition name (`PARTLABEL`), when it has one. */
  partLabel?: string;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

/** `KEY=VALUE` lines of a sysfs `uevent` file. */
function uevent(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** Sorts names like `vdb10` after `vdb9` (digits by value). */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/**
 * The block device a sysfs entry (`/sys/class/block/X`, `/sys/dev/block/M:m`)
 * is: its kernel name, and its disk (itself, for a whole disk; the parent
 * directory, for a partition).
 */
async function blockDevice(
  entry: string,
): Promise<{ name: string; disk: string; partition: boolean } | undefined> {
  let real: string;
  try {
    real = await Deno.realPath(entry);
  } catch {
    return undefined;
  }
  const parts = real.split("/");
  const name = parts.at(-1)!;
  const partition = (await readText(`${real}/partition`)) !== undefined;
  return { name, disk: partition ? parts.at(-2)! : name, partition };
}

/** Every partition of every disk, in natural order (`vda2` before `vda10`, `vda*` before `vdb*`). */
export async function listPartitions(
  paths: DiskPaths = {},
): Promise<Partition[]> {
  const sys = paths.sysDir ?? "/sys";
  const dev = paths.devDir ?? "/dev";
  const out: Partition[] = [];
  let names: string[];
  try {
    names = [];
    for await (const e of Deno.readDir(`${sys}/class/block`)) {
      names.push(e.name);
    }
  } catch {
    return [];
  }
  for (const name of names.sort(naturalCompare)) {
    const entry = `${sys}/class/block/${name}`;
    const device = await blockDevice(entry);
    if (!device?.partition) continue;
    const info = uevent((await readText(`${entry}/uevent`)) ?? "");
    const node = info.get("DEVNAME") ?? name;
    const partLabel = info.get("PARTNAME");
    out.push({
      name,
      device: `${dev}/${node}`,
      disk: device.disk,
      ...(partLabel !== undefined ? { partLabel } : {}),
    });
  }
  return out;
}

/**
 * The disks that hold a mounted file system (`/proc/self/mountinfo`'s device
 * numbers, through device-mapper and RAID members to their disks): the disk
 * the running system booted from is one of them. In an initramfs nothing is
 * mounted from a disk and the set is empty. File systems without a block
 * device of their own (tmpfs, overlay, btrfs's anonymous numbers) are passed
 * over.
 */
export async function disksInUse(paths: DiskPaths = {}): Promise<Set<string>> {
  const sys = paths.sysDir ?? "/sys";
  const proc = paths.procDir ?? "/proc";
  const disks = new Set<string>();
  const text = (await readText(`${proc}/self/mountinfo`)) ?? "";
  const seen = new Set<string>();
  const visit = async (entry: string, depth: number): Promise<void> => {
    if (depth > 8) return;
    const device = await blockDevice(entry);
    if (!device || seen.has(device.name)) return;
    seen.add(device.name);
    disks.add(device.disk);
    // A device-mapper or md device: the devices it is made of.
    try {
      for await (const slave of Deno.readDir(`${entry}/slaves`)) {
        await visit(`${sys}/class/block/${slave.name}`, depth + 1);
      }
    } catch {
      // Not a stacked device.
    }
  };
  for (const line of text.split("\n")) {
    const majMin = line.split(" ")[2];
    if (!majMin || !/^\d+:\d+$/.test(majMin) || majMin.startsWith("0:")) {
      continue;
    }
    await visit(`${sys}/dev/block/${majMin}`, 0);
  }
  return disks;
}
