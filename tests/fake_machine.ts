/**
 * A fake machine for the local-boot tests: a `sys/` laid out like sysfs
 * (`class/block` and `dev/block` links into `devices/`, a partition's
 * `partition` file and `uevent` with `PARTNAME`), a `dev/` whose partition
 * nodes are image files, and `proc/self/mountinfo`.
 *
 * @module
 */

/** One disk of the machine. */
export interface FakeDisk {
  /** Kernel name, e.g. `vdb`. */
  name: string;
  /** Major number. */
  major: number;
  /** First minor (the disk's own). */
  minor?: number;
  /** Its partitions, numbered from 1. */
  partitions: {
    /** GPT name, if any. */
    partLabel?: string;
    /** Image file copied as the device node (absent: an empty node). */
    image?: string;
  }[];
}

/** Creates the fake machine under `root`; `mounted` lists the `MAJ:MIN` of mounted file systems. */
export async function makeFakeMachine(
  root: string,
  disks: FakeDisk[],
  mounted: string[] = [],
): Promise<void> {
  const sys = `${root}/sys`;
  await Deno.mkdir(`${sys}/class/block`, { recursive: true });
  await Deno.mkdir(`${sys}/dev/block`, { recursive: true });
  await Deno.mkdir(`${root}/dev`, { recursive: true });
  await Deno.mkdir(`${root}/proc/self`, { recursive: true });
  for (const disk of disks) {
    const minor = disk.minor ?? 0;
    const dir = `${sys}/devices/virtual/block/${disk.name}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/uevent`,
      `MAJOR=${disk.major}\nMINOR=${minor}\nDEVNAME=${disk.name}\nDEVTYPE=disk\n`,
    );
    await Deno.symlink(
      `../../devices/virtual/block/${disk.name}`,
      `${sys}/class/block/${disk.name}`,
    );
    await Deno.symlink(
      `../../devices/virtual/block/${disk.name}`,
      `${sys}/dev/block/${disk.major}:${minor}`,
    );
    for (const [i, p] of disk.partitions.entries()) {
      const n = i + 1;
      const name = /\d$/.test(disk.name)
        ? `${disk.name}p${n}`
        : `${disk.name}${n}`;
      const pdir = `${dir}/${name}`;
      await Deno.mkdir(pdir);
      await Deno.writeTextFile(`${pdir}/partition`, `${n}\n`);
      await Deno.writeTextFile(
        `${pdir}/uevent`,
        `MAJOR=${disk.major}\nMINOR=${
          minor + n
        }\nDEVNAME=${name}\nDEVTYPE=partition\nPARTN=${n}\n${
          p.partLabel !== undefined ? `PARTNAME=${p.partLabel}\n` : ""
        }`,
      );
      await Deno.symlink(
        `../../devices/virtual/block/${disk.name}/${name}`,
        `${sys}/class/block/${name}`,
      );
      await Deno.symlink(
        `../../devices/virtual/block/${disk.name}/${name}`,
        `${sys}/dev/block/${disk.major}:${minor + n}`,
      );
      if (p.image) await Deno.copyFile(p.image, `${root}/dev/${name}`);
      else await Deno.writeFile(`${root}/dev/${name}`, new Uint8Array(4096));
    }
  }
  await Deno.writeTextFile(
    `${root}/proc/self/mountinfo`,
    [
      "22 1 0:21 / /proc rw,nosuid - proc proc rw",
      "23 1 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw",
      ...mounted.map((m, i) =>
        `${30 + i} 1 ${m} / /mnt${i} ro,relatime - ext4 /dev/x rw`
      ),
    ].join("\n") + "\n",
  );
}
