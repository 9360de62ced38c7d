/**
 * "A path another user can change", on real files: the file a path leads to
 * (its mode, its owner), the directories on the way (their mode, the sticky
 * bit, their owner), the symbolic links on the way (their owner, how many)
 * and the one-line refusal built from what was found.
 *
 * Ownership cases need root (to give a file to another uid); they are
 * skipped, saying so, otherwise. The walk's handling of `.`, `..`, relative
 * paths and relative link targets is tested through the work directory
 * (work_dir_test.ts), which walks its path with it.
 */

import assert from "node:assert/strict";
import {
  assertTrustedPath,
  MAX_LINKS,
  untrustedPart,
  UntrustedPathError,
  untrustedRefusal,
} from "../../lib/path_trust.ts";
import {
  CAN_RUN_AS_OTHER_USER,
  chownLink,
  runLibAs,
  withTemp,
} from "../test_util.ts";

const isRoot = Deno.uid() === 0;
/** A uid that is not ours (nobody). */
const OTHER = 65534;

/** A file of ours with `mode` (set after creation: the umask does not apply). */
async function file(path: string, mode: number): Promise<string> {
  await Deno.writeTextFile(path, "ASSISTED_IPXE_URL=http://h/x\n");
  await Deno.chmod(path, mode);
  return path;
}

Deno.test("untrustedPart: a file writable by its group or by others is refused, naming its mode; 0644, 0640, 0600 and 0444 of ours pass", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    for (const mode of [0o666, 0o664, 0o646, 0o622, 0o602, 0o620]) {
      const path = await file(`${dir}/m${mode.toString(8)}`, mode);
      const text = mode.toString(8).padStart(4, "0");
      assert.deepEqual(untrustedPart(path), {
        kind: "file",
        path,
        why: `writable by other users (mode ${text})`,
        text: `is writable by other users (mode ${text})`,
        fix: `chmod go-w ${path}`,
      });
    }
    for (const mode of [0o644, 0o640, 0o600, 0o444, 0o4755]) {
      const path = await file(`${dir}/ok${mode.toString(8)}`, mode);
      assert.equal(untrustedPart(path), undefined, mode.toString(8));
    }
  });
});

Deno.test("untrustedPart: a directory on the way writable by group or others without the sticky bit is refused, naming it; a sticky 1777 one passes", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    for (const mode of [0o775, 0o777, 0o757, 0o2770]) {
      const open = `${dir}/open${mode.toString(8)}`;
      await Deno.mkdir(`${open}/deeper`, { recursive: true });
      await Deno.chmod(open, mode);
      const path = await file(`${open}/deeper/config.env`, 0o600);
      const why = `writable by other users without the sticky bit (mode ${
        mode.toString(8).padStart(4, "0")
      })`;
      assert.deepEqual(untrustedPart(path), {
        kind: "directory",
        path: open,
        why,
        text: `is reached through ${open}, ${why}`,
        fix: `chmod go-w ${open}`,
      });
      // A missing file there is still reached through it.
      assert.equal(untrustedPart(`${open}/missing`)?.path, open);
    }
    const sticky = `${dir}/sticky`;
    await Deno.mkdir(sticky);
    await Deno.chmod(sticky, 0o1777);
    assert.equal(untrustedPart(await file(`${sticky}/x`, 0o644)), undefined);
    // The sticky bit protects names, not the file: its own mode still counts.
    assert.equal(untrustedPart(await file(`${sticky}/y`, 0o666))?.kind, "file");
  });
});

Deno.test("untrustedPart: a link is followed to what it leads to, named by its real path; a missing part ends the walk", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    await Deno.mkdir(`${dir}/real`);
    const target = await file(`${dir}/real/open.env`, 0o666);
    await Deno.symlink(target, `${dir}/absolute`);
    await Deno.symlink("real/open.env", `${dir}/relative`);
    await Deno.symlink("real", `${dir}/dir-link`);
    for (
      const path of [
        `${dir}/absolute`,
        `${dir}/relative`,
        `${dir}/dir-link/open.env`,
      ]
    ) {
      const part = untrustedPart(path);
      assert.equal(part?.path, target, path);
      assert.equal(
        part?.text,
        `leads to ${target}, writable by other users (mode 0666)`,
      );
    }
    await Deno.symlink(`${dir}/nowhere`, `${dir}/dangling`);
    assert.equal(untrustedPart(`${dir}/dangling`), undefined);
    assert.equal(untrustedPart(`${dir}/no/such/file`), undefined);
  });
});

