/**
 * The checks of every option value (lib/config/validate.ts), called on
 * merged raw values as the layers hand them over: what is refused, with
 * which message, and what an accepted value becomes in the configuration.
 */

import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import type { NamedFiles, RawOptions } from "../../lib/config/layers.ts";
import {
  MAX_TIMEOUT_SECONDS,
  normalizeMac,
  validateConfig,
} from "../../lib/config/validate.ts";

const ID = "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b";
const HEX = "ab".repeat(32);
const SCRIPT = { "ipxe-url": "http://h/boot.ipxe" };

function config(raw: RawOptions, files: NamedFiles = {}) {
  return validateConfig(raw, files).config;
}

/** Asserts a one-line usage error whose message matches `pattern`. */
function refused(
  raw: RawOptions,
  pattern: RegExp,
  files: NamedFiles = {},
  origins = {},
) {
  assert.throws(() => validateConfig(raw, files, { origins }), (err) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.match(err.message, pattern);
    return true;
  }, JSON.stringify(raw));
}

Deno.test("validate: the longest timeout is what a timer can wait, 2147483 s", () => {
  assert.equal(MAX_TIMEOUT_SECONDS, 2147483);
  assert.equal(
    config({ ...SCRIPT, timeout: "2147483" }).timeoutMs,
    2147483000,
  );
  refused(
    { ...SCRIPT, timeout: "2147484" },
    /^--timeout must be at most 2147483, got "2147484"$/,
  );
});

Deno.test("validate: numbers are whole or decimal, at least their minimum, nothing around them", () => {
  assert.equal(config({ ...SCRIPT, timeout: "1.25" }).timeoutMs, 1250);
  assert.equal(config({ ...SCRIPT, timeout: "0.1" }).timeoutMs, 100);
  assert.equal(config({ ...SCRIPT, retries: "0" }).retries, 0);
  assert.equal(
    config({ ...SCRIPT, "min-speed-time": "1" }).minSpeedTimeMs,
    1000,
  );
  for (const bad of ["x5", "5x", "1.5x", "-1", "1e3", ".5"]) {
    refused(
      { ...SCRIPT, retries: bad },
      new RegExp(
        `^--retries must be a number >= 0, got "${bad.replace(".", "\\.")}"$`,
      ),
    );
  }
  refused({ ...SCRIPT, timeout: "0.09" }, /--timeout must be a number >= 0\.1/);
  refused({ ...SCRIPT, "min-speed-time": "0.5" }, /must be a number >= 1/);
});

Deno.test("validate: --min-speed is whole bytes per second up to 1 GiB/s", () => {
  assert.equal(
    config({ ...SCRIPT, "min-speed": String(2 ** 30) }).minSpeed,
    2 ** 30,
  );
  assert.equal(config({ ...SCRIPT, "min-speed": "0" }).minSpeed, 0);
  refused(
    { ...SCRIPT, "min-speed": String(2 ** 30 + 1) },
    /^--min-speed must be a whole number of bytes per second \(0 to 1073741824\), got "1073741825"$/,
  );
  refused({ ...SCRIPT, "min-speed": "1.5" }, /whole number/);
});

Deno.test("validate: choices are named in the message, two with 'or', more with commas", () => {
  refused(
    { "infra-env-id": ID, "ipxe-script-type": "x" },
    /^--ipxe-script-type must be discovery-image-always or boot-order-control, got "x"$/,
  );
  refused(
    { ...SCRIPT, progress: "x" },
    /^--progress must be auto, tty, lines or none, got "x"$/,
  );
  refused(
    { ...SCRIPT, "local-boot": "x" },
    /^--local-boot must be kexec, exit or reboot, got "x"$/,
  );
  const env = config({
    "infra-env-id": ID,
    "ipxe-script-type": "boot-order-control",
  });
  assert.equal(
    env.source.kind === "infraenv" && env.source.scriptType,
    "boot-order-control",
  );
  assert.equal(config(SCRIPT).progress, "auto");
  assert.equal(config({ ...SCRIPT, progress: "none" }).progress, "none");
  assert.equal(config(SCRIPT).localBoot, "kexec");
  assert.equal(config({ ...SCRIPT, "local-boot": "exit" }).localBoot, "exit");
});

