/**
 * The work directory's rules on real files: ownership and mode of the
 * directory and its cache, exclusive creation that never follows a link nor
 * opens a FIFO, reads only of our own regular files, and the lock.
 *
 * Ownership cases need root (to give a directory to another uid); they are
 * skipped, saying so, otherwise.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  createFile,
  discard,
  diskError as diskErrorOf,
  identityOf,
  isSameFile,
  LOCK_FILE,
  lockWorkDir,
  openOwnFile,
  prepareWorkDir,
} from "../../lib/stage/work_dir.ts";
import {
  CAN_RUN_AS_OTHER_USER,
  chownLink,
  runLibAs,
  settleWithin,
  withTemp,
} from "../test_util.ts";

/** How long an open or a lock may take before the test fails instead of hanging. */
const HANG = { ms: 5000, failure: "still pending after 5000 ms" };

const isRoot = Deno.uid() === 0;
/** A uid that is not ours (nobody). */
const OTHER = 65534;

function diskError(message: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Disk, err.message);
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  };
}

async function mkfifo(path: string): Promise<void> {
  const out = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(out.success, `mkfifo ${path}`);
}

Deno.test("prepareWorkDir: a directory writable by group or others is refused (0770, 0775, 0777, 1777), existing or not; 0700 and 0755 pass and keep their mode", async () => {
  await withTemp(async (dir) => {
    for (const mode of [0o770, 0o775, 0o777, 0o1777, 0o720, 0o702]) {
      const path = `${dir}/m${mode.toString(8)}`;
      await Deno.mkdir(path);
      await Deno.chmod(path, mode);
      await assert.rejects(
        prepareWorkDir(path),
        diskError(
          new RegExp(
            `work directory ${path} is writable by other users \\(mode ${
              mode.toString(8).padStart(4, "0")
            }\\)`,
          ),
        ),
      );
      assert.equal((await Deno.stat(path)).mode! & 0o7777, mode, "kept");
    }
    for (const mode of [0o700, 0o755]) {
      const path = `${dir}/ok${mode.toString(8)}`;
      await Deno.mkdir(path);
      await Deno.chmod(path, mode);
      await prepareWorkDir(path);
      assert.equal((await Deno.stat(path)).mode! & 0o777, mode);
    }
    await prepareWorkDir(`${dir}/new/work`);
    assert.equal((await Deno.stat(`${dir}/new/work`)).mode! & 0o777, 0o700);
  });
});

Deno.test("prepareWorkDir: its cache/ must be a directory of ours too (unless the cache is off)", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/cache`);
    await Deno.chmod(`${dir}/cache`, 0o775);
    await assert.rejects(
      prepareWorkDir(dir),
      diskError(/cache directory .*\/cache is writable by other users/),
    );
    await prepareWorkDir(dir, { cache: false });
    await Deno.remove(`${dir}/cache`);
    await Deno.mkdir(`${dir}/elsewhere`, { mode: 0o700 });
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/cache`);
    await assert.rejects(
      prepareWorkDir(dir),
      diskError(/cache directory .*\/cache exists and is not a directory/),
    );
    await Deno.remove(`${dir}/cache`);
    await Deno.writeTextFile(`${dir}/cache`, "");
    await assert.rejects(prepareWorkDir(dir), diskError(/not a directory/));
  });
});

Deno.test({
  name:
    "prepareWorkDir: a work dir or cache/ owned by another user is refused, even 0755 or 0700",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (dir) => {
      for (const mode of [0o755, 0o700]) {
        const path = `${dir}/theirs${mode.toString(8)}`;
        await Deno.mkdir(path);
        await Deno.chmod(path, mode);
        await Deno.chown(path, OTHER, OTHER);
        await assert.rejects(
          prepareWorkDir(path),
          diskError(
            new RegExp(
              `work directory ${path} belongs to uid ${OTHER}, not to this user \\(uid 0\\)`,
            ),
          ),
        );
      }
      await Deno.mkdir(`${dir}/ours/cache`, { recursive: true, mode: 0o700 });
      await Deno.chown(`${dir}/ours/cache`, OTHER, OTHER);
      await assert.rejects(
        prepareWorkDir(`${dir}/ours`),
        diskError(/cache directory .* belongs to uid 65534/),
      );
    });
  },
});

