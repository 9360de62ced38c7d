/**
 * Tests of the Ignition generator (ignition/): the config passes Debian's real
 * `ignition-validate`, the unit passes `systemd-analyze verify`, modes and
 * contents are right, bad parameters are refused, and the embedded
 * download-and-run script is run for real against a server on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  CA_PATH,
  CONFIG_DIR,
  CONFIG_PATH,
  decodeDataUrl,
  DOWNLOAD_ENV_PATH,
  generateIgnition,
  type IgnitionConfig,
  type IgnitionOptions,
  REFRESH_TOKEN_PATH,
  renderIgnition,
  RUN_SCRIPT_PATH,
  TOKEN_PATH,
  UNIT_NAME,
  ZINCATI_PATH,
} from "../../ignition/mod.ts";
import { optionsFromArgs } from "../../ignition/generate_ignition.ts";
import { defaultConsoleKargs } from "../../image/build_image.ts";
import { type Config, parseConfig } from "../../lib/config/mod.ts";
import { chooseConsoles } from "../../lib/resolve/consoles.ts";
import { renderBootScript } from "../../dev/mock_infraenv.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token.signature";
const CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
const BASE: IgnitionOptions = {
  bootloaderUrl: "https://example.com/assisted-bootloader",
  bootloaderSha256: SHA.toUpperCase(),
  apiUrl: "https://api.openshift.com",
  infraEnvId: "6b1a3e5c-8f0e-4a51-9d9e-0e2e3d6f7a10",
  refreshToken: TOKEN + "\n",
  caBundle: CA,
  sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogus user@host"],
  passwordHash: "$y$j9T$abc$def",
  extraKargs: ["ip=dhcp", "rd.debug"],
};

async function run(
  cmd: string,
  args: string[],
  options: Deno.CommandOptions = {},
) {
  const out = await new Deno.Command(cmd, {
    stdout: "piped",
    stderr: "piped",
    ...options,
    args,
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

function file(config: IgnitionConfig, path: string) {
  const f = config.storage.files.find((x) => x.path === path);
  assert.ok(f, `config writes ${path}`);
  return {
    mode: f.mode,
    text: new TextDecoder().decode(decodeDataUrl(f.contents.source)),
  };
}

/** Writes the config's files and unit under `root`, as Ignition would, and returns `root`. */
async function extract(config: IgnitionConfig, root: string): Promise<void> {
  for (const f of config.storage.files) {
    const path = root + f.path;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(path, decodeDataUrl(f.contents.source), {
      mode: f.mode,
    });
    await Deno.chmod(path, f.mode);
  }
  for (const u of config.systemd.units) {
    await Deno.mkdir(`${root}/etc/systemd/system`, { recursive: true });
    await Deno.writeTextFile(
      `${root}/etc/systemd/system/${u.name}`,
      u.contents,
    );
  }
}

