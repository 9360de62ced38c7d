/**
 * The generators and the bootloader agree: the config.env that
 * generate-ignition writes is read back by the bootloader's real parser (its
 * layers included) to the configuration that was asked for; for hostile
 * values the generator refuses exactly what the bootloader would refuse
 * (and, besides, only what no config.env line can carry); systemd's parser
 * reads the lines the same way; `make image` checks its kernel arguments as
 * the bootloader will read them.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type Config, readConfig } from "../../lib/config/mod.ts";
import { formatEnvLine, parseEnvFile } from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  CA_PATH,
  CONFIG_DIR,
  CONFIG_PATH,
  decodeDataUrl,
  generateIgnition,
  type IgnitionConfig,
  type IgnitionOptions,
  renderIgnition,
} from "../../ignition/mod.ts";
import { buildImage } from "../../image/build_image.ts";
import { ENV_FILE_WRITABLE } from "../test_util.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ID = "6b1a3e5c-8f0e-4a51-9d9e-0e2e3d6f7a10";
const TOKEN = "eyJhbGciOiJSUzI1NiJ9.config-test.signature";
const CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/** The smallest InfraEnv config; each hostile case changes one thing. */
const MIN: IgnitionOptions = {
  bootloaderUrl: "https://example.com/assisted-bootloader",
  bootloaderSha256: SHA,
  apiUrl: "https://api.example.com/api",
  infraEnvId: ID,
  token: TOKEN + "\n",
};

/** Writes the config's files under `root`, as Ignition would. */
async function extract(config: IgnitionConfig, root: string): Promise<void> {
  for (const f of config.storage.files) {
    const path = root + f.path;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(path, decodeDataUrl(f.contents.source));
    await Deno.chmod(path, f.mode);
  }
}

/**
 * The bootloader's real parser on the extracted files: `--config` as the run
 * script passes it, the target's paths mapped under `root`, an injected (empty
 * unless given) environment and kernel command line.
 */
function parseOnTarget(
  root: string,
  layers: { env?: Record<string, string>; cmdline?: string } = {},
): { config: Config; warnings: string[] } {
  const local = (p: string) => p.startsWith(`${CONFIG_DIR}/`) ? root + p : p;
  const warnings: string[] = [];
  const r = readConfig(["--config", CONFIG_PATH], {
    env: layers.env ?? {},
    cmdline: layers.cmdline ?? "",
    readTextFile: (p) => Deno.readTextFileSync(local(p)),
    fileMode: (p) => {
      try {
        return Deno.statSync(local(p)).mode ?? undefined;
      } catch {
        return undefined;
      }
    },
    warn: (m) => warnings.push(m),
  });
  assert.equal(r.kind, "run");
  return { config: (r as Extract<typeof r, { kind: "run" }>).config, warnings };
}