Deno.test({
  name:
    "prepareWorkDir: a work dir reached through another user's symbolic link is refused (exit 8); root's and ours are followed",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (dir) => {
      await Deno.mkdir(`${dir}/victim`, { mode: 0o755 });
      await Deno.writeTextFile(`${dir}/victim/initrd`, "theirs");
      // Theirs, as the work dir itself, as a parent, or behind a link of ours.
      await Deno.symlink(`${dir}/victim`, `${dir}/theirs`);
      await chownLink(`${dir}/theirs`, OTHER);
      await Deno.mkdir(`${dir}/parent`);
      await Deno.symlink(dir, `${dir}/parent/up`);
      await chownLink(`${dir}/parent/up`, OTHER);
      await Deno.symlink(`${dir}/theirs`, `${dir}/ours`);
      for (
        const path of [
          `${dir}/theirs`,
          `${dir}/parent/up/victim`,
          `${dir}/ours`,
          `${dir}/ours/../theirs`,
        ]
      ) {
        await assert.rejects(
          prepareWorkDir(path),
          diskError(
            new RegExp(
              `is reached through ${dir}/(theirs|parent/up), a symbolic link of uid ${OTHER}`,
            ),
          ),
          path,
        );
      }
      assert.equal(
        await Deno.readTextFile(`${dir}/victim/initrd`),
        "theirs",
        "nothing touched",
      );
      // Root's own link (we are root), and a missing work dir behind it.
      await Deno.symlink(`${dir}/victim`, `${dir}/mine`);
      await prepareWorkDir(`${dir}/mine`);
      await prepareWorkDir(`${dir}/mine/new`);
      assert.ok((await Deno.stat(`${dir}/victim/new`)).isDirectory);
    });
  },
});

