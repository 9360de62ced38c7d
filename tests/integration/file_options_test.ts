/**
 * A file option naming a FIFO (or a socket, a device…) is refused with exit 2
 * before anything opens it: opening a FIFO for reading would wait for a
 * writer forever. So is a `file:` URL naming one (a script, a chained
 * script, a kernel), with the exit code of the step that reads it; and so
 * is a file (option or `file:` URL) another user can change. A real child process (`deno run main.ts`), killed after
 * 20 s so that a hang fails the test instead of stalling it.
 */
import assert from "node:assert/strict";
import { ExitCode } from "../../lib/errors.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const ID = "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b";

async function run(
  args: string[],
  env: Record<string, string> = {},
  mode = "--print-plan",
): Promise<{ code: number; signal: Deno.Signal | null; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, mode, ...args],
    env: {
      NO_COLOR: "1",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
      ...env,
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const out = await child.output();
  clearTimeout(guard);
  return {
    code: out.code,
    signal: out.signal,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("file options: a FIFO is refused with exit 2, never opened (it would block)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success, "mkfifo");
    const api = ["--infra-env-id", ID, "--api-url", "http://127.0.0.1:9"];
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["--config", fifo], {}, /Cannot read config file .*fifo: it is a FIFO/],
      [
        [],
        { ASSISTED_CONFIG: fifo },
        /Cannot read config file .*: it is a FIFO/,
      ],
      [[...api, "--token-file", fifo], {}, /token file .*fifo: it is a FIFO/],
      [
        [...api, "--refresh-token-file", fifo],
        {},
        /refresh token file .*fifo: it is a FIFO/,
      ],
      [
        ["--infra-env-id-file", fifo, "--token", "t"],
        {},
        /InfraEnv id file .*fifo: it is a FIFO/,
      ],
      [
        ["--ipxe-url", "http://127.0.0.1:9/x", "--ca-cert", fifo],
        {},
        /CA certificate .*fifo: it is a FIFO/,
      ],
      [
        ["--ipxe-url", "http://127.0.0.1:9/x", "--config", dir],
        {},
        /Cannot read config file .*: it is a directory/,
      ],
    ];
    for (const [args, env, pattern] of cases) {
      const r = await run(args, env);
      assert.equal(r.signal, null, `${args.join(" ")}: hung on the FIFO`);
      assert.equal(r.code, ExitCode.Usage, `${args.join(" ")}: ${r.stderr}`);
      const last = r.stderr.trim().split("\n").at(-1)!;
      assert.match(last, pattern);
    }
    // The null device stays usable as an empty file.
    const nul = await run(["--ipxe-url", "http://127.0.0.1:9/x"], {
      ASSISTED_CONFIG: "/dev/null",
      ASSISTED_TIMEOUT: "1",
      ASSISTED_RETRIES: "0",
    });
    assert.doesNotMatch(nul.stderr, /config file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("file: URLs: a FIFO or a directory as a script or a kernel is refused, never opened", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success, "mkfifo");
    const script = (name: string, text: string) => {
      Deno.writeTextFileSync(`${dir}/${name}`, `#!ipxe\n${text}\n`);
      return `file://${dir}/${name}`;
    };
    const host = ["--no-host-settings", "--mac", "52:54:00:12:34:56"];
    const cases: [string, string[], number, RegExp][] = [
      [
        "--print-plan",
        ["--ipxe-url", `file://${fifo}`],
        ExitCode.Api,
        /Cannot read file:\/\/.*fifo: it is a FIFO, not a regular file$/,
      ],
      [
        "--print-plan",
        ["--ipxe-url", script("chain.ipxe", `chain file://${fifo}`)],
        ExitCode.Api,
        /chain file:\/\/.*fifo: Cannot read .*: it is a FIFO, not a regular file$/,
      ],
      [
        "--print-plan",
        ["--ipxe-url", script("dir.ipxe", `chain file://${dir}`)],
        ExitCode.Api,
        /it is a directory, not a regular file$/,
      ],
      [
        "--no-kexec",
        [
          "--ipxe-url",
          script("kernel.ipxe", `kernel file://${fifo}\nboot`),
          "--work-dir",
          `${dir}/work`,
        ],
        ExitCode.Download,
        /Cannot download file:\/\/.*fifo: it is a FIFO, not a regular file$/,
      ],
    ];
    for (const [mode, args, code, pattern] of cases) {
      const r = await run([...args, ...host], {}, mode);
      const what = args.join(" ");
      assert.equal(r.signal, null, `${what}: hung on the FIFO`);
      assert.equal(r.code, code, `${what}: ${r.stderr}`);
      assert.match(r.stderr.trim().split("\n").at(-1)!, pattern, what);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("file options and file: URLs another user can change are refused unread, in one line naming the file and why: exit 2 for an option, 4 for a script, 5 for a kernel", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const dir = await Deno.realPath(tmp);
    const write = async (name: string, text: string, mode: number) => {
      await Deno.writeTextFile(`${dir}/${name}`, text);
      await Deno.chmod(`${dir}/${name}`, mode);
      return `${dir}/${name}`;
    };
    const tail = "whoever can change it decides what this machine boots";
    const config = await write("config.env", "ASSISTED_RETRIES=0\n", 0o664);
    const ca = await write("ca.pem", "", 0o666);
    await Deno.mkdir(`${dir}/shared`);
    await Deno.chmod(`${dir}/shared`, 0o757);
    const token = await write("shared/token", "t0k3n\n", 0o600);
    const open = await write("open.ipxe", "#!ipxe\nexit\n", 0o646);
    await write("chain.ipxe", "#!ipxe\nchain open.ipxe\n", 0o644);
    const kernel = await write("vmlinuz", "MZ", 0o666);
    await write(
      "kernel.ipxe",
      `#!ipxe\nkernel file://${kernel}\nboot\n`,
      0o644,
    );
    const http = ["--ipxe-url", "http://127.0.0.1:9/x"];
    const host = ["--no-host-settings", "--mac", "52:54:00:12:34:56"];
    const cases: [string, string[], number, string][] = [
      [
        "--print-plan",
        [...http, "--config", config],
        ExitCode.Usage,
        `Config file ${config} is writable by other users (mode 0664): ${tail} (chmod go-w ${config})`,
      ],
      [
        "--print-plan",
        [...http, "--ca-cert", ca],
        ExitCode.Usage,
        `CA certificate ${ca} is writable by other users (mode 0666): ${tail} (chmod go-w ${ca})`,
      ],
      [
        "--print-plan",
        [
          "--infra-env-id",
          ID,
          "--api-url",
          "http://127.0.0.1:9",
          "--token-file",
          token,
        ],
        ExitCode.Usage,
        `Token file ${token} is reached through ${dir}/shared, writable by other users without the sticky bit (mode 0757): ${tail} (chmod go-w ${dir}/shared)`,
      ],
      [
        "--print-plan",
        ["--ipxe-url", `file://${open}`, ...host],
        ExitCode.Api,
        `Cannot read file://${open}: it is writable by other users (mode 0646): ${tail} (chmod go-w ${open})`,
      ],
      [
        "--print-plan",
        ["--ipxe-url", `file://${dir}/chain.ipxe`, ...host],
        ExitCode.Api,
        `chain file://${open}: Cannot read file://${open}: it is writable by other users (mode 0646): ${tail} (chmod go-w ${open})`,
      ],
      [
        "--no-kexec",
        [
          "--ipxe-url",
          `file://${dir}/kernel.ipxe`,
          ...host,
          "--work-dir",
          `${dir}/work`,
        ],
        ExitCode.Download,
        `Cannot download file://${kernel}: it is writable by other users (mode 0666): ${tail} (chmod go-w ${kernel})`,
      ],
    ];
    for (const [mode, args, code, message] of cases) {
      const r = await run(args, {}, mode);
      const what = args.join(" ");
      assert.equal(r.code, code, `${what}: ${r.stderr}`);
      const last = r.stderr.trim().split("\n").at(-1)!;
      assert.ok(last.endsWith(`: ${message}`), `${what}: ${last}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    // The null device stays usable as an empty config file.
    const nul = await run([
      "--ipxe-url",
      `file://${dir}/chain.ipxe`,
      ...host,
      "--config",
      "/dev/null",
    ]);
    assert.doesNotMatch(nul.stderr, /[Cc]onfig file/);
    assert.equal(nul.code, ExitCode.Api, "it went on to the script");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
