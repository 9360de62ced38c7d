/**
 * Finding the programs the bootloader runs, on real files: the lookup as
 * `execvp` does it but only in absolute `PATH` entries, and the refusal of
 * one another user can change (its directory, its mode, its owner), never
 * passed over for a later entry. The programs are shell scripts in temporary
 * directories; nothing here runs one.
 *
 * The callers' own refusals (their exit codes, their messages) are tested
 * with them: curl_transport_test, kexec_test (systemctl),
 * kexec_fallback_test (kexec).
 */

import assert from "node:assert/strict";
import {
  DEFAULT_PATH,
  findProgram,
  trustedProgram,
  UntrustedProgramError,
} from "../../lib/programs.ts";
import {
  chownLink,
  fakeProgram,
  mkdirMode,
  withPath,
  withTemp,
} from "../test_util.ts";

const isRoot = Deno.uid() === 0;
/** A uid that is not ours (nobody). */
const OTHER = 65534;

/** Asserts that `fn` throws the refusal of `program`, found at `path`, with `message`. */
function refused(
  fn: () => unknown,
  expected: { program: string; path: string; message: string },
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UntrustedProgramError, String(err));
    assert.equal(err.name, "UntrustedProgramError");
    assert.equal(err.program, expected.program);
    assert.equal(err.path, expected.path);
    assert.equal(err.message, expected.message);
    return true;
  });
}

Deno.test("findProgram: the first entry holding an executable regular file, PATH's then dirs'; no execute bit, a directory, a dangling link or nothing is passed over", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const [plain, folder, dangling, empty, exec, later] = await Promise.all(
      ["plain", "folder", "dangling", "empty", "exec", "later"].map((name) =>
        mkdirMode(`${dir}/${name}`)
      ),
    );
    await fakeProgram(`${plain}/prog`, { mode: 0o644 });
    await Deno.mkdir(`${folder}/prog`);
    await Deno.symlink(`${dir}/nowhere`, `${dangling}/prog`);
    await fakeProgram(`${exec}/prog`, { mode: 0o700 });
    await fakeProgram(`${later}/prog`);
    const path = [plain, folder, dangling, empty, exec, later].join(":");
    assert.equal(findProgram("prog", { path }), `${exec}/prog`);
    // One execute bit is enough (root runs it), whoever's it is.
    await Deno.chmod(`${plain}/prog`, 0o654);
    assert.equal(findProgram("prog", { path }), `${plain}/prog`);
    // dirs come after PATH, in order.
    assert.equal(
      findProgram("prog", { path: empty, dirs: [folder, later, exec] }),
      `${later}/prog`,
    );
    assert.equal(
      findProgram("prog", { path: `${exec}:`, dirs: [later] }),
      `${exec}/prog`,
    );
    assert.equal(
      findProgram("prog", { path: `${empty}:${folder}` }),
      undefined,
    );
    assert.equal(findProgram("prog", { path: "" }), undefined);
    // A trailing slash, and the root directory as an entry.
    assert.equal(findProgram("prog", { path: `${later}/` }), `${later}/prog`);
    assert.equal(findProgram("prog", { path: `${later}//` }), `${later}/prog`);
    assert.equal(findProgram("bin", { path: "/" }), undefined, "a directory");
    // A link to a program is found by its own name (as execvp runs it).
    await Deno.symlink(`${later}/prog`, `${empty}/prog`);
    assert.equal(
      findProgram("prog", { path: `${empty}:${later}` }),
      `${empty}/prog`,
    );
  });
});

Deno.test("findProgram: empty and relative PATH entries are skipped, even when they hold the program: they name the working directory's contents", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    await fakeProgram(`${dir}/prog`);
    await fakeProgram(`${await mkdirMode(`${dir}/bin`)}/prog`);
    const abs = await mkdirMode(`${dir}/abs`);
    await fakeProgram(`${abs}/prog`);
    const cwd = Deno.cwd();
    Deno.chdir(dir);
    try {
      for (const path of ["", ":", ".", "bin", "./bin", "bin/", "::.:bin"]) {
        assert.equal(findProgram("prog", { path }), undefined, `"${path}"`);
        assert.equal(
          findProgram("prog", { path, dirs: ["bin", "."] }),
          undefined,
          `"${path}" and relative dirs`,
        );
        assert.equal(
          findProgram("prog", { path: `${path}:${abs}` }),
          `${abs}/prog`,
          `"${path}" then ${abs}`,
        );
      }
    } finally {
      Deno.chdir(cwd);
    }
  });
});

Deno.test("findProgram: the process's PATH by default, /bin:/usr/bin when it is unset; an absolute name is itself; a relative path or an empty name is a TypeError", async () => {
  assert.equal(DEFAULT_PATH, "/bin:/usr/bin");
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    await fakeProgram(`${dir}/prog`);
    await withPath(dir, () => assert.equal(findProgram("prog"), `${dir}/prog`));
    await withPath(undefined, () => {
      assert.equal(findProgram("prog"), undefined);
      assert.equal(findProgram("sh"), "/bin/sh");
    });
    // An empty PATH is no entry at all (execvp would search the working directory).
    await withPath("", () => assert.equal(findProgram("sh"), undefined));
  });
  assert.equal(findProgram("/nonexistent/prog"), "/nonexistent/prog");
  assert.equal(
    findProgram("/usr/bin/env", { path: "/nonexistent" }),
    "/usr/bin/env",
  );
  for (const name of ["bin/prog", "./prog", "../prog"]) {
    assert.throws(
      () => findProgram(name),
      new TypeError(
        `Program ${name} is neither a bare name nor an absolute path`,
      ),
    );
  }
  assert.throws(
    () => findProgram(""),
    new TypeError("A program name cannot be empty"),
  );
});

