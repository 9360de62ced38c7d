/**
 * `deno task dev`: starts the mock InfraEnv on 127.0.0.1 and runs the
 * bootloader against it the way the SaaS flow would (offline token → access
 * token → script), first with `--print-plan`, then with `--no-kexec` into a
 * temporary work directory, printing what happened.
 *
 * Extra arguments are passed to the bootloader, e.g. `deno task dev --verbose`.
 *
 * @module
 */

import { startMock } from "./mock_infraenv.ts";

const root = new URL("..", import.meta.url).pathname;
const work = await Deno.makeTempDir({ prefix: "assisted-bootloader-dev-" });
const mock = await startMock({
  authMode: "rhsso",
  extraKargs: ["dev.marker=hello"],
});
await Deno.writeTextFile(`${work}/refresh-token`, mock.refreshToken, {
  mode: 0o600,
});

async function run(title: string, extra: string[]): Promise<number> {
  const args = [
    "run",
    "-A",
    `${root}main.ts`,
    "--api-url",
    mock.apiUrl,
    "--sso-url",
    mock.ssoUrl,
    "--infra-env-id",
    mock.infraEnvId,
    "--refresh-token-file",
    `${work}/refresh-token`,
    "--mac",
    "52:54:00:12:34:56",
    ...extra,
    ...Deno.args,
  ];
  console.log(
    `\n=== ${title}\n$ assisted-bootloader ${
      args.slice(3).join(" ").replace(mock.refreshToken, "…")
    }`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const { code } = await child.status;
  console.log(`=== exit code ${code}`);
  return code;
}

let failed = 0;
try {
  failed += await run("plan only (--print-plan)", ["--print-plan"]) === 0
    ? 0
    : 1;
  failed += await run("download and verify, no kexec (--no-kexec)", [
      "--no-kexec",
      "--work-dir",
      `${work}/artifacts`,
    ]) === 0
    ? 0
    : 1;
  console.log("\n=== requests the mock saw");
  for (const r of mock.requests) {
    const auth = r.headers.authorization ? " [Authorization]" : "";
    console.log(
      `${r.server.padEnd(5)} ${r.method} ${r.status} ${
        r.path.replace(/(image_token|api_key)=[^&]*/, "$1=…")
      }${auth}`,
    );
  }
} finally {
  await mock.close();
  await Deno.remove(work, { recursive: true });
}
Deno.exit(failed === 0 ? 0 : 1);