Deno.test("prepareWorkDir: 40 symbolic links on the way (relative targets too) are followed; a 41st is refused (exit 8), naming the limit", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/real`, { mode: 0o700 });
    // l1 → l2 → … → l41 → real, each target relative to its link's directory.
    for (let i = 1; i <= 41; i++) {
      await Deno.symlink(i === 41 ? "real" : `l${i + 1}`, `${dir}/l${i}`);
    }
    await prepareWorkDir(`${dir}/l2`);
    await assert.rejects(
      prepareWorkDir(`${dir}/l1`),
      diskError(
        new RegExp(
          `^The work directory ${dir}/l1 is reached through more than 40 symbolic links$`,
        ),
      ),
    );
  });
});

Deno.test({
  name:
    "prepareWorkDir: another user's link is found through a relative work dir, '.', '..' and a relative link target, and named by its real path",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      await Deno.mkdir(`${dir}/victim`, { mode: 0o755 });
      await Deno.symlink(`${dir}/victim`, `${dir}/theirs`);
      await chownLink(`${dir}/theirs`, OTHER);
      await Deno.mkdir(`${dir}/real/sub`, { recursive: true });
      // Ours: a relative target, and a link whose `..` is real, not dir.
      await Deno.symlink("theirs", `${dir}/relative`);
      await Deno.symlink(`${dir}/real/sub`, `${dir}/deep`);
      const cwd = Deno.cwd();
      Deno.chdir(dir);
      try {
        for (
          const path of [
            "theirs",
            "./theirs",
            "real/../theirs",
            `${dir}/./theirs`,
            `${dir}/real/../theirs`,
            `${dir}/deep/../../theirs`,
            `${dir}/relative`,
          ]
        ) {
          await assert.rejects(
            prepareWorkDir(path),
            diskError(
              new RegExp(
                `^The work directory ${
                  path.replaceAll(".", "\\.")
                } is reached through ${dir}/theirs, a symbolic link of uid ${OTHER} `,
              ),
            ),
            path,
          );
        }
      } finally {
        Deno.chdir(cwd);
      }
      assert.deepEqual([...Deno.readDirSync(`${dir}/victim`)], [], "untouched");
    });
  },
});

/**
 * Runs `prepareWorkDir` on each of `paths` as `uid` (root only); "ok" or the
 * error's message for each.
 */
async function prepareAs(uid: number, paths: string[]): Promise<string[]> {
  const result = await runLibAs(
    uid,
    `
    const { prepareWorkDir } = await import(Deno.args[0] + "stage/work_dir.ts");
    const out = [];
    for (const path of Deno.args.slice(1)) {
      try {
        await prepareWorkDir(path);
        out.push("ok");
      } catch (err) {
        out.push(String(err?.message ?? err));
      }
    }
    console.log(JSON.stringify({ uid: Deno.uid(), out }));
  `,
    paths,
  ) as { uid: number; out: string[] };
  assert.equal(result.uid, uid, "the child runs as that user");
  return result.out;
}

Deno.test({
  name:
    "prepareWorkDir for a user other than root: root's links and the user's own are followed, a third user's is refused",
  // Root only (the child runs as that user).
  ignore: !CAN_RUN_AS_OTHER_USER,
  async fn() {
    const THIRD = OTHER - 1;
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      await Deno.chmod(dir, 0o755);
      const home = `${dir}/home`;
      await Deno.mkdir(`${home}/real`, { recursive: true, mode: 0o700 });
      for (const path of [home, `${home}/real`]) {
        await Deno.chown(path, OTHER, OTHER);
      }
      await Deno.symlink(home, `${dir}/by-root`);
      await Deno.symlink(`${home}/real`, `${home}/mine`);
      await chownLink(`${home}/mine`, OTHER);
      await Deno.symlink(`${home}/real`, `${home}/third`);
      await chownLink(`${home}/third`, THIRD);
      const out = await prepareAs(OTHER, [
        `${dir}/by-root/work`,
        `${home}/mine`,
        `${home}/third`,
      ]);
      assert.deepEqual(out.slice(0, 2), ["ok", "ok"], out.join("\n"));
      assert.match(
        out[2],
        new RegExp(
          `^The work directory ${home}/third is reached through ${home}/third, a symbolic link of uid ${THIRD} \\(not root, not this user\\)`,
        ),
      );
      assert.equal((await Deno.stat(`${home}/work`)).uid, OTHER, "made");
    });
  },
});

Deno.test("createFile: a leftover link is removed, never written through; its target is untouched", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/victim`, "precious");
    await Deno.symlink(`${dir}/victim`, `${dir}/kernel.part`);
    await Deno.symlink(`${dir}/nowhere`, `${dir}/dangling.part`);
    for (const name of ["kernel.part", "dangling.part"]) {
      const file = await createFile(`${dir}/${name}`);
      try {
        await file.write(new TextEncoder().encode("new"));
        const info = await Deno.lstat(`${dir}/${name}`);
        assert.ok(info.isFile && !info.isSymlink, name);
        assert.equal(info.mode! & 0o777, 0o600);
      } finally {
        file.close();
      }
    }
    assert.equal(await Deno.readTextFile(`${dir}/victim`), "precious");
    await assert.rejects(Deno.lstat(`${dir}/nowhere`), Deno.errors.NotFound);
  });
});

Deno.test("createFile: a FIFO, a socket-like leftover or an old file is replaced without blocking; a directory is a Disk error", async () => {
  await withTemp(async (dir) => {
    await mkfifo(`${dir}/kernel.part`);
    const file = await settleWithin(createFile(`${dir}/kernel.part`), HANG);
    file.close();
    assert.ok((await Deno.lstat(`${dir}/kernel.part`)).isFile);

    await Deno.writeTextFile(`${dir}/old`, "old bytes");
    // Held open so that its inode cannot be reused for the new file.
    using old = await Deno.open(`${dir}/old`);
    const fresh = await createFile(`${dir}/old`);
    const after = await fresh.stat();
    fresh.close();
    assert.equal(after.size, 0, "a new, empty file");
    assert.notEqual(after.ino, (await old.stat()).ino);

    await Deno.mkdir(`${dir}/initrd.part`);
    await assert.rejects(
      createFile(`${dir}/initrd.part`),
      diskError(
        /initrd\.part is a directory where the bootloader writes a file/,
      ),
    );
    assert.ok((await Deno.stat(`${dir}/initrd.part`)).isDirectory, "kept");
  });
});