Deno.test("the generated config.env, written to disk, is read back by the bootloader's parser as asked", async () => {
  const root = await Deno.makeTempDir();
  try {
    const options: IgnitionOptions = {
      bootloaderUrl: "https://example.com/assisted-bootloader",
      bootloaderSha256: SHA,
      apiUrl: "https://api.example.com/api/",
      infraEnvId: ID.toUpperCase(),
      refreshToken: TOKEN + "\n",
      ssoUrl: "https://sso.example.com/token",
      caBundle: CA,
      extraKargs: ["ip=dhcp", 'console="ttyS0,115200"'],
      settings: {
        ASSISTED_PROGRESS: "lines",
        ASSISTED_SET: "menu=stable cost=$5`x`",
        ASSISTED_WORK_DIR: '/var/lib/a"b',
        ASSISTED_ARTIFACT_SHA256: `http://h/k?a=b=${"A".repeat(64)}`,
        ASSISTED_NO_CACHE: "yes",
      },
    };
    await extract(await generateIgnition(options), root);
    const { config, warnings } = parseOnTarget(root);
    assert.deepEqual(warnings, []);
    assert.deepEqual(config.source, {
      kind: "infraenv",
      apiUrl: "https://api.example.com/api",
      infraEnvId: ID,
      auth: {
        kind: "refresh",
        refreshToken: TOKEN,
        ssoUrl: "https://sso.example.com/token",
      },
      scriptType: undefined,
    });
    assert.deepEqual(config.appendKargs, ["ip=dhcp", 'console="ttyS0,115200"']);
    assert.deepEqual(config.caCerts, [CA_PATH]);
    assert.deepEqual(config.settings, { menu: "stable", cost: "$5`x`" });
    assert.equal(config.workDir, `/var/lib/a"b`);
    assert.deepEqual(config.artifactSha256, {
      "http://h/k?a=b": "a".repeat(64),
    });
    assert.equal(config.progress, "lines");
    assert.equal(config.noCache, true);

    // The layers are the bootloader's: the target's environment and kernel
    // command line still rank as documented around the file.
    const layered = parseOnTarget(root, {
      env: { ASSISTED_PROGRESS: "none" },
      cmdline: "assisted.progress=tty assisted.retries=9",
    }).config;
    assert.equal(layered.progress, "none", "env beats the file");
    assert.equal(layered.retries, 9, "the cmdline sets what the file does not");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

type Outcome = { ok: true; config: Config } | { ok: false; error: BootError };

/** What the bootloader makes of the options given as plain environment variables and files: the reference. */
function bootloaderOutcome(o: IgnitionOptions, settingsInFile: boolean) {
  const env: Record<string, string> = {};
  const files: Record<string, string> = {};
  if (o.apiUrl) env.ASSISTED_API_URL = o.apiUrl;
  if (o.infraEnvId) env.ASSISTED_INFRA_ENV_ID = o.infraEnvId;
  if (o.ipxeUrl) env.ASSISTED_IPXE_URL = o.ipxeUrl;
  if (o.ssoUrl) env.ASSISTED_SSO_URL = o.ssoUrl;
  if (o.token !== undefined) {
    env.ASSISTED_TOKEN_FILE = "/reference/token";
    files["/reference/token"] = o.token;
  }
  if (o.refreshToken !== undefined) {
    env.ASSISTED_REFRESH_TOKEN_FILE = "/reference/refresh-token";
    files["/reference/refresh-token"] = o.refreshToken;
  }
  if (o.extraKargs?.length) env.ASSISTED_APPEND_KARG = o.extraKargs.join(" ");
  // The image's default: consoles from the FCOS kernel the image boots.
  env.ASSISTED_CONSOLE = "host";
  const argv: string[] = [];
  if (settingsInFile) {
    // Only plain values here: the point is the key, which the environment would ignore.
    files["/reference/config.env"] = Object.entries(o.settings ?? {})
      .map(([k, v]) => `${k}=${v}\n`).join("");
    argv.push("--config", "/reference/config.env");
  } else {
    Object.assign(env, o.settings);
  }
  return outcome(() => {
    const r = readConfig(argv, {
      env,
      cmdline: "",
      readTextFile: (p) => {
        if (p in files) return files[p];
        throw new Deno.errors.NotFound(p);
      },
      fileMode: () => 0o100600,
    });
    assert.equal(r.kind, "run");
    return (r as Extract<typeof r, { kind: "run" }>).config;
  });
}

function outcome(fn: () => Config): Outcome {
  try {
    return { ok: true, config: fn() };
  } catch (err) {
    if (!(err instanceof BootError)) throw err;
    return { ok: false, error: err };
  }
}

/** What the generator does with the options: refuses, or writes files the bootloader's parser reads. */
async function generatorOutcome(o: IgnitionOptions): Promise<Outcome> {
  let ignition: IgnitionConfig;
  try {
    ignition = await generateIgnition(o);
  } catch (err) {
    if (!(err instanceof BootError)) throw err;
    return { ok: false, error: err };
  }
  const root = await Deno.makeTempDir();
  try {
    await extract(ignition, root);
    return { ok: true, config: parseOnTarget(root).config };
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

interface Hostile {
  name: string;
  change: Partial<IgnitionOptions>;
  /** accepted/refused by both; "unwritable": the bootloader accepts it, no config.env line can carry it. */
  expect: "accepted" | "refused" | "unwritable";
  /** The generator's message, when it is worth pinning. */
  message?: RegExp;
  /** The reference reads the settings from a config file (the environment ignores unknown keys). */
  settingsInFile?: boolean;
}

const s = (settings: Record<string, string>) => ({ settings });

const HOSTILE: Hostile[] = [
  {
    name: "not a UUID",
    change: { infraEnvId: "my-env" },
    expect: "refused",
    message: /^INFRA_ENV_ID must be a UUID, got "my-env"$/,
  },
  {
    name: "UUID with a quote",
    change: { infraEnvId: 'a"b' },
    expect: "refused",
  },
  {
    name: "UUID in capitals with spaces around",
    change: { infraEnvId: ` ${ID.toUpperCase()} ` },
    expect: "accepted",
  },
  {
    name: "API URL with the wrong scheme",
    change: { apiUrl: "ftp://api.example.com/api" },
    expect: "refused",
    message: /^API_URL must be http or https, got "ftp"$/,
  },
  {
    name: "API URL that is no URL",
    change: { apiUrl: "api" },
    expect: "refused",
  },
  {
    name: "iPXE URL javascript:",
    change: { infraEnvId: undefined, ipxeUrl: "javascript:alert(1)" },
    expect: "refused",
  },
  {
    name: "iPXE URL file: (the bootloader takes it)",
    change: { infraEnvId: undefined, ipxeUrl: "file:///srv/boot.ipxe" },
    expect: "accepted",
  },
  {
    name: "SSO URL with the wrong scheme",
    change: { token: undefined, refreshToken: TOKEN, ssoUrl: "ldap://sso" },
    expect: "refused",
  },
  {
    name: "short sha pin",
    change: s({ ASSISTED_KERNEL_SHA256: "abc" }),
    expect: "refused",
    message: /^Setting ASSISTED_KERNEL_SHA256 must be 64 hexadecimal digits$/,
  },
  {
    name: "sha pin in capitals",
    change: s({ ASSISTED_INITRD_SHA256: "A".repeat(64) }),
    expect: "accepted",
  },
  {
    name: "pin of a URL with a bad digest",
    change: s({ ASSISTED_ARTIFACT_SHA256: "http://h/k=xyz" }),
    expect: "refused",
  },
  {
    name: "token with a control character",
    change: { token: "abc\x01def" },
    expect: "refused",
    message:
      /^The token \(TOKEN_FILE\) contains characters that cannot be sent/,
  },
  {
    name: "token with a space",
    change: { token: "abc def" },
    expect: "refused",
  },
  {
    name: "token with a newline",
    change: { token: "abc\ndef" },
    expect: "refused",
  },
  {
    name: "non-ASCII token",
    change: { token: "t\u00f6ken" },
    expect: "refused",
  },
  { name: "empty token", change: { token: " \n" }, expect: "refused" },
  {
    name: "token between blank lines",
    change: { token: `\n  ${TOKEN}  \n\n` },
    expect: "accepted",
  },
  {
    name: "unknown ASSISTED_ key",
    change: s({ ASSISTED_KERNEL_SHA: "a".repeat(64) }),
    expect: "refused",
    settingsInFile: true,
    message:
      /^The bootloader would refuse this config: Config file \/etc\/assisted-bootloader\/config\.env: unknown setting ASSISTED_KERNEL_SHA$/,
  },
  {
    name: "a flag-only option as a setting",
    change: s({ ASSISTED_HELP: "1" }),
    expect: "refused",
    settingsInFile: true,
  },
  {
    name: "boolean that is none",
    change: s({ ASSISTED_INSECURE: "maybe" }),
    expect: "refused",
  },
  {
    name: "boolean word",
    change: s({ ASSISTED_NO_CACHE: "on" }),
    expect: "accepted",
  },
  {
    name: "negative retries",
    change: s({ ASSISTED_RETRIES: "-1" }),
    expect: "refused",
  },
  {
    name: "timeout longer than a timer waits",
    change: s({ ASSISTED_TIMEOUT: "3000000" }),
    expect: "refused",
  },
  {
    name: "short MAC",
    change: s({ ASSISTED_MAC: "52:54:00" }),
    expect: "refused",
  },
  {
    name: "MAC with dashes",
    change: s({ ASSISTED_MAC: "52-54-00-AA-BB-CC" }),
    expect: "accepted",
  },
  {
    name: "--set without =",
    change: s({ ASSISTED_SET: "novalue" }),
    expect: "refused",
  },
  {
    name: "--set with a quoted space (split like the bootloader splits it)",
    change: s({ ASSISTED_SET: 'menu="a b"' }),
    expect: "refused",
  },
  {
    name: "progress mode unknown",
    change: s({ ASSISTED_PROGRESS: "fancy" }),
    expect: "refused",
  },
  {
    name: "script type unknown",
    change: s({ ASSISTED_IPXE_SCRIPT_TYPE: "legacy" }),
    expect: "refused",
  },
  {
    name: "script type known",
    change: s({ ASSISTED_IPXE_SCRIPT_TYPE: "boot-order-control" }),
    expect: "accepted",
  },
  {
    name: "two script sources, one through a setting",
    change: s({ ASSISTED_IPXE_URL: "http://h/x" }),
    expect: "refused",
    message:
      /^The bootloader would refuse this config: Give --ipxe-url or --infra-env-id, not both$/,
  },
  {
    name: "a token file the config does not write",
    change: {
      token: undefined,
      ...s({ ASSISTED_TOKEN_FILE: "/etc/assisted-bootloader/other" }),
    },
    expect: "refused",
  },
  {
    name: "a karg list through a setting",
    change: s({ ASSISTED_APPEND_KARG: "a=1  b" }),
    expect: "accepted",
  },
  {
    name: "karg with quotes",
    change: { extraKargs: ['console="ttyS0,115200n8"'] },
    expect: "accepted",
  },
  {
    name: "URL with a double quote",
    change: { apiUrl: 'https://api.example.com/a"b' },
    expect: "accepted",
  },
  {
    name: "URL with a single quote",
    change: { apiUrl: "https://api.example.com/a'b" },
    expect: "accepted",
  },
  {
    name: "value with $ and a backtick",
    change: s({ ASSISTED_WORK_DIR: "/var/$HOME/`id`" }),
    expect: "accepted",
  },
  {
    name: "value with a backslash",
    change: s({ ASSISTED_WORK_DIR: "C:\\x" }),
    expect: "accepted",
  },
  {
    name: "value with # and ;",
    change: s({ ASSISTED_WORK_DIR: "/var/a#b;c" }),
    expect: "accepted",
  },
  {
    name: "URL with a newline",
    change: { apiUrl: "https://api.example.com/\napi" },
    expect: "unwritable",
    message:
      /^API_URL cannot be written to an environment file: it holds a newline/,
  },
  {
    name: "setting with a newline",
    change: s({ ASSISTED_WORK_DIR: "/var/a\nb" }),
    expect: "unwritable",
  },
  {
    name: "setting with a tab",
    change: s({ ASSISTED_WORK_DIR: "/var/a\tb" }),
    expect: "unwritable",
  },
  {
    name: "value with both quotes",
    change: s({ ASSISTED_WORK_DIR: `/var/a'b"c` }),
    expect: "unwritable",
  },
  {
    name: "karg with a space",
    change: { extraKargs: ["a b"] },
    expect: "unwritable",
    message: /^EXTRA_KARGS entry "a b" has whitespace$/,
  },
];

Deno.test("hostile values: the generator refuses exactly what the bootloader refuses, and what config.env cannot carry", async () => {
  for (const row of HOSTILE) {
    const options = { ...MIN, ...row.change };
    const gen = await generatorOutcome(options);
    const boot = bootloaderOutcome(options, row.settingsInFile ?? false);
    const label = `${row.name}: generator ${
      gen.ok ? "accepted" : gen.error.message
    }; bootloader ${boot.ok ? "accepted" : boot.error.message}`;
    if (!gen.ok) {
      assert.equal(gen.error.exitCode, ExitCode.Usage, label);
      assert.doesNotMatch(gen.error.message, /\n/, label);
      if (row.message) assert.match(gen.error.message, row.message, label);
    }
    if (!boot.ok) assert.equal(boot.error.exitCode, ExitCode.Usage, label);
    if (row.expect === "unwritable") {
      assert.ok(boot.ok, label);
      assert.ok(!gen.ok, label);
      assert.match(
        gen.error.message,
        /cannot be written to an environment file|has whitespace/,
        label,
      );
      continue;
    }
    assert.equal(boot.ok, row.expect === "accepted", label);
    assert.equal(gen.ok, boot.ok, label);
    if (gen.ok && boot.ok) assert.deepEqual(gen.config, boot.config, label);
  }
});

Deno.test("a key given twice (EXTRA_KARGS and a setting) is refused, not left to whichever line comes last", async () => {
  await assert.rejects(
    generateIgnition({
      ...MIN,
      extraKargs: ["a=1"],
      settings: { ASSISTED_APPEND_KARG: "b=2" },
    }),
    /^BootError: ASSISTED_APPEND_KARG would be written twice \(EXTRA_KARGS, Setting ASSISTED_APPEND_KARG\)$/,
  );
});

/** systemd's own env-file parser (the tokenizer of EnvironmentFile=), as run by the environment.d generator. */
const ENV_D_GENERATOR =
  "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator";

/** Runs the environment.d generator on `text`; returns what it read, by key. */
async function systemdReads(
  text: string,
  identity: string[],
): Promise<Map<string, string>> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/environment.d`);
    await Deno.writeTextFile(`${dir}/environment.d/50-test.conf`, text);
    const out = await new Deno.Command(ENV_D_GENERATOR, {
      clearEnv: true,
      // environment.d, unlike EnvironmentFile=, expands $NAME: each name the
      // values use stands for itself, so what is compared is the tokenizer.
      env: {
        XDG_CONFIG_HOME: dir,
        ...Object.fromEntries(identity.map((n) => [n, `$${n}`])),
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const read = new Map<string, string>();
    for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
      const m = /^(ABT_\d+)=(.*)$/.exec(line);
      if (!m) continue;
      // Printed shell-quoted when needed: "…" with \" \\ \$ \` escapes.
      const v = m[2].startsWith('"')
        ? m[2].slice(1, -1).replace(/\\(.)/g, "$1")
        : m[2];
      read.set(m[1], v);
    }
    return read;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("systemd's env-file parser reads every line the generator writes as the bootloader does", async () => {
  // environment.d drops empty assignments, which EnvironmentFile= keeps.
  const values = ENV_FILE_WRITABLE.filter((v) => v !== "");
  assert.ok(values.every((v) => !v.includes("${")), "no ${…}: see above");
  const text = values.map((v, i) => formatEnvLine(`ABT_${i}`, v)).join("");
  const ours = new Map(parseEnvFile(text, "test"));
  const identity = [
    ...new Set(
      values.flatMap((v) =>
        [...v.matchAll(/\$([A-Za-z_]\w*)/g)].map((m) => m[1])
      ),
    ),
  ];
  const theirs = await systemdReads(text, identity);
  for (const [i, v] of values.entries()) {
    assert.equal(ours.get(`ABT_${i}`), v, `bootloader: ${JSON.stringify(v)}`);
    assert.equal(theirs.get(`ABT_${i}`), v, `systemd: ${JSON.stringify(v)}`);
  }
  // The comparison can fail: a backslash between double quotes is an escape
  // to systemd and a character to the bootloader, so formatEnvLine never
  // writes one there.
  const risky = 'ABT_0="a\\\\b \\"q\\""\n';
  assert.equal(
    new Map(parseEnvFile(risky, "t")).get("ABT_0"),
    'a\\\\b \\"q\\"',
  );
  assert.equal((await systemdReads(risky, [])).get("ABT_0"), 'a\\b "q"');
});

async function runGenerator(env: Record<string, string>, args: string[] = []) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/ignition/generate_ignition.ts`, ...args],
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

Deno.test("generate-ignition: INFRA_ENV_ID=my-env is refused with exit 2 and no output; a good config round-trips from the CLI", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/token`, TOKEN + "\n");
    const base = {
      BOOTLOADER_URL: "https://example.com/bl",
      BOOTLOADER_SHA256: SHA,
      API_URL: "https://api.example.com/api",
      TOKEN_FILE: `${dir}/token`,
      IGNITION_OUT: `${dir}/out.ign`,
    };
    const bad = await runGenerator({ ...base, INFRA_ENV_ID: "my-env" });
    assert.equal(bad.code, 2);
    assert.equal(
      bad.stderr,
      'generate-ignition: INFRA_ENV_ID must be a UUID, got "my-env"\n',
    );
    await assert.rejects(Deno.stat(`${dir}/out.ign`), Deno.errors.NotFound);

    const unknown = await runGenerator({ ...base, INFRA_ENV_ID: ID }, [
      "--setting",
      "ASSISTED_NO_SUCH=1",
    ]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown setting ASSISTED_NO_SUCH\n$/);

    const good = await runGenerator({ ...base, INFRA_ENV_ID: ID }, [
      "--setting",
      "ASSISTED_PROGRESS=none",
      "--extra-kargs",
      "a=1 b",
    ]);
    assert.equal(good.code, 0, good.stderr);
    const root = `${dir}/root`;
    await extract(JSON.parse(await Deno.readTextFile(`${dir}/out.ign`)), root);
    const { config } = parseOnTarget(root);
    assert.equal(
      config.source.kind === "infraenv" && config.source.infraEnvId,
      ID,
    );
    assert.deepEqual(config.source.kind === "infraenv" && config.source.auth, {
      kind: "token",
      token: TOKEN,
    });
    assert.equal(config.progress, "none");
    assert.deepEqual(config.appendKargs, ["a=1", "b"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("make image: CONSOLE_KARGS are checked as the bootloader will read them, before any download", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ignition = `${dir}/config.ign`;
    await Deno.writeTextFile(ignition, await renderIgnition(MIN));
    const foreign = `${dir}/foreign.ign`;
    await Deno.writeTextFile(
      foreign,
      JSON.stringify({ ignition: { version: "3.3.0" } }),
    );
    const lines: string[] = [];
    const build = (config: string, consoleKargs: string[]) =>
      buildImage({
        ignition: config,
        output: `${dir}/out/x.raw`,
        cacheDir: `${dir}/cache`,
        // Nothing listens here: a build that got past the check fails on the download.
        streamUrl: "http://127.0.0.1:9/stream.json",
        arch: "x86_64",
        diskSize: 1 << 30,
        consoleKargs,
        verifySignature: true,
        fedoraKeysUrl: "http://127.0.0.1:9/keys",
        log: (l) => lines.push(l),
      });
    const refused = async (
      config: string,
      kargs: string[],
      message: RegExp,
    ) => {
      await assert.rejects(build(config, kargs), (err: unknown) => {
        assert.ok(err instanceof BootError, String(err));
        assert.equal(err.exitCode, ExitCode.Usage);
        assert.match(err.message, message);
        return true;
      });
    };
    // With the generated config.env: the whole configuration, as on the target.
    await refused(
      ignition,
      ["console=ttyS0", "assisted.ipxe_url=http://h/x"],
      /CONSOLE_KARGS "console=ttyS0 assisted\.ipxe_url=http:\/\/h\/x": The bootloader would refuse this config: Give --ipxe-url or --infra-env-id, not both/,
    );
    await refused(ignition, ["assisted.insecure=maybe"], /must be a boolean/);
    // An Ignition config of someone else's: each assisted.* value alone.
    await refused(
      foreign,
      ["assisted.retries=x"],
      /Kernel command line parameter assisted\.retries must be a number/,
    );
    // Accepted kargs get as far as the download; an unknown key is the bootloader's warning.
    for (const config of [ignition, foreign]) {
      lines.length = 0;
      await assert.rejects(
        build(config, [
          "console=ttyS0",
          "assisted.retries=3",
          "assisted.tpyo=1",
        ]),
        (err: unknown) =>
          !(err instanceof BootError && /CONSOLE_KARGS/.test(err.message)),
      );
      assert.ok(
        lines.includes(
          "image: warning: the bootloader will say: ignoring unknown kernel command line parameter assisted.tpyo",
        ),
        lines.join("\n"),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
