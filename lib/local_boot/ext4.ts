/**
 * A read-only reader of ext2/ext3/ext4 file systems, for the boot partition
 * of an installed system: superblock (label, UUID), directories, regular
 * files and symbolic links, through extents or block maps. It reads through
 * a {@linkcode BlockReader} (a block device opened read-only, an image file in
 * tests): nothing is mounted, nothing is ever written, and the journal is not
 * replayed (like `mount -o ro,noload`; a file system that was not cleanly
 * unmounted is read as its last checkpoint left it, and says so).
 *
 * The bytes come from a disk we do not control: every offset, count and
 * depth is bounded, and anything unexpected is an {@linkcode Ext4Error}.
 *
 * @module
 */

/** Reads bytes of a device or image (fewer than asked only at its end). */
export interface BlockReader {
  /** Reads `length` bytes at `offset`. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** The file system is not ext2/3/4, uses a feature this reader lacks, or is damaged. */
export class Ext4Error extends Error {
  /** Creates the error (one line). */
  constructor(message: string) {
    super(message);
    this.name = "Ext4Error";
  }
}

/** One entry of a directory. */
export interface Ext4DirEntry {
  /** File name (UTF-8, lossy). */
  name: string;
  /** Inode number. */
  ino: number;
}

/** What a path names once its links are followed. */
export interface Ext4File {
  /** Inode number. */
  ino: number;
  /** Kind of file. */
  kind: "file" | "directory" | "symlink" | "other";
  /** Size in bytes. */
  size: number;
}

/** An open, read-only ext2/3/4 file system. */
export interface Ext4 {
  /** Volume label (`e2label`), "" when none. */
  label: string;
  /** File system UUID, lower-case with dashes. */
  uuid: string;
  /** True when the journal holds changes that were never written back (not cleanly unmounted). */
  needsRecovery: boolean;
  /** Resolves `path` from the root, following symbolic links (also the last one). */
  stat(path: string): Promise<Ext4File>;
  /** The entries of the directory at `path` ("." and ".." left out). */
  readDir(path: string): Promise<Ext4DirEntry[]>;
  /** The whole content of the regular file at `path`, refused when larger than `maxBytes`. */
  readFile(path: string, maxBytes: number): Promise<Uint8Array>;
  /** The content of the regular file at `path`, in chunks of at most 1 MiB. */
  chunks(path: string): AsyncIterable<Uint8Array>;
}

const SUPERBLOCK = 1024;
const MAGIC = 0xef53;
const ROOT_INO = 2;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const EXTENTS_FL = 0x80000;
const INLINE_DATA_FL = 0x10000000;
const EXTENT_MAGIC = 0xf30a;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_64BIT = 0x80;
/** Incompatible features this reader understands (filetype, recover, extents, 64bit, mmp, flex_bg, csum_seed, largedir, inline_data). */
const INCOMPAT_KNOWN = 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 |
  0x4000 | 0x8000;
const MAX_SYMLINKS = 40;
const MAX_DEPTH = 5;
/** Largest directory read (a boot partition's are a few KiB). */
const MAX_DIR_BYTES = 16 << 20;
const CHUNK = 1 << 20;

interface Inode {
  ino: number;
  mode: number;
  size: number;
  flags: number;
  block: Uint8Array;
}

/** A run of the file's blocks: `count` blocks from `logical` at `physical` (0: a hole). */
interface Run {
  logical: number;
  physical: number;
  count: number;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function formatUuid(bytes: Uint8Array): string {
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${
    hex.slice(16, 20)
  }-${hex.slice(20)}`;
}

/** The geometry the superblock gives. */
interface Geometry {
  blockSize: number;
  blocksCount: number;
  inodesCount: number;
  inodesPerGroup: number;
  firstDataBlock: number;
  inodeSize: number;
  descSize: number;
}

/** Reads the superblock: the geometry, label, UUID and feature flags; refuses what cannot be read. */
function parseSuperblock(
  sb: Uint8Array,
): { geometry: Geometry; label: string; uuid: string; incompat: number } {
  if (sb.length < 1024 || view(sb).getUint16(56, true) !== MAGIC) {
    throw new Ext4Error("no ext2/3/4 file system (no superblock magic)");
  }
  const s = view(sb);
  const logBlock = s.getUint32(24, true);
  if (logBlock > 6) throw new Ext4Error(`block size 2^${10 + logBlock}`);
  const blockSize = 1024 << logBlock;
  const incompat = s.getUint32(96, true);
  const unknown = incompat & ~INCOMPAT_KNOWN;
  if (unknown) {
    throw new Ext4Error(
      `incompatible feature flags 0x${unknown.toString(16)} are not supported`,
    );
  }
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const geometry: Geometry = {
    blockSize,
    blocksCount: s.getUint32(4, true) +
      (is64 ? s.getUint32(336, true) * 2 ** 32 : 0),
    inodesCount: s.getUint32(0, true),
    inodesPerGroup: s.getUint32(40, true),
    firstDataBlock: s.getUint32(20, true),
    inodeSize: s.getUint32(76, true) === 0 ? 128 : s.getUint16(88, true),
    descSize: is64 ? s.getUint16(254, true) : 32,
  };
  const { inodeSize, descSize, inodesPerGroup } = geometry;
  if (
    inodesPerGroup === 0 || inodeSize < 128 || inodeSize > blockSize ||
    (inodeSize & (inodeSize - 1)) !== 0 || descSize < 32 ||
    descSize > blockSize
  ) {
    throw new Ext4Error("the superblock is damaged");
  }
  return {
    geometry,
    label: new TextDecoder().decode(sb.subarray(120, 136)).replace(
      /\0.*$/s,
      "",
    ),
    uuid: formatUuid(sb.subarray(104, 120)),
    incompat,
  };
}

function kindOf(mode: number): Ext4File["kind"] {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

/** Where the blocks of files, directories and links are, and their bytes. */
class Reader {
  readonly #reader: BlockReader;
  readonly #g: Geometry;

  constructor(reader: BlockReader, geometry: Geometry) {
    this.#reader = reader;
    this.#g = geometry;
  }

  /** `count` whole blocks from `block`, which must lie inside the file system. */
  async blocks(block: number, count: number): Promise<Uint8Array> {
    const { blockSize, blocksCount } = this.#g;
    if (block <= 0 || block + count > blocksCount) {
      throw new Ext4Error(`block ${block} is outside the file system`);
    }
    const bytes = await this.#reader.read(block * blockSize, count * blockSize);
    if (bytes.length !== count * blockSize) {
      throw new Ext4Error(`block ${block} is beyond the end of the device`);
    }
    return bytes;
  }

  /** Inode `ino`, from its group's inode table. */
  async inode(ino: number): Promise<Inode> {
    const g = this.#g;
    if (ino < 1 || ino > g.inodesCount) {
      throw new Ext4Error(`inode ${ino} does not exist`);
    }
    const group = Math.floor((ino - 1) / g.inodesPerGroup);
    const index = (ino - 1) % g.inodesPerGroup;
    const descOffset = (g.firstDataBlock + 1) * g.blockSize +
      group * g.descSize;
    const desc = await this.#reader.read(descOffset, g.descSize);
    if (desc.length !== g.descSize) {
      throw new Ext4Error("truncated descriptors");
    }
    const d = view(desc);
    const table = d.getUint32(8, true) +
      (g.descSize >= 64 ? d.getUint32(0x28, true) * 2 ** 32 : 0);
    if (table <= 0 || table >= g.blocksCount) {
      throw new Ext4Error(`group ${group} has no inode table`);
    }
    const raw = await this.#reader.read(
      table * g.blockSize + index * g.inodeSize,
      128,
    );
    if (raw.length !== 128) throw new Ext4Error(`inode ${ino} is truncated`);
    const v = view(raw);
    return {
      ino,
      mode: v.getUint16(0, true),
      size: v.getUint32(4, true) + v.getUint32(108, true) * 2 ** 32,
      flags: v.getUint32(32, true),
      block: raw.slice(40, 100),
    };
  }

  /** The runs of an extent tree node (`node` starts with its header). */
  async #extentRuns(node: Uint8Array, depth: number, out: Run[]) {
    const v = view(node);
    if (node.length < 12 || v.getUint16(0, true) !== EXTENT_MAGIC) {
      throw new Ext4Error("an extent tree is damaged");
    }
    const entries = v.getUint16(2, true);
    const level = v.getUint16(6, true);
    if (
      level > MAX_DEPTH || depth > MAX_DEPTH || 12 + entries * 12 > node.length
    ) {
      throw new Ext4Error("an extent tree is damaged");
    }
    for (let i = 0; i < entries; i++) {
      const at = 12 + i * 12;
      if (level > 0) {
        const leaf = v.getUint16(at + 8, true) * 2 ** 32 +
          v.getUint32(at + 4, true);
        await this.#extentRuns(await this.blocks(leaf, 1), depth + 1, out);
        continue;
      }
      let count = v.getUint16(at + 4, true);
      // Past 32768: an allocated but unwritten extent, which reads as zeros.
      const unwritten = count > 32768;
      if (unwritten) count -= 32768;
      out.push({
        logical: v.getUint32(at, true),
        physical: unwritten
          ? 0
          : v.getUint16(at + 6, true) * 2 ** 32 + v.getUint32(at + 8, true),
        count,
      });
    }
  }

  /** The runs of a block-mapped (ext2/3) file of `blocks` blocks. */
  async #mapRuns(inode: Inode, blocks: number): Promise<Run[]> {
    const out: Run[] = [];
    const perBlock = this.#g.blockSize / 4;
    let logical = 0;
    const walk = async (ptr: number, level: number): Promise<void> => {
      if (logical >= blocks) return;
      if (ptr === 0) {
        logical += perBlock ** level;
        return;
      }
      if (level === 0) {
        out.push({ logical, physical: ptr, count: 1 });
        logical++;
        return;
      }
      const table = view(await this.blocks(ptr, 1));
      for (let i = 0; i < perBlock && logical < blocks; i++) {
        await walk(table.getUint32(i * 4, true), level - 1);
      }
    };
    const b = view(inode.block);
    for (let i = 0; i < 12; i++) await walk(b.getUint32(i * 4, true), 0);
    for (let level = 1; level <= 3; level++) {
      await walk(b.getUint32((11 + level) * 4, true), level);
    }
    return out;
  }

  /** Where the file's blocks are, in logical order. */
  async #runs(inode: Inode): Promise<Run[]> {
    if (inode.flags & INLINE_DATA_FL) {
      throw new Ext4Error(`inode ${inode.ino} keeps its data inline`);
    }
    const blocks = Math.ceil(inode.size / this.#g.blockSize);
    let runs: Run[];
    if (inode.flags & EXTENTS_FL) {
      runs = [];
      await this.#extentRuns(inode.block, 0, runs);
    } else {
      runs = await this.#mapRuns(inode, blocks);
    }
    return runs.filter((r) => r.logical < blocks)
      .sort((a, b) => a.logical - b.logical);
  }

  /** The file's bytes in order, holes as zeros, in chunks of at most {@linkcode CHUNK}. */
  async *data(inode: Inode): AsyncGenerator<Uint8Array> {
    const blockSize = this.#g.blockSize;
    let position = 0; // in bytes
    function* zeros(upTo: number) {
      while (position < upTo) {
        const n = Math.min(CHUNK, upTo - position);
        position += n;
        yield new Uint8Array(n);
      }
    }
    for (const run of await this.#runs(inode)) {
      const start = run.logical * blockSize;
      if (start < position) throw new Ext4Error("extents overlap");
      yield* zeros(Math.min(start, inode.size));
      const end = Math.min((run.logical + run.count) * blockSize, inode.size);
      if (run.physical === 0) {
        yield* zeros(end);
        continue;
      }
      for (let block = run.physical; position < end;) {
        const count = Math.min(
          CHUNK / blockSize,
          Math.ceil((end - position) / blockSize),
        );
        const bytes = await this.blocks(block, count);
        const n = Math.min(bytes.length, end - position);
        position += n;
        block += count;
        yield bytes.subarray(0, n);
      }
    }
    yield* zeros(inode.size);
  }

  /** The whole file, refused when larger than `maxBytes`. */
  async readAll(inode: Inode, maxBytes: number, what: string) {
    if (inode.size > maxBytes) {
      throw new Ext4Error(`${what} is larger than ${maxBytes} bytes`);
    }
    const out = new Uint8Array(inode.size);
    let at = 0;
    for await (const chunk of this.data(inode)) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  /**
   * The entries of a directory. A linear walk reads every entry, hashed
   * (htree) directories included: their index blocks look like empty entries.
   */
  async entries(dir: Inode): Promise<Ext4DirEntry[]> {
    const bytes = await this.readAll(
      dir,
      MAX_DIR_BYTES,
      `directory ${dir.ino}`,
    );
    const v = view(bytes);
    const out: Ext4DirEntry[] = [];
    const blockSize = this.#g.blockSize;
    for (let block = 0; block < bytes.length; block += blockSize) {
      let at = block;
      const end = Math.min(block + blockSize, bytes.length);
      while (at + 8 <= end) {
        const ino = v.getUint32(at, true);
        const recLen = v.getUint16(at + 4, true);
        const nameLen = bytes[at + 6];
        if (recLen < 8 || at + recLen > end || 8 + nameLen > recLen) {
          throw new Ext4Error(`directory ${dir.ino} is damaged`);
        }
        const name = new TextDecoder().decode(
          bytes.subarray(at + 8, at + 8 + nameLen),
        );
        if (ino !== 0 && name !== "." && name !== "..") {
          out.push({ name, ino });
        }
        at += recLen;
      }
    }
    return out;
  }

  /** A symbolic link's target (a fast link keeps it in the block map itself). */
  async linkTarget(inode: Inode): Promise<string> {
    const bytes = inode.size < 60 && !(inode.flags & EXTENTS_FL)
      ? inode.block.subarray(0, inode.size)
      : await this.readAll(inode, 4096, `symbolic link ${inode.ino}`);
    return new TextDecoder().decode(bytes);
  }

  /** Resolves `path` from the root, following every symbolic link on the way (the last one too). */
  async resolve(path: string): Promise<Inode> {
    let links = 0;
    // `start` is the chain of directories from the root to the current one.
    const walk = async (start: Inode[], parts: string[]): Promise<Inode[]> => {
      const stack = [...start];
      for (const part of parts) {
        if (part === "" || part === ".") continue;
        if (part === "..") {
          if (stack.length > 1) stack.pop();
          continue;
        }
        const dir = stack.at(-1)!;
        if (kindOf(dir.mode) !== "directory") {
          throw new Ext4Error(`${path}: not a directory`);
        }
        const entry = (await this.entries(dir)).find((e) => e.name === part);
        if (!entry) throw new Ext4Error(`${path}: no such file`);
        const inode = await this.inode(entry.ino);
        if (kindOf(inode.mode) !== "symlink") {
          stack.push(inode);
          continue;
        }
        if (++links > MAX_SYMLINKS) {
          throw new Ext4Error(`${path}: too many symbolic links`);
        }
        const target = await this.linkTarget(inode);
        const base = target.startsWith("/") ? [stack[0]] : stack;
        const resolved = await walk(base, target.split("/"));
        stack.splice(0, stack.length, ...resolved);
      }
      return stack;
    };
    return (await walk([await this.inode(ROOT_INO)], path.split("/"))).at(-1)!;
  }

  /** The regular file at `path`. */
  async regular(path: string): Promise<Inode> {
    const inode = await this.resolve(path);
    if (kindOf(inode.mode) !== "file") {
      throw new Ext4Error(`${path}: not a regular file`);
    }
    return inode;
  }
}

/**
 * Opens the ext2/3/4 file system `reader` holds. Throws {@linkcode Ext4Error}
 * when there is none (no magic) or it needs a feature this reader lacks.
 */
export async function openExt4(reader: BlockReader): Promise<Ext4> {
  const sb = parseSuperblock(await reader.read(SUPERBLOCK, 1024));
  const fs = new Reader(reader, sb.geometry);
  return {
    label: sb.label,
    uuid: sb.uuid,
    needsRecovery: (sb.incompat & INCOMPAT_RECOVER) !== 0,
    stat: async (path) => {
      const inode = await fs.resolve(path);
      return { ino: inode.ino, kind: kindOf(inode.mode), size: inode.size };
    },
    readDir: async (path) => {
      const inode = await fs.resolve(path);
      if (kindOf(inode.mode) !== "directory") {
        throw new Ext4Error(`${path}: not a directory`);
      }
      return await fs.entries(inode);
    },
    readFile: async (path, maxBytes) =>
      await fs.readAll(await fs.regular(path), maxBytes, path),
    chunks: (path) => ({
      async *[Symbol.asyncIterator]() {
        yield* fs.data(await fs.regular(path));
      },
    }),
  };
}

/** A {@linkcode BlockReader} over an open file or block device (read with positioned reads). */
export function fileReader(file: Deno.FsFile): BlockReader {
  return {
    read: async (offset, length) => {
      const out = new Uint8Array(length);
      await file.seek(offset, Deno.SeekMode.Start);
      let have = 0;
      while (have < length) {
        const n = await file.read(out.subarray(have));
        if (n === null) break;
        have += n;
      }
      return out.subarray(0, have);
    },
  };
}