Deno.test("openOwnFile: only our regular file, and only the one that was verified", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "verified bytes");
    const identity = identityOf(await Deno.stat(`${dir}/file`));
    (await openOwnFile(`${dir}/file`, identity)).close();

    await Deno.symlink(`${dir}/file`, `${dir}/link`);
    await assert.rejects(
      openOwnFile(`${dir}/link`),
      diskError(/link is not a regular file/),
    );
    await mkfifo(`${dir}/fifo`);
    await assert.rejects(
      settleWithin(openOwnFile(`${dir}/fifo`), HANG),
      diskError(/fifo is not a regular file/),
    );
    await Deno.writeTextFile(`${dir}/other`, "verified bytes");
    await Deno.rename(`${dir}/other`, `${dir}/file`);
    await assert.rejects(
      openOwnFile(`${dir}/file`, identity),
      diskError(/is not the file that was verified/),
    );
    if (isRoot) {
      await Deno.writeTextFile(`${dir}/theirs`, "x");
      await Deno.chown(`${dir}/theirs`, OTHER, OTHER);
      await assert.rejects(
        openOwnFile(`${dir}/theirs`),
        diskError(/belongs to uid 65534/),
      );
    }
  });
});

Deno.test("lockWorkDir: a second holder is refused at once (exit 9) until the first releases; the lock file stays", async () => {
  await withTemp(async (dir) => {
    const work = `${dir}/work`;
    const first = await lockWorkDir(work);
    try {
      await assert.rejects(
        settleWithin(lockWorkDir(work), HANG),
        (err: unknown) => {
          assert.ok(err instanceof BootError);
          assert.equal(err.exitCode, ExitCode.Locked);
          assert.match(
            err.message,
            /^Another instance of the bootloader is using the work directory .*\/work \(it holds .*\/work\/\.lock\)/,
          );
          return true;
        },
      );
    } finally {
      first.release();
    }
    first.release(); // idempotent
    {
      using second = await lockWorkDir(work);
      assert.equal(second.dir, work);
    }
    const info = await Deno.lstat(`${work}/${LOCK_FILE}`);
    assert.ok(info.isFile);
    assert.equal(info.mode! & 0o777, 0o600);
    (await lockWorkDir(work)).release();
  });
});

Deno.test("lockWorkDir: a link, FIFO or directory at the lock file's name", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/victim`, "precious");
    await Deno.symlink(`${dir}/victim`, `${dir}/${LOCK_FILE}`);
    (await lockWorkDir(dir)).release();
    assert.ok((await Deno.lstat(`${dir}/${LOCK_FILE}`)).isFile);
    assert.equal(await Deno.readTextFile(`${dir}/victim`), "precious");
    await Deno.remove(`${dir}/${LOCK_FILE}`);
    await mkfifo(`${dir}/${LOCK_FILE}`);
    (await settleWithin(lockWorkDir(dir), HANG)).release();
    assert.ok((await Deno.lstat(`${dir}/${LOCK_FILE}`)).isFile);
    await Deno.remove(`${dir}/${LOCK_FILE}`);
    await Deno.mkdir(`${dir}/${LOCK_FILE}`);
    await assert.rejects(lockWorkDir(dir), diskError(/is a directory/));
  });
});

Deno.test("isSameFile: device, inode, size and modification time must all match", () => {
  const id = { dev: 1, ino: 2, size: 3, mtimeMs: 4 };
  assert.ok(isSameFile({ ...id }, id));
  for (const other of [{ dev: 9 }, { ino: 9 }, { size: 9 }, { mtimeMs: 9 }]) {
    assert.ok(!isSameFile({ ...id, ...other }, id), JSON.stringify(other));
  }
});

Deno.test("diskError: file-system failures become Disk errors naming the path; bugs and our own errors pass unchanged", () => {
  const failures: Error[] = [
    new Deno.errors.PermissionDenied("denied"),
    new Deno.errors.NotFound("missing"),
    new Deno.errors.AlreadyExists("exists"),
    new Deno.errors.IsADirectory("dir"),
    new Deno.errors.NotADirectory("notdir"),
    new Deno.errors.FilesystemLoop("loop"),
    Object.assign(new Error("No space left on device"), { code: "ENOSPC" }),
    Object.assign(new Error("read-only"), { code: "EROFS" }),
  ];
  for (const err of failures) {
    const mapped = diskErrorOf(err, "/w/k");
    assert.ok(mapped instanceof BootError, `${err.name}: ${mapped}`);
    assert.equal(mapped.exitCode, ExitCode.Disk);
    assert.match(mapped.message, /^Cannot write \/w\/k: /);
  }
  const own = new BootError("already ours", ExitCode.Verify);
  const unchanged: unknown[] = [
    own,
    new TypeError("a bug"),
    // Node-style codes of programming errors are not errnos.
    Object.assign(new Error("bad argument"), { code: "ERR_INVALID_ARG_TYPE" }),
    Object.assign(new Error("lower case"), { code: "Enospc" }),
    Object.assign(new Error("an errno-like tail"), { code: "ERR_EIO" }),
    "a string",
  ];
  for (const err of unchanged) assert.equal(diskErrorOf(err, "/w/k"), err);
});

Deno.test("discard: removes a file or a link (never its target), leaves a directory, ignores a missing name", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/target`, "keep");
    await Deno.symlink(`${dir}/target`, `${dir}/link`);
    await Deno.writeTextFile(`${dir}/file`, "x");
    await Deno.mkdir(`${dir}/empty`);
    for (const name of ["link", "file", "empty", "missing"]) {
      await discard(`${dir}/${name}`);
    }
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["empty", "target"]);
    assert.equal(await Deno.readTextFile(`${dir}/target`), "keep");
  });
});