Deno.test("the generated config passes ignition-validate without warnings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [name, options] of Object.entries({
        full: BASE,
        minimal: minimalOptions(),
      })
    ) {
      const path = `${dir}/${name}.ign`;
      await Deno.writeTextFile(path, await renderIgnition(options));
      const r = await run("ignition-validate", [path]);
      assert.equal(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
      assert.equal((r.stdout + r.stderr).trim(), "", `${name}: no warnings`);
    }
    // The validator does reject a broken config (the check above can fail).
    const bad = await generateIgnition(BASE) as unknown as {
      storage: { files: { mode: unknown }[] };
    };
    bad.storage.files[0].mode = "0600";
    await Deno.writeTextFile(`${dir}/bad.ign`, JSON.stringify(bad));
    assert.notEqual(
      (await run("ignition-validate", [`${dir}/bad.ign`])).code,
      0,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function minimalOptions(): IgnitionOptions {
  return {
    bootloaderUrl: "http://10.0.2.100/assisted-bootloader",
    bootloaderSha256: SHA,
    ipxeUrl: "http://10.0.2.100/x",
  };
}

Deno.test("the unit and its script pass systemd-analyze verify", async () => {
  const root = await Deno.makeTempDir();
  try {
    await extract(await generateIgnition(BASE), root);
    // verify --root needs the standard targets and the commands the unit runs.
    await Deno.mkdir(`${root}/usr/lib/systemd`, { recursive: true });
    assert.equal(
      (await run("cp", [
        "-a",
        "/lib/systemd/system",
        `${root}/usr/lib/systemd/`,
      ])).code,
      0,
    );
    await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
    await Deno.copyFile("/usr/bin/touch", `${root}/usr/bin/touch`);
    await Deno.chmod(`${root}/usr/bin/touch`, 0o755);
    const ok = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      UNIT_NAME,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    // No warning about the unit: every directive, the sandbox's included, is
    // known to this systemd ...
    assert.doesNotMatch(ok.stderr, new RegExp(UNIT_NAME));
    // ... which the check would see: a misspelled one is named.
    const unitPath = `${root}/etc/systemd/system/${UNIT_NAME}`;
    const unit = await Deno.readTextFile(unitPath);
    await Deno.writeTextFile(
      unitPath,
      unit.replace(/^\[Service\]$/m, "$&\nProtectSytem=strict"),
    );
    const typo = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      UNIT_NAME,
    ]);
    assert.match(typo.stderr, /Unknown key (name )?'ProtectSytem'/);
    await Deno.writeTextFile(unitPath, unit);
    // ... and fails when the script is missing, so the check is real.
    await Deno.remove(root + RUN_SCRIPT_PATH);
    const missing = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      UNIT_NAME,
    ]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /assisted-bootloader-run is not executable/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("files, modes, unit and user are as specified", async () => {
  const config = await generateIgnition(BASE);
  assert.equal(config.ignition.version, "3.3.0");
  assert.deepEqual(config.storage.directories, [{
    path: CONFIG_DIR,
    mode: 0o700,
    overwrite: true,
  }]);
  const cfg = file(config, CONFIG_PATH);
  assert.equal(cfg.mode, 0o600);
  assert.match(cfg.text, /^ASSISTED_API_URL="https:\/\/api\.openshift\.com"$/m);
  assert.match(
    cfg.text,
    new RegExp(`^ASSISTED_INFRA_ENV_ID="${BASE.infraEnvId}"$`, "m"),
  );
  assert.match(
    cfg.text,
    new RegExp(`^ASSISTED_REFRESH_TOKEN_FILE="${REFRESH_TOKEN_PATH}"$`, "m"),
  );
  assert.match(cfg.text, new RegExp(`^ASSISTED_CA_CERT="${CA_PATH}"$`, "m"));
  assert.match(cfg.text, /^ASSISTED_APPEND_KARG="ip=dhcp rd\.debug"$/m);
  assert.doesNotMatch(cfg.text, /ASSISTED_TOKEN_FILE|ASSISTED_IPXE_URL/);
  const refresh = file(config, REFRESH_TOKEN_PATH);
  assert.deepEqual(refresh, { mode: 0o600, text: TOKEN });
  assert.equal(config.storage.files.some((f) => f.path === TOKEN_PATH), false);
  const dl = file(config, DOWNLOAD_ENV_PATH);
  assert.equal(dl.mode, 0o600);
  assert.equal(
    dl.text.split("\n").filter((l) => l && !l.startsWith("#")).join("\n"),
    `BOOTLOADER_URL="${BASE.bootloaderUrl}"\nBOOTLOADER_SHA256="${SHA}"`,
  );
  assert.deepEqual(file(config, CA_PATH), { mode: 0o644, text: CA });
  const zincati = file(config, ZINCATI_PATH);
  assert.equal(zincati.mode, 0o644);
  assert.match(zincati.text, /^\[updates\]\nenabled = false$/m);
  const script = file(config, RUN_SCRIPT_PATH);
  assert.equal(script.mode, 0o755);
  assert.equal(
    script.text,
    await Deno.readTextFile(`${ROOT}/ignition/assisted-bootloader-run.sh`),
  );
  // The token is only in its 0600 file: not in the unit, the script or another file.
  for (
    const f of config.storage.files.filter((x) => x.path !== REFRESH_TOKEN_PATH)
  ) {
    assert.doesNotMatch(file(config, f.path).text, /test-token/, f.path);
  }
  assert.equal(config.systemd.units.length, 1);
  const unit = config.systemd.units[0];
  assert.equal(unit.name, UNIT_NAME);
  assert.equal(unit.enabled, true);
  assert.equal(
    unit.contents,
    await Deno.readTextFile(`${ROOT}/ignition/assisted-bootloader.service`),
  );
  for (
    const line of [
      "Wants=network-online.target",
      "After=network-online.target",
      "Type=oneshot",
      "Restart=on-failure",
      // Bad configuration (2), refused (7) and too little memory (18) are not retried.
      "RestartPreventExitStatus=2 7 18",
      `EnvironmentFile=${DOWNLOAD_ENV_PATH}`,
      `ExecStart=${RUN_SCRIPT_PATH}`,
      // Disks read-only (an installed host's boot partition), nothing else.
      "DevicePolicy=closed",
      "DeviceAllow=block-sd r",
      "DeviceAllow=block-virtblk r",
      "DeviceAllow=block-blkext r",
      "StandardOutput=journal+console",
      "WantedBy=multi-user.target",
    ]
  ) {
    assert.match(
      unit.contents,
      new RegExp(`^${line.replace(/[.+!]/g, "\\$&")}$`, "m"),
      line,
    );
  }
  assert.match(unit.contents, /^RestartSec=\d+s$/m);
  // Every boot asks the service (a host returned to the InfraEnv is not stuck):
  // no stamp makes a later boot skip the unit.
  assert.doesNotMatch(unit.contents, /^(ConditionPathExists|ExecStartPost)=/m);
  // Devices are read only, never written, and only block devices.
  assert.doesNotMatch(
    unit.contents,
    /^DeviceAllow=\S+ [rwm]*[wm]|^DeviceAllow=char-/m,
  );
  assert.match(unit.contents, /^TimeoutStartSec=\d+min$/m);
  assert.deepEqual(config.passwd, {
    users: [{
      name: "core",
      sshAuthorizedKeys: BASE.sshKeys,
      passwordHash: BASE.passwordHash,
    }],
  });
  // Minimal: no user, no secrets, the iPXE URL (which may carry a token) only in the 0600 config.
  const min = await generateIgnition(minimalOptions());
  assert.equal(min.passwd, undefined);
  assert.deepEqual(min.storage.files.map((f) => f.path), [
    CONFIG_PATH,
    DOWNLOAD_ENV_PATH,
    RUN_SCRIPT_PATH,
    ZINCATI_PATH,
  ]);
  assert.match(
    file(min, CONFIG_PATH).text,
    /^ASSISTED_IPXE_URL="http:\/\/10\.0\.2\.100\/x"$/m,
  );
});

Deno.test("bad parameters are refused with a one-line error", async () => {
  const cases: [string, Partial<IgnitionOptions>, RegExp][] = [
    ["missing sha", { bootloaderSha256: "" }, /BOOTLOADER_SHA256 is required/],
    [
      "short sha",
      { bootloaderSha256: SHA.slice(1) },
      /BOOTLOADER_SHA256 must be 64 hexadecimal digits/,
    ],
    [
      "non-hex sha",
      { bootloaderSha256: "g" + SHA.slice(1) },
      /BOOTLOADER_SHA256 must be 64 hexadecimal digits/,
    ],
    ["missing url", { bootloaderUrl: "" }, /BOOTLOADER_URL is required/],
    [
      "malformed url",
      { bootloaderUrl: "not a url" },
      /BOOTLOADER_URL is not a valid URL/,
    ],
    [
      "ftp url",
      { bootloaderUrl: "ftp://example.com/x" },
      /BOOTLOADER_URL must be http or https, got "ftp"/,
    ],
    [
      "malformed api url",
      { apiUrl: "api.openshift.com" },
      /API_URL is not a valid URL/,
    ],
    [
      "token with newline",
      { refreshToken: "abc\ndef\n" },
      /The refresh token \(REFRESH_TOKEN_FILE\) contains characters that cannot be sent in an HTTP header/,
    ],
    [
      "empty token",
      { refreshToken: "\n" },
      /refresh token \(REFRESH_TOKEN_FILE\) is empty/,
    ],
    [
      "both tokens",
      { token: TOKEN },
      /TOKEN_FILE or REFRESH_TOKEN_FILE, not both/,
    ],
    [
      "neither infraenv nor ipxe",
      { infraEnvId: undefined },
      /Either INFRA_ENV_ID .* or IPXE_URL is required/,
    ],
    [
      "both infraenv and ipxe",
      { ipxeUrl: "https://x.example/ipxe" },
      /INFRA_ENV_ID or IPXE_URL, not both/,
    ],
    [
      "an id the bootloader refuses",
      { infraEnvId: "my-env" },
      /INFRA_ENV_ID must be a UUID, got "my-env"/,
    ],
    ["quote in a value", { infraEnvId: 'a"b' }, /INFRA_ENV_ID must be a UUID/],
    [
      "both quotes in a url",
      { bootloaderUrl: `https://x.example/a'b"c` },
      /BOOTLOADER_URL cannot be written to an environment file: it holds a ' and also a "/,
    ],
    [
      "karg with newline",
      { extraKargs: ["a\nb"] },
      /EXTRA_KARGS entry "a\\nb" has whitespace/,
    ],
    [
      "bad ssh key",
      { sshKeys: ["hello"] },
      /SSH_KEYS has a line that is not an OpenSSH public key/,
    ],
    [
      "bad password hash",
      { passwordHash: "secret" },
      /PASSWORD_HASH must be a crypt/,
    ],
    [
      "not a CA",
      { caBundle: "hello" },
      /CA_BUNDLE does not contain a PEM certificate/,
    ],
  ];
  for (const [name, change, message] of cases) {
    await assert.rejects(
      generateIgnition({ ...BASE, ...change }),
      (err: unknown) => {
        assert.ok(err instanceof BootError, name);
        assert.equal(err.exitCode, 2, name);
        assert.match(err.message, message, name);
        assert.doesNotMatch(err.message, /\n/, name);
        return true;
      },
      name,
    );
  }
  await assert.rejects(
    optionsFromArgs(["--token-file", "/nonexistent/token"], {}),
    /Cannot read TOKEN_FILE \/nonexistent\/token: no such file/,
  );
});

Deno.test("make generate-ignition writes a 0600 config; the CLI refuses bad input with exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/token`, TOKEN + "\n");
    const out = `${dir}/out/a.ign`;
    const ok = await run("make", [
      "-s",
      "-C",
      ROOT,
      "generate-ignition",
      `BOOTLOADER_URL=https://example.com/bl?x='1'`,
      `BOOTLOADER_SHA256=${SHA}`,
      `API_URL=http://127.0.0.1:8090`,
      `INFRA_ENV_ID=6b1a3e5c-8f0e-4a51-9d9e-0e2e3d6f7a10`,
      `TOKEN_FILE=${dir}/token`,
      `EXTRA_KARGS=a=1 b`,
      `IGNITION_OUT=${out}`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await Deno.stat(out)).mode! & 0o777, 0o600);
    const config = JSON.parse(await Deno.readTextFile(out)) as IgnitionConfig;
    assert.deepEqual(file(config, TOKEN_PATH), { mode: 0o600, text: TOKEN });
    assert.match(
      file(config, DOWNLOAD_ENV_PATH).text,
      /BOOTLOADER_URL="https:\/\/example\.com\/bl\?x='1'"/,
    );
    assert.match(
      file(config, CONFIG_PATH).text,
      /ASSISTED_APPEND_KARG="a=1 b"/,
    );

    const bad = await run(Deno.execPath(), [
      "run",
      "-A",
      `${ROOT}/ignition/generate_ignition.ts`,
    ], {
      env: {
        BOOTLOADER_URL: "https://example.com/bl",
        IPXE_URL: "https://x/",
        IGNITION_OUT: `${dir}/bad.ign`,
      },
    });
    assert.equal(bad.code, 2);
    assert.equal(
      bad.stderr,
      "generate-ignition: BOOTLOADER_SHA256 is required (sha256 of the bootloader binary)\n",
    );
    await assert.rejects(Deno.stat(`${dir}/bad.ign`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A throwaway "bootloader": records its arguments and the config it was given. */
const FAKE_BINARY = `#!/bin/sh
printf '%s\\n' "$@" > "$MARKER"
cat "$2" >> "$MARKER"
exit 0
`;

Deno.test("the download-and-run script verifies before running, against 127.0.0.1", async () => {
  const dir = await Deno.makeTempDir();
  const body = new TextEncoder().encode(FAKE_BINARY);
  const sha = createHash("sha256").update(body).digest("hex");
  const hits: Record<string, number> = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const path = new URL(req.url).pathname;
      hits[path] = (hits[path] ?? 0) + 1;
      if (path === "/flaky" && hits[path] === 1) {
        return new Response("busy", {
          status: 503,
        });
      }
      if (path === "/stall" && hits[path] === 1) {
        // Headers and a few bytes, then nothing: curl must give up and retry.
        return new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(body.slice(0, 3));
            },
          }),
          { headers: { "content-length": String(body.length) } },
        );
      }
      if (path === "/bl" || path === "/flaky" || path === "/stall") {
        return new Response(body);
      }
      return new Response("no", { status: 404 });
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const config = await generateIgnition({
      bootloaderUrl: `${base}/bl`,
      bootloaderSha256: sha,
      ipxeUrl: `${base}/ipxe`,
    });
    await extract(config, dir);
    const script = dir + RUN_SCRIPT_PATH;
    const bin = `${dir}/usr/local/bin/assisted-bootloader`;
    const marker = `${dir}/marker`;
    const runScript = (
      url: string,
      digest: string,
      extra: Record<string, string> = {},
    ) =>
      run(script, [], {
        clearEnv: true,
        env: {
          PATH: "/usr/bin:/bin",
          BOOTLOADER_URL: url,
          BOOTLOADER_SHA256: digest,
          BOOTLOADER_BIN: bin,
          BOOTLOADER_CONFIG: dir + CONFIG_PATH,
          STATE_DIRECTORY: `${dir}/var/lib/assisted-bootloader`,
          BOOTLOADER_RETRY_DELAY: "0",
          MARKER: marker,
          ...extra,
        },
      });

    // Wrong sha: clear message, exit 6, nothing installed or executed, no leftover download.
    const wrong = await runScript(`${base}/bl`, SHA);
    assert.equal(wrong.code, 6, wrong.stderr);
    assert.match(
      wrong.stderr,
      new RegExp(
        `sha256 mismatch for ${base}/bl: expected ${SHA}, got ${sha}; refusing`,
      ),
    );
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(bin), Deno.errors.NotFound);
    assert.deepEqual([
      ...Deno.readDirSync(`${dir}/var/lib/assisted-bootloader`),
    ], []);

    // Right sha: installed 0755 and executed with --config <config.env>.
    const good = await runScript(`${base}/bl`, sha.toUpperCase());
    assert.equal(good.code, 0, good.stderr);
    assert.equal((await Deno.stat(bin)).mode! & 0o777, 0o755);
    const seen = await Deno.readTextFile(marker);
    assert.equal(
      seen,
      `--config\n${dir}${CONFIG_PATH}\n${file(config, CONFIG_PATH).text}`,
    );
    assert.equal(hits["/bl"], 2);

    // Installed and still matching: runs without downloading again.
    await Deno.remove(marker);
    assert.equal((await runScript(`${base}/bl`, sha)).code, 0);
    assert.equal(hits["/bl"], 2);
    assert.ok((await Deno.stat(marker)).isFile);

    // Installed binary no longer matches the pinned sha: replaced by a verified download.
    await Deno.remove(bin);
    await Deno.remove(marker);
    const retried = await runScript(`${base}/flaky`, sha);
    assert.equal(retried.code, 0, retried.stderr);
    assert.match(
      retried.stderr,
      /download of .*\/flaky failed \(attempt 1 of 10\), retrying/,
    );
    assert.equal(hits["/flaky"], 2);
    assert.ok((await Deno.stat(marker)).isFile);

    // A server that stalls mid-body: cut after the stall window, retried, verified, run.
    await Deno.remove(marker);
    await Deno.remove(bin);
    const started = Date.now();
    const stalled = await runScript(`${base}/stall`, sha, {
      BOOTLOADER_STALL_SECONDS: "1",
    });
    assert.equal(stalled.code, 0, stalled.stderr);
    assert.match(
      stalled.stderr,
      /download of .*\/stall failed \(attempt 1 of 10\)/,
    );
    assert.equal(hits["/stall"], 2);
    assert.ok(
      Date.now() - started < 20_000,
      "the stall was cut, not waited out",
    );
    assert.ok((await Deno.stat(marker)).isFile);

    // A server that never serves it: bounded retries, exit 5, the query string (a token?) not logged.
    await Deno.remove(marker);
    await Deno.remove(bin);
    const gone = await runScript(`${base}/missing?api_key=SECRET`, sha, {
      BOOTLOADER_ATTEMPTS: "2",
    });
    assert.equal(gone.code, 5);
    assert.match(gone.stderr, /cannot download .*\/missing after 2 attempts/);
    assert.doesNotMatch(gone.stderr, /SECRET/);
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);

    // Bad configuration: exit 2 (the unit does not restart on it).
    const noSha = await runScript(`${base}/bl`, "");
    assert.equal(noSha.code, 2);
    assert.match(noSha.stderr, /BOOTLOADER_SHA256 must be 64 hex digits/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config.env: the discovery boot takes the image's consoles by default", async () => {
  const text = file(await generateIgnition(BASE), CONFIG_PATH).text;
  assert.match(text, /^ASSISTED_CONSOLE="host"$/m);
  // What the bootloader reads from it on an FCOS machine booted with the
  // image's CONSOLE_KARGS, on arm64 too.
  for (const arch of ["x86_64", "aarch64"]) {
    const kargs = defaultConsoleKargs(arch);
    const parsed = parseConfig(["--config", CONFIG_PATH], {
      env: {},
      cmdline: `BOOT_IMAGE=(hd0,gpt3)/ostree/x/vmlinuz rw ${kargs.join(" ")}`,
      readTextFile: (p) => {
        if (p === CONFIG_PATH) return text;
        if (p === REFRESH_TOKEN_PATH) return TOKEN;
        throw new Deno.errors.NotFound(p);
      },
      fileMode: () => 0o600,
    });
    assert.equal(parsed.kind, "run");
    const config = (parsed as { config: Config }).config;
    assert.equal(config.console, "host");
    const script = renderBootScript({
      initrd: "http://i/initrd",
      kernel: "http://k/kernel",
      rootfs: "http://r/rootfs",
    });
    const cmdline = script.split("\n")[2].split(" ").slice(2).join(" ");
    const out = chooseConsoles(cmdline, {
      mode: config.console,
      hostCmdline: config.hostCmdline,
    }).cmdline;
    assert.match(
      out,
      new RegExp(
        ` ignition\\.platform\\.id=metal ${
          kargs.join(" ")
        } coreos\\.inst\\.persistent-kargs="console=tty1 console=ttyS1,115200n8"$`,
      ),
    );
  }
  // A setting of its own replaces the default, once.
  const keep = file(
    await generateIgnition({ ...BASE, settings: { ASSISTED_CONSOLE: "keep" } }),
    CONFIG_PATH,
  ).text;
  assert.deepEqual(keep.match(/^ASSISTED_CONSOLE=.*$/gm), [
    'ASSISTED_CONSOLE="keep"',
  ]);
});

