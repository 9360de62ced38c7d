/**
 * Synthetic installed disks, built without root: an ext4 file system filled
 * from a tree (`mkfs.ext4 -d`), and a GPT disk image (`sfdisk` on a file)
 * with partitions named like Fedora CoreOS's, the file systems copied in at
 * their offsets (`dd conv=notrunc`). No loop device, no mount.
 *
 * Also {@linkcode coreosBootTree}: the boot partition of an installed
 * Fedora CoreOS / RHCOS (an ostree `loader.N` with BLS entries, `loader`
 * linking to it, the kernels and initramfs under `ostree/`, `grub2/grubenv`,
 * the `ignition.firstboot` stamp).
 *
 * @module
 */

/** A file's content, or a symbolic link. */
export type TreeNode = string | Uint8Array | { symlink: string };

/** Paths (relative, `/`-separated) to what is there. */
export type Tree = Record<string, TreeNode>;

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
  return text;
}

/** Writes `tree` under `dir`. */
async function writeTree(dir: string, tree: Tree): Promise<void> {
  for (const [path, node] of Object.entries(tree)) {
    const full = `${dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof node === "string") await Deno.writeTextFile(full, node);
    else if (node instanceof Uint8Array) await Deno.writeFile(full, node);
    else await Deno.symlink(node.symlink, full);
  }
}

/** Options for {@linkcode makeExt4}. */
export interface Ext4Options {
  /** File system label (`-L`), e.g. `boot`. */
  label?: string;
  /** Size in MiB (default: enough for the tree, at least 8). */
  sizeMiB?: number;
  /** More `mkfs.ext4` arguments (`-b 1024`, `-O ^extent`…). */
  mkfsArgs?: string[];
}

/** Creates the ext4 image `image` holding `tree` (`mkfs.ext4 -d`). */
export async function makeExt4(
  image: string,
  tree: Tree,
  options: Ext4Options = {},
): Promise<void> {
  const src = await Deno.makeTempDir({ prefix: "ab-ext4-" });
  try {
    await writeTree(src, tree);
    let bytes = 0;
    for (const node of Object.values(tree)) {
      bytes += typeof node === "string"
        ? node.length
        : node instanceof Uint8Array
        ? node.length
        : 0;
    }
    const size = options.sizeMiB ??
      Math.max(8, Math.ceil((bytes * 1.3) / 2 ** 20) + 8);
    await Deno.remove(image).catch(() => {});
    await run("truncate", ["-s", `${size}M`, image]);
    await run("mkfs.ext4", [
      "-q",
      "-F",
      ...(options.label ? ["-L", options.label] : []),
      ...(options.mkfsArgs ?? []),
      "-d",
      src,
      image,
    ]);
  } finally {
    await Deno.remove(src, { recursive: true });
  }
}

/** One partition of {@linkcode makeGptDisk}. */
export interface DiskPartition {
  /** GPT partition name (`PARTLABEL`). */
  name: string;
  /** Size in MiB (default: the image's size, rounded up). */
  sizeMiB?: number;
  /** A file system image copied in at the partition's start. */
  image?: string;
}

/** Creates the GPT disk image `disk` with `partitions`, in order, 1 MiB aligned. */
export async function makeGptDisk(
  disk: string,
  partitions: DiskPartition[],
): Promise<void> {
  const sizes: number[] = [];
  for (const p of partitions) {
    const imageMiB = p.image
      ? Math.ceil((await Deno.stat(p.image)).size / 2 ** 20)
      : 1;
    sizes.push(Math.max(p.sizeMiB ?? 0, imageMiB));
  }
  const total = sizes.reduce((a, b) => a + b, 0) + 2;
  await Deno.remove(disk).catch(() => {});
  await run("truncate", ["-s", `${total}M`, disk]);
  const script = [
    "label: gpt",
    ...partitions.map((p, i) => `size=${sizes[i]}MiB, name="${p.name}"`),
  ].join("\n") + "\n";
  const sfdisk = new Deno.Command("sfdisk", {
    args: ["--quiet", "--no-reread", "--no-tell-kernel", disk],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const writer = sfdisk.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const status = await sfdisk.output();
  if (!status.success) {
    throw new Error(
      `sfdisk failed: ${new TextDecoder().decode(status.stderr).trim()}`,
    );
  }
  const table = JSON.parse(await run("sfdisk", ["--json", disk])) as {
    partitiontable: { sectorsize?: number; partitions: { start: number }[] };
  };
  const sector = table.partitiontable.sectorsize ?? 512;
  for (const [i, p] of partitions.entries()) {
    if (!p.image) continue;
    const start = table.partitiontable.partitions[i].start * sector;
    await run("dd", [
      `if=${p.image}`,
      `of=${disk}`,
      "bs=1M",
      `seek=${start}`,
      "oflag=seek_bytes",
      "conv=notrunc,fsync",
      "status=none",
    ]);
  }
}

/** One BLS entry of {@linkcode coreosBootTree}. */
export interface CoreosEntry {
  /** `n` of `ostree-<n>-<os>.conf` (the default deployment has the highest). */
  n: number;
  /** The kernel's bytes. */
  kernel: Uint8Array;
  /** The initramfs's bytes. */
  initrd: Uint8Array;
  /** The `options` line (CoreOS's carries `$ignition_firstboot`). */
  options: string;
  /** `title` (default: `<os> (ostree:<index>)`). */
  title?: string;
}

/** Options for {@linkcode coreosBootTree}. */
export interface CoreosTreeOptions {
  /** The OS name in paths (default `rhcos`). */
  os?: string;
  /** Content of `ignition.firstboot` (absent: no stamp, not a first boot). */
  firstboot?: string;
  /** `grub2/grubenv` variables. */
  grubenv?: Record<string, string>;
}

/** The boot partition of an installed CoreOS as ostree lays it out. */
export function coreosBootTree(
  entries: CoreosEntry[],
  options: CoreosTreeOptions = {},
): Tree {
  const os = options.os ?? "rhcos";
  const tree: Tree = { loader: { symlink: "loader.1" } };
  const count = entries.length;
  for (const e of entries) {
    const dir = `ostree/${os}-${e.n.toString(16).padStart(8, "0")}`;
    tree[`${dir}/vmlinuz-6.1.0`] = e.kernel;
    tree[`${dir}/initramfs-6.1.0.img`] = e.initrd;
    tree[`loader.1/entries/ostree-${e.n}-${os}.conf`] = [
      `title ${e.title ?? `${os} (ostree:${count - e.n})`}`,
      `version ${e.n}`,
      `options ${e.options}`,
      `linux /${dir}/vmlinuz-6.1.0`,
      `initrd /${dir}/initramfs-6.1.0.img`,
      "",
    ].join("\n");
  }
  if (options.firstboot !== undefined) {
    tree["ignition.firstboot"] = options.firstboot;
  }
  const env = Object.entries(options.grubenv ?? {}).map(([k, v]) =>
    `${k}=${v}\n`
  ).join("");
  const block = `# GRUB Environment Block\n${env}`;
  tree["grub2/grubenv"] = block.padEnd(1024, "#");
  return tree;
}