Deno.test("validate: URLs by scheme, service URLs without user:password", () => {
  refused(
    { "infra-env-id": ID, "api-url": "ftp://h/api" },
    /^--api-url must be http or https, got "ftp"$/,
  );
  refused(
    { "ipxe-url": "gopher://h/x" },
    /^--ipxe-url must be http or https or file, got "gopher"$/,
  );
  assert.equal(
    config({ "ipxe-url": "file:///srv/boot.ipxe" }).source.kind,
    "ipxe-url",
  );
  for (const userinfo of ["user:pw@", ":pw@", "user@"]) {
    refused(
      { "infra-env-id": ID, "api-url": `https://${userinfo}h/api` },
      /^--api-url must not hold a user:password@/,
    );
  }
  const c = config({ "infra-env-id": ID, "api-url": "http://h/api//" });
  assert.equal(c.source.kind === "infraenv" && c.source.apiUrl, "http://h/api");
});

Deno.test("validate: per-image pins take URL=HEX over http, https or file", () => {
  const c = config({
    ...SCRIPT,
    "artifact-sha256": [
      `https://h/k?a=b=${HEX.toUpperCase()}`,
      `http://h/i=${HEX}`,
      `file:///srv/r=${HEX}`,
    ],
  });
  assert.deepEqual(c.artifactSha256, {
    "https://h/k?a=b": HEX,
    "http://h/i": HEX,
    "file:///srv/r": HEX,
  });
  refused(
    { ...SCRIPT, "artifact-sha256": [`ftp://h/k=${HEX}`] },
    /^--artifact-sha256 URL must be http or https or file, got "ftp"$/,
  );
  refused(
    { ...SCRIPT, "artifact-sha256": [`=${HEX}`] },
    new RegExp(`^--artifact-sha256 takes URL=HEX, got "=${HEX}"$`),
  );
  refused(
    { ...SCRIPT, "artifact-sha256": [`https://h/k=${HEX.slice(1)}`] },
    /^--artifact-sha256 digest must be 64 hexadecimal digits$/,
  );
});

Deno.test("validate: --set takes NAME=VALUE with a name", () => {
  assert.deepEqual(config({ ...SCRIPT, set: ["a=b=c", "e="] }).settings, {
    a: "b=c",
    e: "",
  });
  refused({ ...SCRIPT, set: ["=v"] }, /^--set takes NAME=VALUE, got "=v"$/);
  refused({ ...SCRIPT, set: ["v"] }, /^--set takes NAME=VALUE, got "v"$/);
});

Deno.test("validate: a MAC is six pairs with one kind of separator each, nothing after", () => {
  assert.equal(normalizeMac("52-54-00-AB-cd-EF"), "52:54:00:ab:cd:ef");
  assert.equal(
    config({ ...SCRIPT, mac: " 52:54:00:12:34:56 " }).mac,
    "52:54:00:12:34:56",
  );
  for (
    const bad of [
      "52:54:00:12:34:56:",
      "52:5400:12:34:56",
      "x52:54:00:12:34:56",
      "52:54:00:12:34",
      "525400123456",
    ]
  ) {
    assert.throws(
      () => normalizeMac(bad),
      (err: Error) =>
        err.message === `--mac must look like 52:54:00:12:34:56, got "${bad}"`,
      bad,
    );
  }
});

Deno.test("validate: an InfraEnv id is hex and dashes, quoted at most 80 characters", () => {
  const c = config({ "infra-env-id": ID.toUpperCase() });
  assert.equal(c.source.kind === "infraenv" && c.source.infraEnvId, ID);
  assert.deepEqual(c.source.kind === "infraenv" && c.source.auth, {
    kind: "none",
  });
  refused(
    { "infra-env-id": `zz${ID}` },
    /^InfraEnv id must be a UUID, got "zz/,
  );
  refused({ "infra-env-id": `${ID}!` }, /^InfraEnv id must be a UUID/);
  refused(
    { "infra-env-id": "g".repeat(200) },
    /^InfraEnv id must be a UUID, got "g{80}"$/,
  );
});

Deno.test("validate: the InfraEnv id from a file, trimmed; never from both places", () => {
  const c = config({ "infra-env-id-file": "/id" }, {
    "/id": { text: ` ${ID}\n` },
  });
  assert.equal(c.source.kind === "infraenv" && c.source.infraEnvId, ID);
  refused(
    { "infra-env-id": ID, "infra-env-id-file": "/id" },
    /^Give --infra-env-id or --infra-env-id-file, not both$/,
    { "/id": { text: ID } },
  );
  refused(
    { "infra-env-id-file": "/id" },
    /^Cannot read InfraEnv id file \/id: it was not read$/,
  );
  refused(
    { "infra-env-id-file": "/id" },
    /^Cannot read InfraEnv id file \/id: Permission denied$/,
    { "/id": { error: "Permission denied" } },
  );
  refused(
    { "infra-env-id-file": "/id" },
    /^InfraEnv id must be a UUID, got "nope"$/,
    { "/id": { text: "nope\n" } },
  );
});