Deno.test("trustedProgram: our own program in a 0755 directory (or a sticky 1777 one) is its path; none found is undefined; a missing absolute path is itself", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const good = await mkdirMode(`${dir}/good`, 0o755);
    await fakeProgram(`${good}/prog`);
    assert.equal(trustedProgram("prog", { path: good }), `${good}/prog`);
    assert.equal(trustedProgram(`${good}/prog`), `${good}/prog`);
    for (const mode of [0o755, 0o555, 0o700, 0o4755]) {
      await Deno.chmod(`${good}/prog`, mode);
      assert.equal(
        trustedProgram("prog", { path: good }),
        `${good}/prog`,
        mode.toString(8),
      );
    }
    const sticky = await mkdirMode(`${dir}/sticky`, 0o1777);
    await fakeProgram(`${sticky}/prog`);
    assert.equal(trustedProgram("prog", { path: sticky }), `${sticky}/prog`);
    assert.equal(trustedProgram("other", { path: good }), undefined);
    assert.equal(trustedProgram(`${good}/missing`), `${good}/missing`);
  });
});

Deno.test("trustedProgram: a program reached through a directory others may write without the sticky bit is refused, naming it, its path and why; a later entry is never tried", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const good = await mkdirMode(`${dir}/good`);
    await fakeProgram(`${good}/prog`);
    for (const mode of [0o777, 0o775, 0o757]) {
      const open = await mkdirMode(`${dir}/open${mode.toString(8)}`, mode);
      await fakeProgram(`${open}/prog`);
      const why =
        `is reached through ${open}, writable by other users without the sticky bit (mode ${
          mode.toString(8).padStart(4, "0")
        }): whoever can change it decides what this machine boots (chmod go-w ${open})`;
      refused(() => trustedProgram("prog", { path: `${open}:${good}` }), {
        program: "prog",
        path: `${open}/prog`,
        message: `prog (${open}/prog) ${why}`,
      });
      // Given by its absolute path: the same walk.
      refused(() => trustedProgram(`${open}/prog`), {
        program: `${open}/prog`,
        path: `${open}/prog`,
        message: `${open}/prog ${why}`,
      });
      // A directory further up counts as much.
      await mkdirMode(`${open}/sub`);
      await fakeProgram(`${open}/sub/prog`);
      assert.throws(
        () => trustedProgram("prog", { path: `${open}/sub`, dirs: [good] }),
        UntrustedProgramError,
      );
      // A link to it from a good directory leads there.
      await Deno.symlink(`${open}/prog`, `${good}/linked`);
      assert.equal(
        (() => {
          try {
            trustedProgram("linked", { path: good });
          } catch (err) {
            return (err as UntrustedProgramError).part.path;
          }
        })(),
        open,
      );
      await Deno.remove(`${good}/linked`);
    }
  });
});

Deno.test("trustedProgram: a program file its group or others may write (0757, 0775, 0777, 0722) is refused, naming its mode and the fix", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const good = await mkdirMode(`${dir}/good`);
    const later = await mkdirMode(`${dir}/later`);
    await fakeProgram(`${later}/prog`);
    for (const mode of [0o757, 0o775, 0o777, 0o722]) {
      await fakeProgram(`${good}/prog`, { mode });
      const text = mode.toString(8).padStart(4, "0");
      refused(() => trustedProgram("prog", { path: `${good}:${later}` }), {
        program: "prog",
        path: `${good}/prog`,
        message:
          `prog (${good}/prog) is writable by other users (mode ${text}): whoever can change it decides what this machine boots (chmod go-w ${good}/prog)`,
      });
    }
  });
});

Deno.test({
  name:
    "trustedProgram as root: a program of another uid, one in a directory of theirs, or reached through their link is refused; root's pass",
  ignore: !isRoot,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = await Deno.realPath(tmp);
      const other = "(not root, not this user)";
      const good = await mkdirMode(`${dir}/good`);
      const theirs = await fakeProgram(`${good}/theirs`);
      await chownLink(theirs, OTHER);
      refused(() => trustedProgram("theirs", { path: good }), {
        program: "theirs",
        path: theirs,
        message:
          `theirs (${theirs}) is a file of uid ${OTHER} ${other}: whoever can change it decides what this machine boots`,
      });
      const home = await mkdirMode(`${dir}/home`);
      await fakeProgram(`${home}/prog`);
      await chownLink(home, OTHER);
      refused(() => trustedProgram("prog", { path: `${home}:${good}` }), {
        program: "prog",
        path: `${home}/prog`,
        message:
          `prog (${home}/prog) is reached through ${home}, a directory of uid ${OTHER} ${other}: whoever can change it decides what this machine boots`,
      });
      const mine = await fakeProgram(`${good}/mine`);
      await Deno.symlink(mine, `${good}/link`);
      await chownLink(`${good}/link`, OTHER);
      assert.equal(
        (() => {
          try {
            trustedProgram(`${good}/link`);
          } catch (err) {
            return (err as UntrustedProgramError).part.kind;
          }
        })(),
        "link",
      );
      assert.equal(trustedProgram("mine", { path: good }), mine);
    });
  },
});

Deno.test("trustedProgram: a walk that cannot go on throws the runtime's error", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    const file = await fakeProgram(`${dir}/file`);
    assert.throws(
      () => trustedProgram(`${file}/prog`),
      Deno.errors.NotADirectory,
    );
  });
});
