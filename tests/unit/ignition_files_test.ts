/**
 * The Ignition generator's own rules, without Ignition or systemd: settings
 * checked as the bootloader reads them (a list split on whitespace), the
 * config rendered as text, and the reverse direction the disk-image build
 * uses: the bootloader's files read back out of any Ignition config, or
 * nothing when what the target will read cannot be known.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import {
  bootloaderFiles,
  bootloaderView,
  CONFIG_DIR,
  CONFIG_PATH,
  decodeDataUrl,
  generateIgnition,
  type IgnitionOptions,
  renderIgnition,
  UNIT_NAME,
} from "../../ignition/mod.ts";

const HEX = "cd".repeat(32);
const BASE: IgnitionOptions = {
  bootloaderUrl: "https://mirror.example.test/assisted-bootloader",
  bootloaderSha256: HEX,
  ipxeUrl: "https://hub.example.test/boot.ipxe",
};

function b64(text: string): string {
  return `data:;base64,${btoa(text)}`;
}

async function refused(options: IgnitionOptions, pattern: RegExp) {
  await assert.rejects(generateIgnition(options), (err) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.match(err.message, pattern);
    return true;
  });
}

/** config.env of a generated config, decoded. */
async function configEnv(options: IgnitionOptions): Promise<string> {
  const files = bootloaderFiles(await generateIgnition(options))!;
  return files.find((f) => f.path === CONFIG_PATH)!.contents;
}

Deno.test("ignition: a list setting is checked item by item, split on runs of spaces", async () => {
  const pins = `  https://h/k=${HEX}   https://h/i=${HEX}  `;
  const env = await configEnv({
    ...BASE,
    settings: { ASSISTED_ARTIFACT_SHA256: pins },
  });
  assert.match(env, /^ASSISTED_ARTIFACT_SHA256=/m);
  await refused(
    {
      ...BASE,
      settings: { ASSISTED_ARTIFACT_SHA256: `https://h/k=${HEX} nope` },
    },
    /^Setting ASSISTED_ARTIFACT_SHA256 takes URL=HEX, got "nope"$/,
  );
});

Deno.test("ignition: a single-value setting is checked whole, trimmed", async () => {
  assert.match(
    await configEnv({ ...BASE, settings: { ASSISTED_RETRIES: " 3 " } }),
    /^ASSISTED_RETRIES=/m,
  );
  await refused(
    { ...BASE, settings: { ASSISTED_RETRIES: "3 4" } },
    /^Setting ASSISTED_RETRIES must be a number >= 0, got "3 4"$/,
  );
});

Deno.test("ignition: a value written twice names both places", async () => {
  await refused(
    {
      ...BASE,
      caBundle: "-----BEGIN CERTIFICATE-----\n",
      settings: { ASSISTED_CA_CERT: "/etc/x.pem" },
    },
    /^ASSISTED_CA_CERT would be written twice \(CA_BUNDLE, Setting ASSISTED_CA_CERT\)$/,
  );
});

Deno.test("ignition: an SSH key that is not one is quoted at most 40 characters", async () => {
  const key = "not-a-key " + "x".repeat(100);
  await refused(
    { ...BASE, sshKeys: [key] },
    new RegExp(
      `^SSH_KEYS has a line that is not an OpenSSH public key: "${
        key.slice(0, 40)
      }"$`,
    ),
  );
});

Deno.test("ignition: the unit is enabled, the text is the config as JSON with a final newline", async () => {
  const config = await generateIgnition(BASE);
  assert.deepEqual(
    config.systemd.units.map((u) => [u.name, u.enabled]),
    [[UNIT_NAME, true]],
  );
  // Ignition replaces what is there (an image built again, a file the
  // image already has), never fails on it.
  assert.ok(config.storage.files.every((f) => f.overwrite === true));
  assert.ok(config.storage.directories.every((d) => d.overwrite === true));
  const text = await renderIgnition(BASE);
  assert.ok(text.endsWith("}\n"));
  assert.deepEqual(JSON.parse(text), config);
});

Deno.test("ignition: data URLs decode from base64 or percent-encoding, anything else is refused", () => {
  const text = (source: string) =>
    new TextDecoder().decode(decodeDataUrl(source));
  assert.equal(text("data:;base64,aGk="), "hi");
  assert.equal(text("data:text/plain;base64,aGk="), "hi");
  assert.equal(text("data:,a%20b%0A"), "a b\n");
  assert.equal(text("data:text/plain,base64"), "base64");
  assert.throws(
    () => decodeDataUrl("xdata:,a"),
    /^Error: not a data URL: xdata:,a$/,
  );
  assert.throws(
    () => decodeDataUrl(`https://h/${"y".repeat(60)}`),
    new RegExp(`^Error: not a data URL: https://h/${"y".repeat(20)}$`),
  );
});

Deno.test("ignition: the bootloader's files are read back from any config, only under its directory", () => {
  const config = {
    storage: {
      files: [
        null,
        { path: 7 },
        { path: "/etc/other", contents: { source: b64("x") } },
        { path: `${CONFIG_DIR}x/config.env`, contents: { source: b64("x") } },
        { path: CONFIG_PATH, mode: 0o600, contents: { source: b64("A=1\n") } },
        { path: `${CONFIG_DIR}/token`, contents: { source: "data:,t%0A" } },
      ],
    },
  };
  assert.deepEqual(bootloaderFiles(config), [
    { path: CONFIG_PATH, mode: 0o600, contents: "A=1\n" },
    { path: `${CONFIG_DIR}/token`, mode: 0o644, contents: "t\n" },
  ]);
});

Deno.test("ignition: files read back are unknown when not inline, compressed, not UTF-8, or without config.env", () => {
  const withFile = (file: Record<string, unknown>) => ({
    storage: {
      files: [
        { path: CONFIG_PATH, contents: { source: b64("A=1\n") } },
        { path: `${CONFIG_DIR}/token`, ...file },
      ],
    },
  });
  for (
    const [what, file] of [
      ["remote", { contents: { source: "https://h/token" } }],
      ["compressed", { contents: { source: b64("x"), compression: "gzip" } }],
      ["no contents", {}],
      ["no source", { contents: {} }],
      ["not UTF-8", { contents: { source: "data:;base64,/w==" } }],
    ] as const
  ) {
    assert.equal(bootloaderFiles(withFile(file)), undefined, what);
  }
  assert.equal(bootloaderFiles(null), undefined);
  assert.equal(bootloaderFiles({ storage: {} }), undefined);
  assert.equal(
    bootloaderFiles({
      storage: {
        files: [{
          path: `${CONFIG_DIR}/token`,
          contents: { source: b64("t") },
        }],
      },
    }),
    undefined,
  );
});

Deno.test("ignition: the bootloader's view of the target judges a file there by the mode it is written with, not by this machine's files", () => {
  const config = "ASSISTED_IPXE_URL=https://hub.example.test/boot.ipxe\n";
  const view = (mode: number) =>
    bootloaderView([{ path: CONFIG_PATH, mode, contents: config }], {
      configPath: CONFIG_PATH,
    });
  assert.deepEqual(view(0o600).config.source, {
    kind: "ipxe-url",
    url: "https://hub.example.test/boot.ipxe",
  });
  view(0o644);
  assert.throws(() => view(0o664), (err) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.equal(
      err.message,
      `The bootloader would refuse this config: Config file ${CONFIG_PATH} is writable by other users (mode 0664): whoever can change it decides what this machine boots (chmod go-w ${CONFIG_PATH})`,
    );
    return true;
  });
});