Deno.test("validate: token files are named in their errors", () => {
  refused(
    { "infra-env-id": ID, "refresh-token-file": "/rt" },
    /^Refresh token file \/rt is empty$/,
    { "/rt": { text: " \n" } },
  );
  refused(
    { "infra-env-id": ID, "refresh-token-file": "/rt" },
    /^Cannot read refresh token file \/rt: it was not read$/,
  );
  refused(
    { "infra-env-id": ID, "token-file": "/t" },
    /^Token file \/t is empty$/,
    { "/t": { text: "" } },
  );
});

Deno.test("validate: kernel arguments are not empty; one with spaces comes back quoted", () => {
  refused(
    { ...SCRIPT, "append-karg": [" "] },
    /^--append-karg needs a non-empty argument$/,
  );
  refused(
    { ...SCRIPT, "delete-karg": [""] },
    /^--delete-karg needs a non-empty argument$/,
  );
  assert.deepEqual(
    config({ ...SCRIPT, "append-karg": ["foo=bar baz", "bar baz", "=a b"] })
      .appendKargs,
    // No name before the "=": the whole argument is the value.
    ['foo="bar baz"', '"bar baz"', '"=a b"'],
  );
});

Deno.test("validate: --ca-cert-url and --ca-cert-sha256 only together", () => {
  const pair = {
    "ca-cert-url": "https://h/ca.pem",
    "ca-cert-sha256": HEX.toUpperCase(),
  };
  assert.deepEqual(config({ ...SCRIPT, ...pair }).caCertUrl, {
    url: "https://h/ca.pem",
    sha256: HEX,
  });
  assert.equal(config(SCRIPT).caCertUrl, undefined);
  for (const alone of ["ca-cert-url", "ca-cert-sha256"] as const) {
    refused(
      { ...SCRIPT, [alone]: pair[alone] },
      /^--ca-cert-url and --ca-cert-sha256 go together: a fetched CA is trusted only with its digest$/,
    );
  }
});

Deno.test("validate: every switch reaches the configuration", () => {
  const off = config(SCRIPT);
  const on = config({
    ...SCRIPT,
    "no-host-settings": true,
    "no-kexec": true,
    "load-only": true,
    "force-reboot": true,
    "no-cache": true,
    "no-preflight": true,
    insecure: true,
    verbose: true,
  });
  const pick = (c: typeof off) => [
    c.hostSettings,
    c.mode,
    c.loadOnly,
    c.forceReboot,
    c.noCache,
    c.preflight,
    c.insecure,
    c.verbose,
  ];
  assert.deepEqual(pick(off), [
    true,
    "kexec",
    false,
    false,
    false,
    true,
    false,
    false,
  ]);
  assert.deepEqual(pick(on), [
    false,
    "no-kexec",
    true,
    true,
    true,
    false,
    true,
    true,
  ]);
  assert.equal(config({ ...SCRIPT, "print-plan": true }).mode, "print-plan");
  // Filled in by the layers, not by the values.
  assert.equal(off.hostCmdline, "");
  assert.equal(off.meminfoFile, "/proc/meminfo");
});

Deno.test("validate: --busy-timeout in seconds, 15 minutes by default, 0 to turn it off", () => {
  assert.equal(config(SCRIPT).busyTimeoutMs, 15 * 60 * 1000);
  assert.equal(config({ ...SCRIPT, "busy-timeout": "2" }).busyTimeoutMs, 2000);
  assert.equal(config({ ...SCRIPT, "busy-timeout": "0" }).busyTimeoutMs, 0);
});

Deno.test("validate: values are trimmed, and errors name where a value was set", () => {
  const c = config({ "ipxe-url": "  http://h/boot.ipxe \n" });
  assert.equal(
    c.source.kind === "ipxe-url" && c.source.url,
    "http://h/boot.ipxe",
  );
  refused({ ...SCRIPT, retries: "x" }, /^--retries must be/);
  refused(
    { ...SCRIPT, retries: "x" },
    /^ASSISTED_RETRIES in \/etc\/assisted\.env must be a number/,
    {},
    { retries: "ASSISTED_RETRIES in /etc/assisted.env" },
  );
});
