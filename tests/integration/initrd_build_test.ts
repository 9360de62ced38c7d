/**
 * What `image/initrd/build_initrd.sh` puts in the initramfs for trust and the
 * kexec fallback: a `CA_BUNDLE` becomes its system store, kexec-tools'
 * `kexec` comes with every library it loads (or stays out with
 * `KEXEC_TOOLS=none`), a `CA_BUNDLE` without a certificate is refused, and
 * nothing but /tmp is writable by others whatever the build host's umask. Built
 * uncompressed around a stand-in bootloader (static busybox) and a stand-in
 * module: a second or two, no kernel download.
 */
import assert from "node:assert/strict";
import { withTemp } from "../test_util.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const BUILD = `${ROOT}image/initrd/build_initrd.sh`;

interface Built {
  code: number;
  stderr: string;
  /** Paths in the archive, without the leading "./". */
  files: string[];
  /** Extracts one file's bytes. */
  read(path: string): Promise<Uint8Array>;
}

async function build(
  dir: string,
  env: Record<string, string>,
  options: { umask?: string } = {},
): Promise<Built> {
  await Deno.mkdir(`${dir}/modules`, { recursive: true });
  await Deno.writeTextFile(`${dir}/modules/dummy.ko`, "not a module");
  await Deno.writeTextFile(`${dir}/modules/load-order`, "dummy\n");
  const out = `${dir}/out/initrd.cpio`;
  const command = options.umask === undefined
    ? [BUILD]
    : ["sh", "-c", `umask ${options.umask} && exec "$0" "$@"`, BUILD];
  const run = await new Deno.Command(command[0], {
    args: [...command.slice(1), out, `${dir}/modules`, "/bin/busybox"],
    env: { COMPRESS: "none", INSTALL_PACKAGES: "0", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(run.stderr);
  let files: string[] = [];
  if (run.code === 0) {
    const list = await new Deno.Command("cpio", {
      args: ["-it", "--quiet"],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const input = await Deno.open(out);
    await input.readable.pipeTo(list.stdin);
    const listed = await list.output();
    files = new TextDecoder().decode(listed.stdout).trim().split("\n").map((
      f,
    ) => f.replace(/^\.\//, ""));
  }
  return {
    code: run.code,
    stderr,
    files,
    read: async (path) => {
      const x = `${dir}/x`;
      await Deno.mkdir(x, { recursive: true });
      const cpio = new Deno.Command("cpio", {
        args: ["-id", "--quiet", "--no-absolute-filenames", path],
        cwd: x,
        stdin: "piped",
      }).spawn();
      const input = await Deno.open(out);
      await input.readable.pipeTo(cpio.stdin);
      assert.ok((await cpio.status).success);
      return await Deno.readFile(`${x}/${path}`);
    },
  };
}

function ldd(binary: string): Promise<string[]> {
  return new Deno.Command("ldd", { args: [binary], stdout: "piped" }).output()
    .then((o) =>
      new TextDecoder().decode(o.stdout).split("\n").map((l) =>
        /=> (\/\S+)/.exec(l)?.[1] ?? /^\s*(\/\S+)/.exec(l)?.[1]
      ).filter((p): p is string => p !== undefined)
    );
}

Deno.test("build_initrd: CA_BUNDLE is the initramfs's system store; kexec-tools' kexec comes with its libraries", async () => {
  await withTemp(async (dir) => {
    const ca =
      "-----BEGIN CERTIFICATE-----\nMIIBhub\n-----END CERTIFICATE-----\n";
    await Deno.writeTextFile(`${dir}/hub-ca.pem`, ca);
    const built = await build(dir, { CA_BUNDLE: `${dir}/hub-ca.pem` });
    assert.equal(built.code, 0, built.stderr);
    assert.equal(
      new TextDecoder().decode(
        await built.read("etc/ssl/certs/ca-certificates.crt"),
      ),
      ca,
    );
    assert.ok(built.files.includes("bin/kexec"), built.files.join(" "));
    const kexec = new Deno.Command("sh", {
      args: ["-c", "command -v kexec || echo /sbin/kexec"],
      stdout: "piped",
    }).outputSync();
    const host = new TextDecoder().decode(kexec.stdout).trim();
    for (const lib of await ldd(host)) {
      assert.ok(
        built.files.includes(lib.slice(1)),
        `${lib} (needed by kexec) is missing from the initramfs`,
      );
    }
  });
});

Deno.test("build_initrd: no CA_BUNDLE, no store; KEXEC_TOOLS=none leaves kexec out; a CA_BUNDLE without a certificate is refused", async () => {
  await withTemp(async (dir) => {
    const plain = await build(dir, { KEXEC_TOOLS: "none" });
    assert.equal(plain.code, 0, plain.stderr);
    assert.ok(!plain.files.includes("etc/ssl/certs/ca-certificates.crt"));
    assert.ok(!plain.files.includes("bin/kexec"));
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate\n");
    const junk = await build(dir, {
      CA_BUNDLE: `${dir}/junk.pem`,
      KEXEC_TOOLS: "none",
    });
    assert.equal(junk.code, 2);
    assert.match(
      junk.stderr,
      /CA_BUNDLE=.*junk\.pem is not a readable PEM certificate file/,
    );
  });
});

Deno.test("build_initrd: a build host's umask 002 gives no directory or file others may write (only /tmp, 1777)", async () => {
  await withTemp(async (dir) => {
    const built = await build(dir, { KEXEC_TOOLS: "none" }, { umask: "002" });
    assert.equal(built.code, 0, built.stderr);
    const list = await new Deno.Command("sh", {
      args: ["-c", 'cpio -itv --quiet < "$0"', `${dir}/out/initrd.cpio`],
      stdout: "piped",
    }).output();
    const writable = new TextDecoder().decode(list.stdout).trim().split("\n")
      .map((line) => line.split(/\s+/))
      .filter(([mode]) =>
        !mode.startsWith("l") && /^.....w|^........w/.test(mode)
      )
      .map((fields) => `${fields[0]} ${fields.at(-1)}`);
    assert.deepEqual(writable, ["drwxrwxrwt tmp"]);
  });
});
