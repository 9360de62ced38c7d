import assert from "node:assert/strict";
import {
  type ConfigSources,
  helpText,
  normalizeMac,
  parseConfig,
  parseEnvFile,
  splitKernelCmdline,
  VERSION,
} from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { configureLog } from "../../lib/log.ts";

const none = {
  env: {},
  cmdline: "",
  readTextFile: (p: string): string => (files[p] ?? missing(p)),
};
const files: Record<string, string> = {};
function missing(p: string): never {
  throw new Deno.errors.NotFound(p);
}

function run(argv: string[], sources: ConfigSources = none) {
  const r = parseConfig(argv, sources);
  assert.equal(r.kind, "run");
  return (r as Extract<typeof r, { kind: "run" }>).config;
}

function usageError(
  argv: string[],
  pattern: RegExp,
  sources: ConfigSources = none,
) {
  assert.throws(() => parseConfig(argv, sources), (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("config: --ipxe-url with plan mode and defaults", () => {
  const c = run(["--ipxe-url", "http://h/boot.ipxe", "--print-plan"]);
  assert.deepEqual(c.source, { kind: "ipxe-url", url: "http://h/boot.ipxe" });
  assert.equal(c.mode, "print-plan");
  assert.equal(c.workDir, "/var/lib/assisted-bootloader");
  assert.equal(c.retries, 5);
  assert.equal(c.timeoutMs, 30_000);
  assert.equal(c.hostSettings, true);
});

Deno.test("config: InfraEnv with a refresh token file uses the SSO default", () => {
  files["/rt"] = "offline-token-abcdef\n";
  const c = run([
    "--infra-env-id",
    "6F2A3C1E-8D4B-4E7A-9C1F-2B3D4E5F6A7B",
    "--refresh-token-file",
    "/rt",
  ]);
  assert.equal(c.source.kind, "infraenv");
  if (c.source.kind !== "infraenv") return;
  assert.equal(c.source.apiUrl, "https://api.openshift.com/api");
  assert.equal(c.source.infraEnvId, "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b");
  assert.deepEqual(c.source.auth, {
    kind: "refresh",
    refreshToken: "offline-token-abcdef",
    ssoUrl:
      "https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token",
  });
});

Deno.test("config: precedence is flag > env > file > cmdline", () => {
  files["/cfg"] =
    '# comment\nASSISTED_WORK_DIR=/from-file\nASSISTED_RETRIES="7"\nASSISTED_TIMEOUT=9\n';
  const sources = {
    ...none,
    env: {
      ASSISTED_CONFIG: "/cfg",
      ASSISTED_RETRIES: "3",
      ASSISTED_IPXE_URL: "http://env/x",
    },
    cmdline:
      "quiet assisted.work_dir=/from-cmdline assisted.timeout=1 assisted.mac=52:54:00:aa:bb:cc",
  };
  const c = run(["--retries", "2"], sources);
  assert.equal(c.retries, 2, "flag wins");
  assert.equal(c.workDir, "/from-file", "file beats cmdline");
  assert.equal(c.timeoutMs, 9000, "file beats cmdline");
  assert.equal(
    c.mac,
    "52:54:00:aa:bb:cc",
    "cmdline used when nothing else says",
  );
  assert.deepEqual(c.source, { kind: "ipxe-url", url: "http://env/x" });
  const c2 = run([], {
    ...sources,
    env: { ASSISTED_CONFIG: "/cfg", ASSISTED_IPXE_URL: "http://env/x" },
  });
  assert.equal(c2.retries, 7, "file beats cmdline for retries");
});

Deno.test("config: kernel command line options, quoted values and repeats", () => {
  const c = run([], {
    ...none,
    cmdline:
      "BOOT_IMAGE=/vmlinuz assisted.ipxe_url=http://10.0.2.100/s.ipxe assisted.append_karg=a=1 " +
      'assisted.append_karg="b=two words" assisted.force_reboot assisted.no_host_settings=0',
  });
  assert.equal(c.source.kind, "ipxe-url");
  assert.deepEqual(c.appendKargs, ["a=1", 'b="two words"']);
  assert.equal(c.forceReboot, true);
  assert.equal(c.hostSettings, true);
  // As the kernel's next_arg reads them: a value's quote goes only when it
  // opens the value, its closing one only at the argument's end.
  assert.deepEqual(splitKernelCmdline('a "b c" d="e f"g h="i j" "k=l m"'), [
    "a",
    "b c",
    'd=e f"g',
    "h=i j",
    "k=l m",
  ]);
});

Deno.test("config: env lists are split on any run of whitespace, blanks at either end ignored", () => {
  const c = run([], {
    ...none,
    env: {
      ASSISTED_IPXE_URL: "file:///x",
      ASSISTED_SET: "a=1 b=2",
      ASSISTED_CA_CERT: " /a \t\n /b ",
    },
  });
  assert.deepEqual(c.settings, { a: "1", b: "2" });
  assert.deepEqual(c.caCerts, ["/a", "/b"]);
});

Deno.test("config: bad input is one clear usage error", () => {
  usageError([], /No script source/);
  usageError(
    ["--ipxe-url", "tftp://h/x"],
    /--ipxe-url must be http or https or file/,
  );
  usageError(["--ipxe-url", "not a url"], /not a valid URL/);
  usageError(
    ["--ipxe-url", "http://h/x", "--infra-env-id", "6f2a3c1e-8d4b"],
    /not both/,
  );
  usageError(["--infra-env-id", "x y"], /must be a UUID/);
  usageError(
    ["--ipxe-url", "http://h/x", "--bogus"],
    /Unknown option '--bogus' \(see --help\)/,
  );
  usageError(
    ["--ipxe-url", "http://h/x", "extra"],
    /Unexpected argument "extra"/,
  );
  usageError(
    ["--ipxe-url", "http://h/x", "--kernel-sha256", "abc"],
    /64 hexadecimal/,
  );
  usageError(
    ["--ipxe-url", "http://h/x", "--mac", "52:54:00"],
    /--mac must look like/,
  );
  usageError(["--ipxe-url", "http://h/x", "--set", "novalue"], /NAME=VALUE/);
  usageError(
    ["--ipxe-url", "http://h/x", "--retries", "x"],
    /--retries must be a number/,
  );
  usageError(
    ["--ipxe-url", "http://h/x", "--print-plan", "--no-kexec"],
    /not both/,
  );
  usageError([
    "--infra-env-id",
    "6f2a3c1e-8d4b",
    "--token",
    "a",
    "--token-file",
    "/t",
  ], /Give one of/);
  usageError(
    ["--infra-env-id", "6f2a3c1e-8d4b", "--token-file", "/nope"],
    /Cannot read token file \/nope: no such file/,
  );
  files["/empty"] = " \n";
  usageError(
    ["--infra-env-id", "6f2a3c1e-8d4b", "--token-file", "/empty"],
    /Token file \/empty is empty/,
  );
  files["/typo"] = "ASSISTED_IPXE_URL=http://h/x\nASSISTED_KERNEL_SHA=abc\n";
  usageError(
    ["--config", "/typo"],
    /Config file \/typo: unknown setting ASSISTED_KERNEL_SHA/,
  );
  usageError(
    ["--infra-env-id", "6f2a3c1e-8d4b", "--token", "a\u0001b"],
    /--token contains characters that cannot be sent in an HTTP header/,
  );
  files["/cfgbad"] = "this is not a pair\n";
  usageError(
    ["--config", "/cfgbad"],
    /Config file \/cfgbad line 1: expected KEY=VALUE/,
  );
  usageError(["--ipxe-url", "http://h/x"], /must be a boolean/, {
    ...none,
    env: { ASSISTED_INSECURE: "maybe" },
  });
});

Deno.test("config: --help lists every documented option and --version", () => {
  const r = parseConfig(["--help"], none);
  assert.equal(r.kind, "help");
  for (
    const flag of [
      "--api-url",
      "--infra-env-id-file",
      "--refresh-token-file",
      "--ipxe-url",
      "--print-plan",
      "--no-kexec",
    ]
  ) {
    assert.ok(helpText().includes(flag), flag);
  }
  assert.deepEqual(parseConfig(["--version"], none), {
    kind: "version",
    text: `assisted-bootloader ${VERSION}`,
  });
  // The version is the package's.
  const deno = new URL("../../deno.json", import.meta.url);
  assert.equal(VERSION, JSON.parse(Deno.readTextFileSync(deno)).version);
});

Deno.test("config: MAC normalisation and env file parsing", () => {
  assert.equal(normalizeMac("52-54-00-AA-BB-CC"), "52:54:00:aa:bb:cc");
  assert.deepEqual(parseEnvFile("export A=1\nB='x y'\n\n# c\n", "f"), [[
    "A",
    "1",
  ], ["B", "x y"]]);
});

Deno.test("config: unknown assisted.* kernel parameters are warned about, /init's own are not", () => {
  const lines: string[] = [];
  configureLog({ sink: (l) => lines.push(l) });
  try {
    const c = run([], {
      ...none,
      cmdline:
        "assisted.ipxe_url=http://h/x assisted.infra_env=typo assisted.on_failure=poweroff assisted.retry_delay=5",
    });
    assert.equal(c.source.kind, "ipxe-url");
    assert.deepEqual(lines, [
      "assisted-bootloader: warn: ignoring unknown kernel command line parameter assisted.infra_env",
    ]);
  } finally {
    configureLog({
      sink: (l) => Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")),
    });
  }
});

Deno.test("config: --timeout beyond what a timer can wait is a usage error", () => {
  assert.equal(
    run(["--ipxe-url", "http://h/x", "--timeout", "2147483"]).timeoutMs,
    2_147_483_000,
  );
  for (const value of ["2147484", "2147483.7", "99999999999", "1e400"]) {
    usageError(
      ["--ipxe-url", "http://h/x", "--timeout", value],
      /--timeout must be (at most 2147483|a number)/,
    );
  }
  // Named where it was set.
  usageError(
    ["--ipxe-url", "http://h/x"],
    /^Environment variable ASSISTED_TIMEOUT must be at most/,
    { ...none, env: { ASSISTED_TIMEOUT: "3000000" } },
  );
});

Deno.test("config: a pin is exactly 64 hex digits, wherever it comes from", () => {
  const url = "http://h/x";
  for (
    const hex of [
      "a".repeat(32),
      "a".repeat(63),
      "a".repeat(65),
      "g".repeat(64),
    ]
  ) {
    usageError(["--ipxe-url", url, "--kernel-sha256", hex], /64 hexadecimal/);
    usageError(["--ipxe-url", url, "--initrd-sha256", hex], /64 hexadecimal/);
    usageError(
      ["--ipxe-url", url, "--artifact-sha256", `http://h/k=${hex}`],
      /--artifact-sha256 digest must be 64 hexadecimal/,
    );
    usageError(["--ipxe-url", url], /64 hexadecimal/, {
      ...none,
      env: { ASSISTED_ARTIFACT_SHA256: `http://h/k=${hex}` },
    });
  }
  const c = run([
    "--ipxe-url",
    url,
    "--artifact-sha256",
    `http://h/k?a=b=${"A".repeat(64)}`,
  ]);
  assert.deepEqual(c.artifactSha256, { "http://h/k?a=b": "a".repeat(64) });
});

Deno.test("config: a token that cannot go in an HTTP header is a usage error, from a flag, the environment or a file", () => {
  const id = ["--infra-env-id", "6f2a3c1e-8d4b"];
  const bad = [
    "tok\u0435n", // Cyrillic: not Latin-1
    "t\u00f6ken", // Latin-1 but not ASCII
    "emoji\u{1f600}",
    "a\x7fb",
    "a\tb",
    "a b",
    "a\u0085b",
  ];
  const pattern = /cannot be sent in an HTTP header/;
  for (const token of bad) {
    usageError([...id, "--token", token], pattern);
    usageError(id, pattern, { ...none, env: { ASSISTED_TOKEN: token } });
    files["/bad-token"] = token + "\n";
    usageError([...id, "--token-file", "/bad-token"], pattern);
    usageError([...id, "--refresh-token-file", "/bad-token"], pattern);
  }
  const ok = run([...id, "--token", "eyJhbGciOi.J9-_~+/=.x"]);
  assert.deepEqual(ok.source.kind === "infraenv" && ok.source.auth, {
    kind: "token",
    token: "eyJhbGciOi.J9-_~+/=.x",
  });
});

Deno.test("config: a token file, or a config file holding a token, readable by others is warned about by name", () => {
  const lines: string[] = [];
  configureLog({ sink: (l) => lines.push(l) });
  const modes: Record<string, number> = {
    "/open-token": 0o100644,
    "/group-token": 0o100640,
    "/private-token": 0o100600,
    "/open-cfg": 0o100604,
  };
  const sources = { ...none, fileMode: (p: string) => modes[p] };
  const id = ["--infra-env-id", "6f2a3c1e-8d4b"];
  try {
    for (const p of ["/open-token", "/group-token", "/private-token"]) {
      files[p] = "token-value-123456\n";
    }
    run([...id, "--token-file", "/open-token"], sources);
    run([...id, "--refresh-token-file", "/group-token"], sources);
    run([...id, "--token-file", "/private-token"], sources);
    files["/open-cfg"] =
      "ASSISTED_INFRA_ENV_ID=6f2a3c1e-8d4b\nASSISTED_TOKEN=token-value-123456\n";
    run(["--config", "/open-cfg"], sources);
    files["/open-cfg-no-token"] = "ASSISTED_IPXE_URL=http://h/x\n";
    run(["--config", "/open-cfg-no-token"], {
      ...sources,
      fileMode: () => 0o100644,
    });
    assert.deepEqual(lines, [
      "assisted-bootloader: warn: Token file /open-token is readable by other users (mode 0644): chmod 600 /open-token",
      "assisted-bootloader: warn: Refresh token file /group-token is readable by other users (mode 0640): chmod 600 /group-token",
      "assisted-bootloader: warn: Config file /open-cfg holds ASSISTED_TOKEN and is readable by other users (mode 0604): chmod 600 /open-cfg",
    ]);
  } finally {
    configureLog({
      sink: (l) => Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")),
    });
  }
});

Deno.test("config: the token file mode comes from the file system by default", async () => {
  const dir = await Deno.makeTempDir();
  const lines: string[] = [];
  configureLog({ sink: (l) => lines.push(l) });
  try {
    const path = `${dir}/token`;
    await Deno.writeTextFile(path, "token-value-123456\n", { mode: 0o600 });
    await Deno.chmod(path, 0o644);
    const args = ["--infra-env-id", "6f2a3c1e-8d4b", "--token-file", path];
    parseConfig(args, { env: {}, cmdline: "" });
    assert.equal(lines.length, 1);
    assert.match(lines[0], new RegExp(`Token file ${path} is readable`));
    await Deno.chmod(path, 0o600);
    parseConfig(args, { env: {}, cmdline: "" });
    assert.equal(lines.length, 1, "a private file is not warned about");
  } finally {
    configureLog({
      sink: (l) => Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")),
    });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: --min-speed and --min-speed-time, with defaults for unattended boots", () => {
  const d = run(["--ipxe-url", "http://h/boot.ipxe"]);
  assert.equal(d.minSpeed, 1024);
  assert.equal(d.minSpeedTimeMs, 30_000);
  const c = run([
    "--ipxe-url",
    "http://h/boot.ipxe",
    "--min-speed",
    "0",
    "--min-speed-time",
    "2.5",
  ]);
  assert.equal(c.minSpeed, 0, "0 turns the check off");
  assert.equal(c.minSpeedTimeMs, 2500);
  const env = run(["--ipxe-url", "http://h/boot.ipxe"], {
    ...none,
    env: { ASSISTED_MIN_SPEED: "65536" },
  });
  assert.equal(env.minSpeed, 65536);
  for (const bad of ["-1", "1.5", "fast", "", String(2 ** 30 + 1)]) {
    usageError(
      ["--ipxe-url", "http://h/boot.ipxe", `--min-speed=${bad}`],
      /--min-speed (must be a whole number of bytes per second|is empty)/,
    );
  }
  usageError(
    ["--ipxe-url", "http://h/boot.ipxe", "--min-speed-time", "0.5"],
    /--min-speed-time must be a number >= 1/,
  );
  assert.match(helpText(), /--min-speed BYTES .*default 1024; 0: never/);
  assert.match(helpText(), /--min-speed-time SECONDS .*default 30/);
});

Deno.test("config: --console takes keep, host or host-persistent, and keeps the kernel's command line", () => {
  const host = "BOOT_IMAGE=/vmlinuz console=tty0 console=ttyS0,115200n8";
  const base = ["--ipxe-url", "http://h/b"];
  const keep = run(base, { ...none, cmdline: host });
  assert.equal(keep.console, "keep", "keep is the default");
  assert.equal(keep.hostCmdline, host);
  assert.equal(run([...base, "--console", "host"]).console, "host");
  assert.equal(
    run(base, { ...none, cmdline: `${host} assisted.console=host-persistent` })
      .console,
    "host-persistent",
  );
  assert.equal(
    run(base, { ...none, env: { ASSISTED_CONSOLE: "host" } }).console,
    "host",
  );
  usageError(
    [...base, "--console", "auto"],
    /--console must be keep, host or host-persistent, got "auto"/,
  );
});

Deno.test("config: each --append-karg / --delete-karg is one kernel argument", () => {
  const base = ["--ipxe-url", "http://h/b"];
  const c = run([
    ...base,
    "--append-karg",
    'p="a b"',
    "--delete-karg",
    "coreos.inst.persistent-kargs=console=tty1 console=ttyS1,115200n8",
  ]);
  assert.deepEqual(c.appendKargs, ['p="a b"']);
  assert.deepEqual(c.deleteKargs, [
    'coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"',
  ]);
  usageError(
    [...base, "--append-karg", 'p="a b'],
    /--append-karg "p=\\"a b": it has an unbalanced double quote/,
  );
  usageError(
    [...base, "--delete-karg", 'x=a "b c"'],
    /--delete-karg .*: the kernel would read 2 arguments in it/,
  );
  usageError(
    [...base],
    /^Kernel command line parameter assisted\.append_karg "q=\\" quiet": it has an unbalanced double quote/,
    { ...none, cmdline: 'assisted.append_karg=q=" quiet' },
  );
});

Deno.test("config: --api-url and --sso-url hold no user:password@, --api-url no query or fragment (exit 2)", () => {
  const id = ["--infra-env-id", "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b"];
  for (
    const url of [
      "https://user:pw@api.example.com/api",
      "https://user@api.example.com/api",
    ]
  ) {
    usageError(
      [...id, "--api-url", url],
      /--api-url must not hold a user:password@/,
    );
  }
  for (
    const url of [
      "https://api.example.com/api?x=1",
      "https://api.example.com/api?",
      "https://api.example.com/api#frag",
    ]
  ) {
    usageError(
      [...id, "--api-url", url],
      /--api-url must not have a query or a fragment/,
    );
  }
  files["/rt-sso"] = "offline-token-abcdef\n";
  usageError(
    [
      ...id,
      "--refresh-token-file",
      "/rt-sso",
      "--sso-url",
      "https://u:p@sso.example.com/token",
    ],
    /--sso-url must not hold a user:password@/,
  );
  const c = run([...id, "--api-url", "https://api.example.com/api/"]);
  assert.equal(
    c.source.kind === "infraenv" && c.source.apiUrl,
    "https://api.example.com/api",
  );
});
