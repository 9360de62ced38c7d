/**
 * The Makefile as a newcomer meets it: `make help` lists the targets of the
 * Makefile and of every included .mk file; the Debian packages are one list
 * (packages.txt) that `make test` and .ci/run both hand to
 * image/initrd/require_tools.sh, which names exactly what is missing; and
 * every package a script, a Makefile or an error message asks for is on that
 * list (or in every Debian installation).
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const REQUIRE_TOOLS = `${ROOT}image/initrd/require_tools.sh`;

/** Packages of every Debian installation (Essential, or Priority: required). */
const BASE_SYSTEM = new Set(["apt", "coreutils", "dpkg", "libc-bin"]);

function listedPackages(): Set<string> {
  const text = Deno.readTextFileSync(`${ROOT}packages.txt`);
  return new Set(
    text.split("\n").map((l) => l.replace(/#.*/, "").trim()).filter((l) => l)
      .map((l) => l.slice(l.indexOf(":") + 1)),
  );
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, env, cwd: ROOT }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

Deno.test("make help: every `##` target of the Makefile and its .mk files, with its description", async () => {
  const help = await run("make", ["-s", "--no-print-directory", "help"]);
  assert.equal(help.code, 0, help.stderr);
  const rows = new Map(
    help.stdout.split("\n").slice(1).filter((l) => l).map((l) => {
      const m = /^ {2}(\S+(?: \(default\))?) +(\S.*)$/.exec(l);
      assert.ok(m, `a "  target  description" row: ${JSON.stringify(l)}`);
      return [m[1], m[2]];
    }),
  );
  for (
    const target of [
      "help",
      "setup",
      "dev",
      "test",
      "test-fast",
      "packages",
      "docs",
      "compile",
      "generate-ignition", // ignition/ignition.mk
      "image (default)", // image/image.mk
      "initrd", // image/initrd.mk
      "run-vm", // image/vm.mk
      "chain-test", // image/rootfs.mk
    ]
  ) assert.ok(rows.has(target), `make help lists ${target}`);
  assert.match(rows.get("test")!, /every test suite/);
  assert.doesNotMatch(help.stdout, /\$\(/, "no unexpanded make variable");
});

Deno.test("require_tools.sh --packages: names exactly the missing packages, installs nothing with INSTALL_PACKAGES=0", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const list = `${dir}/packages.txt`;
    await Deno.writeTextFile(
      list,
      [
        "# a comment line",
        "bash",
        "  no-such-package-for-the-test   # trailing comment",
        "sh:command-on-path-so-not-needed",
        "no-such-command-for-the-test:another-missing-package",
        "",
      ].join("\n"),
    );
    const missing = await run(REQUIRE_TOOLS, ["--packages", list], {
      INSTALL_PACKAGES: "0",
    });
    assert.equal(missing.code, 1);
    assert.equal(
      missing.stderr.trim(),
      "error: missing host tools; install the Debian packages: " +
        "another-missing-package no-such-package-for-the-test " +
        "(as root: apt-get install --no-install-recommends " +
        "another-missing-package no-such-package-for-the-test)",
    );
    await Deno.writeTextFile(list, "bash\nsh:x\n");
    const present = await run(REQUIRE_TOOLS, ["--packages", list, "cat:y"], {
      INSTALL_PACKAGES: "0",
    });
    assert.deepEqual(present, { code: 0, stdout: "", stderr: "" });
    const unreadable = await run(REQUIRE_TOOLS, ["--packages", `${dir}/nope`]);
    assert.equal(unreadable.code, 1);
    assert.match(unreadable.stderr, /cannot read the package list/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("one list: `make test` and .ci/run hand packages.txt to require_tools.sh", async () => {
  const make = await run("make", [
    "-n",
    "--no-print-directory", // also when this test runs under `make test`
    "test",
    "PACKAGES_FILE=/x/list",
  ]);
  assert.equal(make.code, 0, make.stderr);
  assert.match(
    make.stdout.split("\n")[0], // before anything else
    /image\/initrd\/require_tools\.sh --packages \/x\/list$/,
  );
  const ci = Deno.readTextFileSync(`${ROOT}.ci/run`);
  assert.match(ci, /require_tools\.sh --packages packages\.txt/);
  assert.doesNotMatch(ci, /apt-get/, ".ci/run keeps no second list");
  assert.match(ci, /"make -s test/, ".ci/run runs the README's command");
});

Deno.test("every Debian package the tree asks for is on packages.txt", () => {
  const listed = listedPackages();
  const asked = new Map<string, string>();
  const ask = (names: string, where: string) => {
    for (const name of names.split(/[\s,]+/).filter((n) => n)) {
      asked.set(name, where);
    }
  };
  const files: string[] = [`${ROOT}Makefile`];
  for (const dir of ["lib", "dev", "image", "ignition", "tests"]) {
    const walk = (path: string) => {
      for (const e of Deno.readDirSync(path)) {
        const p = `${path}/${e.name}`;
        if (e.isDirectory) walk(p);
        else if (/\.(ts|sh|mk)$/.test(e.name)) files.push(p);
      }
    };
    walk(`${ROOT}${dir}`);
  }
  const pkg = "[a-z0-9][a-z0-9+.-]*";
  for (const file of files) {
    if (file === REQUIRE_TOOLS || file === new URL(import.meta.url).pathname) {
      continue;
    }
    const where = file.slice(ROOT.length);
    for (const line of Deno.readTextFileSync(file).split("\n")) {
      // Error messages: "(Debian package: x)", "(Debian packages: x, y)", "(apt-get install x y)".
      for (
        const m of line.matchAll(
          new RegExp(`Debian packages?:? (${pkg}(?:, ${pkg})*)\\)`, "g"),
        )
      ) ask(m[1], where);
      for (
        const m of line.matchAll(
          new RegExp(`apt-get install (${pkg}(?: ${pkg})*)[)"'\`]`, "g"),
        )
      ) ask(m[1], where);
      // TOOL:PACKAGE specs given to require_tools.sh or checked in a loop.
      if (/require_tools\.sh|^\s*for t in /.test(line)) {
        for (const token of line.split(/\s+/)) {
          const m = new RegExp(`^[^\\s:"$]+:(${pkg});?$`).exec(token);
          if (m) ask(m[1], where);
        }
      }
    }
  }
  assert.ok(asked.has("qemu-system-x86") && asked.has("busybox-static"));
  assert.ok(asked.has("coreutils"), "the require_tools.sh specs are read");
  const unlisted = [...asked].filter(([name]) =>
    !listed.has(name) && !BASE_SYSTEM.has(name)
  );
  assert.deepEqual(unlisted, [], "add these to packages.txt");
});