Deno.test(`untrustedPart: ${MAX_LINKS} links on the way are followed, one more is refused, naming the path as given`, async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    await file(`${dir}/real`, 0o600);
    for (let i = 1; i <= MAX_LINKS + 1; i++) {
      await Deno.symlink(
        i === MAX_LINKS + 1 ? "real" : `l${i + 1}`,
        `${dir}/l${i}`,
      );
    }
    assert.equal(untrustedPart(`${dir}/l2`), undefined);
    const why = `reached through more than ${MAX_LINKS} symbolic links`;
    assert.deepEqual(untrustedPart(`${dir}/l1`), {
      kind: "links",
      path: `${dir}/l1`,
      why,
      text: `is ${why}`,
    });
  });
});

Deno.test("untrustedPart: final false leaves what the path leads to to its caller; the null device passes, another device is judged by its mode", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const open = await file(`${dir}/open`, 0o666);
    assert.equal(untrustedPart(open, { final: false }), undefined);
    assert.equal(untrustedPart(open, { final: true })?.kind, "file");
    await Deno.mkdir(`${dir}/wide`);
    await Deno.chmod(`${dir}/wide`, 0o777);
    assert.equal(untrustedPart(`${dir}/wide`, { final: false }), undefined);
    assert.equal(
      untrustedPart(`${dir}/wide/x`, { final: false })?.kind,
      "directory",
    );
    await Deno.symlink("/dev/null", `${dir}/null`);
    assert.equal(untrustedPart(`${dir}/null`), undefined, "a link to it");
  });
  assert.equal(untrustedPart("/dev/null"), undefined);
  assert.equal(untrustedPart("/etc/passwd"), undefined, "root's file");
  assert.equal(untrustedPart("/"), undefined);
  if ((Deno.statSync("/dev/zero").mode! & 0o002) !== 0) {
    assert.equal(untrustedPart("/dev/zero")?.kind, "file");
  }
});

Deno.test({
  name:
    "untrustedPart: another user's file, directory on the way and symbolic link are refused, naming the uid; root's pass",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      const theirs = await file(`${dir}/theirs.env`, 0o644);
      await chownLink(theirs, OTHER);
      const other = `(not root, not this user)`;
      assert.deepEqual(untrustedPart(theirs), {
        kind: "file",
        path: theirs,
        why: `a file of uid ${OTHER} ${other}`,
        text: `is a file of uid ${OTHER} ${other}`,
      });
      await Deno.mkdir(`${dir}/home/sub`, { recursive: true });
      await chownLink(`${dir}/home`, OTHER);
      const inside = await file(`${dir}/home/sub/x.env`, 0o600);
      assert.deepEqual(untrustedPart(inside), {
        kind: "directory",
        path: `${dir}/home`,
        why: `a directory of uid ${OTHER} ${other}`,
        text:
          `is reached through ${dir}/home, a directory of uid ${OTHER} ${other}`,
      });
      assert.equal(
        untrustedPart(`${dir}/home`)?.text,
        `is a directory of uid ${OTHER} ${other}`,
      );
      const mine = await file(`${dir}/mine.env`, 0o600);
      await Deno.symlink(mine, `${dir}/their-link`);
      await chownLink(`${dir}/their-link`, OTHER);
      assert.deepEqual(untrustedPart(`${dir}/their-link`), {
        kind: "link",
        path: `${dir}/their-link`,
        why: `a symbolic link of uid ${OTHER} ${other}`,
        text:
          `is reached through ${dir}/their-link, a symbolic link of uid ${OTHER} ${other}`,
      });
      // Root's link to our file: followed (we are root: root's is ours).
      await Deno.symlink(mine, `${dir}/root-link`);
      assert.equal(untrustedPart(`${dir}/root-link`), undefined);
    });
  },
});

Deno.test("untrustedRefusal: the subject, what was found, why it matters and the fix; a loop of links says only that", () => {
  assert.equal(
    untrustedRefusal("Config file /etc/x.env", {
      kind: "file",
      path: "/etc/x.env",
      why: "writable by other users (mode 0666)",
      text: "is writable by other users (mode 0666)",
      fix: "chmod go-w /etc/x.env",
    }),
    "Config file /etc/x.env is writable by other users (mode 0666): whoever can change it decides what this machine boots (chmod go-w /etc/x.env)",
  );
  assert.equal(
    untrustedRefusal("it", {
      kind: "directory",
      path: "/home/eve",
      why: "a directory of uid 1000 (not root, not this user)",
      text:
        "is reached through /home/eve, a directory of uid 1000 (not root, not this user)",
    }),
    "it is reached through /home/eve, a directory of uid 1000 (not root, not this user): whoever can change it decides what this machine boots",
  );
  assert.equal(
    untrustedRefusal("Token file /t", {
      kind: "links",
      path: "/t",
      why: "reached through more than 40 symbolic links",
      text: "is reached through more than 40 symbolic links",
    }),
    "Token file /t is reached through more than 40 symbolic links",
  );
});