Deno.test("the unit and the initramfs stop retrying on the same exit codes: those no retry can fix", async () => {
  const unit = await Deno.readTextFile(
    `${ROOT}/ignition/assisted-bootloader.service`,
  );
  const init = await Deno.readTextFile(`${ROOT}/image/initrd/init`);
  const unitCodes = /^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1]
    .split(/\s+/).map(Number);
  // The first `case $rc in` of /init: the codes that stop the retry loop.
  const initCodes = /case \$rc in\n\s*([\d |]+)\)/.exec(init)?.[1]
    .split("|").map((c) => Number(c.trim()));
  const expected = [ExitCode.Usage, ExitCode.Refused, ExitCode.Memory];
  assert.deepEqual(unitCodes, expected, "the unit");
  assert.deepEqual(initCodes, expected, "the initramfs's /init");
});

Deno.test("config.env holds exactly the lines of the given parameters, and names only files the config writes", async () => {
  const lines = (config: IgnitionConfig) =>
    file(config, CONFIG_PATH).text.split("\n").filter((l) =>
      l && !l.startsWith("#")
    );
  assert.deepEqual(lines(await generateIgnition(minimalOptions())), [
    'ASSISTED_IPXE_URL="http://10.0.2.100/x"',
    'ASSISTED_CONSOLE="host"',
  ]);
  const config = await generateIgnition({
    bootloaderUrl: "https://example.com/assisted-bootloader",
    bootloaderSha256: SHA,
    apiUrl: "https://api.example.com",
    infraEnvId: BASE.infraEnvId,
    token: TOKEN + "\n",
    ssoUrl: "https://sso.example.com/token",
    caBundle: CA.trimEnd(),
    settings: { ASSISTED_WORK_DIR: "/var/lib/ab", ASSISTED_RETRIES: "7" },
  });
  assert.deepEqual(lines(config), [
    'ASSISTED_API_URL="https://api.example.com"',
    `ASSISTED_INFRA_ENV_ID="${BASE.infraEnvId}"`,
    'ASSISTED_SSO_URL="https://sso.example.com/token"',
    `ASSISTED_TOKEN_FILE="${TOKEN_PATH}"`,
    `ASSISTED_CA_CERT="${CA_PATH}"`,
    'ASSISTED_CONSOLE="host"',
    'ASSISTED_WORK_DIR="/var/lib/ab"',
    'ASSISTED_RETRIES="7"',
  ]);
  assert.ok(TOKEN_PATH.startsWith(`${CONFIG_DIR}/`), TOKEN_PATH);
  assert.deepEqual(file(config, TOKEN_PATH), { mode: 0o600, text: TOKEN });
  // A CA bundle without a final newline gets one, and only one.
  assert.equal(file(config, CA_PATH).text, CA);
  // Every file config.env names is one the config writes.
  for (const line of lines(config)) {
    const value = line.replace(/^[A-Z0-9_]+="(.*)"$/, "$1");
    if (value.startsWith("/etc/")) {
      assert.ok(config.storage.files.some((f) => f.path === value), line);
    }
  }
  // The user: keys alone, or a password hash alone.
  const keyOnly = await generateIgnition({
    ...minimalOptions(),
    sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"],
  });
  assert.deepEqual(keyOnly.passwd, {
    users: [{
      name: "core",
      sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"],
    }],
  });
  const hashOnly = await generateIgnition({
    ...minimalOptions(),
    passwordHash: "$6$salt$hash",
  });
  assert.deepEqual(hashOnly.passwd, {
    users: [{ name: "core", passwordHash: "$6$salt$hash" }],
  });
  // The digest in its usual spellings.
  for (const spelling of [`sha256:${SHA}`, `SHA256-${SHA}`, ` ${SHA}\n`]) {
    const dl = file(
      await generateIgnition({
        ...minimalOptions(),
        bootloaderSha256: spelling,
      }),
      DOWNLOAD_ENV_PATH,
    );
    assert.match(dl.text, new RegExp(`^BOOTLOADER_SHA256="${SHA}"$`, "m"));
  }
});