Deno.test("createFile and openOwnFile: a missing directory or file is a Disk error naming the path", async () => {
  await withTemp(async (dir) => {
    await assert.rejects(
      createFile(`${dir}/no/such/file`),
      diskError(/^Cannot write .*\/no\/such\/file: /),
    );
    await assert.rejects(
      openOwnFile(`${dir}/missing`),
      diskError(/^Cannot write .*\/missing: /),
    );
  });
});

Deno.test({
  name: "lockWorkDir: a lock file of another user is replaced by one of ours",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (dir) => {
      await Deno.writeTextFile(`${dir}/${LOCK_FILE}`, "");
      await Deno.chown(`${dir}/${LOCK_FILE}`, OTHER, OTHER);
      (await lockWorkDir(dir)).release();
      assert.equal((await Deno.lstat(`${dir}/${LOCK_FILE}`)).uid, 0);
    });
  },
});

Deno.test("prepareWorkDir: a directory on the way that others may write without the sticky bit is refused (exit 8), naming it; a sticky one passes", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    for (const mode of [0o777, 0o775, 0o757]) {
      await Deno.mkdir(`${dir}/open`);
      await Deno.chmod(`${dir}/open`, mode);
      await assert.rejects(
        prepareWorkDir(`${dir}/open/work`),
        diskError(
          new RegExp(
            `reached through ${dir}/open, writable by other users without the sticky bit \\(mode 0${
              mode.toString(8)
            }\\): use a path no other user controls \\(--work-dir\\)$`,
          ),
        ),
      );
      // Through a link of ours too: the link's target is on the way.
      await Deno.symlink(`${dir}/open`, `${dir}/link`);
      await assert.rejects(
        prepareWorkDir(`${dir}/link/sub/work`),
        diskError(new RegExp(`reached through ${dir}/open, writable`)),
      );
      await Deno.remove(`${dir}/link`);
      await Deno.remove(`${dir}/open`, { recursive: true });
    }
    // Sticky (as /tmp): others cannot rename what is ours in it.
    await Deno.mkdir(`${dir}/sticky`);
    await Deno.chmod(`${dir}/sticky`, 0o1777);
    await prepareWorkDir(`${dir}/sticky/work`);
    assert.ok((await Deno.stat(`${dir}/sticky/work`)).isDirectory);
  });
});

Deno.test({
  name:
    "prepareWorkDir: a directory on the way that another user owns is refused (exit 8), naming it; root's pass",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      await Deno.mkdir(`${dir}/theirs/deeper`, { recursive: true });
      await Deno.chown(`${dir}/theirs`, OTHER, OTHER);
      for (const work of [`${dir}/theirs/work`, `${dir}/theirs/deeper/work`]) {
        await assert.rejects(
          prepareWorkDir(work),
          diskError(
            new RegExp(
              `reached through ${dir}/theirs, a directory of uid ${OTHER} \\(not root, not this user\\)`,
            ),
          ),
        );
      }
      await assert.rejects(
        Deno.stat(`${dir}/theirs/work`),
        Deno.errors.NotFound,
      );
      await Deno.mkdir(`${dir}/ours`);
      await prepareWorkDir(`${dir}/ours/work`);
    });
  },
});