Deno.test("assertTrustedPath: throws what untrustedPart found, with 'it' for subject; a file: URL is taken as its (decoded) path", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const path = await file(`${dir}/a script`, 0o666);
    for (const given of [path, new URL(`file://${dir}/a%20script`)]) {
      assert.throws(() => assertTrustedPath(given), (err) => {
        assert.ok(err instanceof UntrustedPathError, String(err));
        assert.equal(err.name, "UntrustedPathError");
        assert.equal(err.part.path, path);
        assert.equal(
          err.message,
          `it is writable by other users (mode 0666): whoever can change it decides what this machine boots (chmod go-w ${path})`,
        );
        return true;
      });
    }
    assertTrustedPath(path, { final: false });
    await Deno.chmod(path, 0o644);
    assertTrustedPath(new URL(`file://${dir}/a%20script`));
    assertTrustedPath(`${dir}/missing`);
  });
});

Deno.test({
  name:
    "untrustedPart as a user other than root: root's parts and the user's own pass, a third user's file, directory or link is refused",
  ignore: !CAN_RUN_AS_OTHER_USER,
  async fn() {
    const THIRD = OTHER - 1;
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      await Deno.chmod(dir, 0o755);
      const paths = {
        rootFile: await file(`${dir}/root.env`, 0o644),
        ownFile: await file(`${dir}/own.env`, 0o644),
        thirdFile: await file(`${dir}/third.env`, 0o644),
        thirdDir: `${dir}/third-dir/x.env`,
        ownLink: `${dir}/own-link`,
        thirdLink: `${dir}/third-link`,
      };
      await chownLink(paths.ownFile, OTHER);
      await chownLink(paths.thirdFile, THIRD);
      await Deno.mkdir(`${dir}/third-dir`);
      await file(paths.thirdDir, 0o644);
      await chownLink(`${dir}/third-dir`, THIRD);
      await Deno.symlink(paths.rootFile, paths.ownLink);
      await chownLink(paths.ownLink, OTHER);
      await Deno.symlink(paths.rootFile, paths.thirdLink);
      await chownLink(paths.thirdLink, THIRD);
      const found = await runLibAs(
        OTHER,
        `
        const { untrustedPart } = await import(Deno.args[0] + "path_trust.ts");
        const paths = JSON.parse(Deno.args[1]);
        const out = {};
        for (const [name, path] of Object.entries(paths)) {
          out[name] = untrustedPart(path)?.text ?? "ok";
        }
        console.log(JSON.stringify(out));
      `,
        [JSON.stringify(paths)],
      );
      assert.deepEqual(found, {
        rootFile: "ok",
        ownFile: "ok",
        thirdFile: `is a file of uid ${THIRD} (not root, not this user)`,
        thirdDir:
          `is reached through ${dir}/third-dir, a directory of uid ${THIRD} (not root, not this user)`,
        ownLink: "ok",
        thirdLink:
          `is reached through ${paths.thirdLink}, a symbolic link of uid ${THIRD} (not root, not this user)`,
      });
    });
  },
});

Deno.test("untrustedPart: a walk that cannot go on other than at a missing part throws the runtime's error; the root and a walk back up to it are judged", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const plain = await file(`${dir}/plain.env`, 0o644);
    assert.throws(() => untrustedPart(`${plain}/x`), Deno.errors.NotADirectory);
    assert.equal(untrustedPart(`${dir}/missing/x`), undefined);
    // "/" is root's and not writable by others here; our own directory,
    // reached back up through `..`, is judged as what the path leads to.
    assert.equal(untrustedPart("/"), undefined);
    await Deno.mkdir(`${dir}/sub`);
    assert.equal(untrustedPart(`${dir}/sub/..`), undefined);
    // Sticky: fine on the way, but not as what the path leads to.
    await Deno.chmod(dir, 0o1777);
    assert.equal(untrustedPart(`${dir}/sub/x`), undefined);
    assert.equal(
      untrustedPart(`${dir}/sub/..`)?.text,
      "is writable by other users (mode 1777)",
    );
    await Deno.chmod(dir, 0o700);
    // A directory the walk goes back up to is judged as what the path leads to.
    await Deno.mkdir(`${dir}/open/sub`, { recursive: true });
    await Deno.chmod(`${dir}/open`, 0o777);
    assert.equal(
      untrustedPart(`${dir}/open/sub/..`)?.text,
      `is reached through ${dir}/open, writable by other users without the sticky bit (mode 0777)`,
    );
    assert.equal(
      untrustedPart(`${dir}/open/sub/..`, { final: false })?.kind,
      "directory",
    );
  });
});