Deno.test("values that would leave their line, their quotes or their parameter are refused, naming the parameter", async () => {
  const cases: [string, Partial<IgnitionOptions>, RegExp][] = [
    [
      "space in the bootloader URL",
      { bootloaderUrl: "https://x.example/a b" },
      /^BOOTLOADER_URL must not contain whitespace$/,
    ],
    [
      "ftp iPXE URL",
      { infraEnvId: undefined, ipxeUrl: "ftp://x.example/s" },
      /^IPXE_URL must be http or https or file, got "ftp"$/,
    ],
    ["bad SSO URL", { ssoUrl: "sso" }, /^SSO_URL is not a valid URL/],
    [
      "newline in a setting",
      { settings: { ASSISTED_WORK_DIR: "/x\nASSISTED_IPXE_URL=http://evil" } },
      /^Setting ASSISTED_WORK_DIR cannot be written to an environment file: it holds a newline or another control character$/,
    ],
    [
      "control character in a setting",
      { settings: { ASSISTED_WORK_DIR: "/x\x01" } },
      /^Setting ASSISTED_WORK_DIR cannot be written to an environment file: it holds a newline/,
    ],
    [
      "setting not ASSISTED_*",
      { settings: { PATH: "/x" } },
      /^Setting PATH is not an ASSISTED_\* name$/,
    ],
    [
      "setting with a prefix",
      { settings: { XASSISTED_A: "1" } },
      /not an ASSISTED_\* name/,
    ],
    [
      "setting with a suffix",
      { settings: { "ASSISTED_A-B": "1" } },
      /not an ASSISTED_\* name/,
    ],
    [
      "setting in lower case",
      { settings: { ASSISTED_a: "1" } },
      /not an ASSISTED_\* name/,
    ],
    [
      "token with a space",
      { refreshToken: undefined, token: "abc def" },
      /^The token \(TOKEN_FILE\) contains characters that cannot be sent in an HTTP header/,
    ],
    [
      "token with an inner newline only",
      { refreshToken: "abc\ndef" },
      /^The refresh token \(REFRESH_TOKEN_FILE\) contains characters that cannot be sent/,
    ],
    [
      "empty token",
      { refreshToken: undefined, token: "" },
      /^The token \(TOKEN_FILE\) is empty$/,
    ],
    ["65 hex digits", { bootloaderSha256: SHA + "0" }, /64 hexadecimal digits/],
    [
      "a letter before",
      { bootloaderSha256: "x" + SHA },
      /64 hexadecimal digits/,
    ],
    [
      "ssh key with a prefix",
      { sshKeys: ["xssh-ed25519 AAAAC3Nz"] },
      /SSH_KEYS has a line/,
    ],
    [
      "ssh key with junk after the key",
      { sshKeys: ["ssh-ed25519 AAAAC3Nz!junk"] },
      /SSH_KEYS has a line/,
    ],
    [
      "hash with a prefix",
      { passwordHash: "x$6$salt$hash" },
      /PASSWORD_HASH must be/,
    ],
    [
      "hash with a space",
      { passwordHash: "$6$salt $hash" },
      /PASSWORD_HASH must be/,
    ],
  ];
  for (const [name, change, message] of cases) {
    await assert.rejects(
      generateIgnition({ ...BASE, ...change }),
      (err: unknown) => {
        assert.ok(err instanceof BootError, `${name}: ${err}`);
        assert.equal(err.exitCode, 2, name);
        assert.match(err.message, message, name);
        return true;
      },
      name,
    );
  }
});
