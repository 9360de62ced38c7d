/**
 * A file option naming a FIFO (or a socket, a device…) is refused with exit 2
 * before anything opens it: opening a FIFO for reading would wait for a
 * writer forever. So is a `file:` URL naming one (a script, a chained
 * script, a kernel), with the exit code of the step that reads it. A real child process (`deno run main.ts`), killed after
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
