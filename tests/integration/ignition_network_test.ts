/**
 * The disk image's network in the Ignition generator (ignition/network.ts):
 * NetworkManager keyfiles written 0600 where NetworkManager reads them, and
 * the unit's proxy in its environment file, which Debian's
 * `ignition-validate` accepts; bad keyfiles and proxies refused with one
 * line; and the download script run for real with that environment file:
 * its curl fetches the binary through a proxy on 127.0.0.1 and the
 * bootloader it starts sees the proxy variables.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { startProxy } from "../../dev/proxy.ts";
import { optionsFromArgs } from "../../ignition/generate_ignition.ts";
import {
  CONFIG_PATH,
  decodeDataUrl,
  DOWNLOAD_ENV_PATH,
  generateIgnition,
  type IgnitionConfig,
  type IgnitionOptions,
  renderIgnition,
  RUN_SCRIPT_PATH,
} from "../../ignition/mod.ts";
import {
  MAX_NM_CONNECTION_BYTES,
  NM_CONNECTIONS_DIR,
  readNmConnections,
} from "../../ignition/network.ts";
import { BootError } from "../../lib/errors.ts";
import { parseEnvFile } from "../../lib/config/mod.ts";
import { withTemp } from "../test_util.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STATIC = `[connection]
id=static-eth0
type=ethernet
interface-name=eth0

[ipv4]
method=manual
address1=192.0.2.10/24,192.0.2.1
dns=192.0.2.53;

[ipv6]
method=disabled
`;
const VLAN = `# VLAN 5 on eth0
[connection]
id=vlan5
type=vlan
interface-name=vlan5

[vlan]
id=5
parent=eth0

[ipv4]
method=auto
`;

function options(extra: Partial<IgnitionOptions> = {}): IgnitionOptions {
  return {
    bootloaderUrl: "https://example.com/assisted-bootloader",
    bootloaderSha256: SHA,
    ipxeUrl: "https://example.com/boot.ipxe",
    ...extra,
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

function usageError(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, 2);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  };
}

const PROXY = {
  httpProxy: "http://proxy.example.com:3128",
  httpsProxy: "http://user:secret@proxy.example.com:3128/",
  noProxy: ".example.com,10.0.0.0/8,[fd00::1],localhost:8080,*",
};

Deno.test("ignition: keyfiles written 0600 under system-connections, the proxy in the unit's environment file (both cases), accepted by ignition-validate", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/nm`);
    await Deno.writeTextFile(`${dir}/nm/20-vlan5.nmconnection`, VLAN);
    await Deno.writeTextFile(`${dir}/nm/10-static.nmconnection`, STATIC);
    const { options: parsed } = await optionsFromArgs([
      "--bootloader-url",
      "https://example.com/assisted-bootloader",
      "--bootloader-sha256",
      SHA,
      "--ipxe-url",
      "https://example.com/boot.ipxe",
      "--nm-connections",
      `${dir}/nm`,
    ], {
      TARGET_HTTP_PROXY: PROXY.httpProxy,
      TARGET_HTTPS_PROXY: PROXY.httpsProxy,
      TARGET_NO_PROXY: PROXY.noProxy,
      // The build machine's own proxy is not the image's.
      HTTP_PROXY: "http://build-machine-proxy:1",
      NO_PROXY: "build.local",
    });
    assert.deepEqual(parsed.proxy, PROXY);
    const config = await generateIgnition(parsed);
    assert.deepEqual(
      file(config, `${NM_CONNECTIONS_DIR}/10-static.nmconnection`),
      { mode: 0o600, text: STATIC },
    );
    assert.deepEqual(
      file(config, `${NM_CONNECTIONS_DIR}/20-vlan5.nmconnection`),
      { mode: 0o600, text: VLAN },
    );
    const env = file(config, DOWNLOAD_ENV_PATH);
    assert.equal(env.mode, 0o600);
    const vars = Object.fromEntries(parseEnvFile(env.text, DOWNLOAD_ENV_PATH));
    for (
      const [key, value] of [
        ["HTTP_PROXY", PROXY.httpProxy],
        ["HTTPS_PROXY", PROXY.httpsProxy],
        ["NO_PROXY", PROXY.noProxy],
      ]
    ) {
      assert.equal(vars[key], value, key);
      assert.equal(vars[key.toLowerCase()], value, key.toLowerCase());
    }
    assert.ok(!env.text.includes("build-machine-proxy"));
    assert.ok(!env.text.includes("build.local"));
    // Not in the bootloader's own config file.
    assert.ok(!file(config, CONFIG_PATH).text.includes("proxy.example.com"));

    const path = `${dir}/net.ign`;
    await Deno.writeTextFile(path, await renderIgnition(parsed));
    const out = await new Deno.Command("ignition-validate", {
      args: [path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.equal(text.trim(), "", "no warnings");
  });
});

Deno.test("ignition: bad keyfiles and proxies are refused with one line", async () => {
  const nm = (name: string, contents: string) =>
    generateIgnition(options({ nmConnections: [{ name, contents }] }));
  const cases: [() => Promise<unknown>, RegExp][] = [
    [() => nm("eth0.conf", STATIC), /"eth0\.conf" is not a keyfile name/],
    [() => nm("../x.nmconnection", STATIC), /is not a keyfile name/],
    [() => nm("a b.nmconnection", STATIC), /is not a keyfile name/],
    [
      () => nm("a.nmconnection", "[ipv4]\nmethod=auto\n"),
      /NM_CONNECTIONS: a\.nmconnection has no \[connection\] section/,
    ],
    [
      () => nm("a.nmconnection", "id=x\n[connection]\n"),
      /a\.nmconnection line 1 comes before any \[section\]/,
    ],
    [
      () => nm("a.nmconnection", "[connection]\njust words\n"),
      /a\.nmconnection line 2 is not key=value, a \[section\] or a comment/,
    ],
    [
      () => nm("a.nmconnection", "[connection\nid=x\n"),
      /line 1 is not a \[section\] header/,
    ],
    [
      () => nm("a.nmconnection", "[connection]\nid=a\u0001b\n"),
      /line 2 has a control character/,
    ],
    [
      () =>
        nm(
          "a.nmconnection",
          "[connection]\n" + "#".repeat(MAX_NM_CONNECTION_BYTES),
        ),
      /a\.nmconnection has \d+ bytes, more than 65536/,
    ],
    [
      () =>
        generateIgnition(options({
          nmConnections: [{ name: "a.nmconnection", contents: STATIC }, {
            name: "a.nmconnection",
            contents: STATIC,
          }],
        })),
      /a\.nmconnection is given twice/,
    ],
    [
      () => generateIgnition(options({ proxy: { httpProxy: "ftp://p:21" } })),
      /TARGET_HTTP_PROXY must be http or https, got "ftp"/,
    ],
    [
      () =>
        generateIgnition(options({
          proxy: { httpsProxy: "http://p:3128/path" },
        })),
      /TARGET_HTTPS_PROXY must be a proxy's address only \(no path, query or fragment\)/,
    ],
    [
      () => generateIgnition(options({ proxy: { httpProxy: "proxy:3128" } })),
      /TARGET_HTTP_PROXY must be http or https|TARGET_HTTP_PROXY is not a valid URL/,
    ],
    [
      () =>
        generateIgnition(options({ proxy: { noProxy: "a.example.com,,b" } })),
      /TARGET_NO_PROXY entry "" is not a host/,
    ],
    [
      () =>
        generateIgnition(options({ proxy: { noProxy: "a.example.com b" } })),
      /TARGET_NO_PROXY entry "a\.example\.com b" is not a host/,
    ],
  ];
  for (const [make, pattern] of cases) {
    await assert.rejects(make(), usageError(pattern), String(pattern));
  }
  await withTemp(async (dir) => {
    await assert.rejects(
      readNmConnections(`${dir}/none`),
      usageError(/Cannot read NM_CONNECTIONS .*\/none/),
    );
    await assert.rejects(
      readNmConnections(dir),
      usageError(/holds no \.nmconnection file/),
    );
    await Deno.writeTextFile(`${dir}/a.nmconnection`, STATIC);
    await Deno.writeTextFile(`${dir}/README`, "notes");
    await assert.rejects(
      readNmConnections(dir),
      usageError(/\/README is not a \.nmconnection file/),
    );
    await Deno.remove(`${dir}/README`);
    await Deno.writeFile(
      `${dir}/b.nmconnection`,
      new Uint8Array([0x5b, 0xff, 0x5d]),
    );
    await assert.rejects(
      readNmConnections(dir),
      usageError(/b\.nmconnection is not UTF-8 text/),
    );
  });
});

Deno.test("ignition: the download script's curl goes through the unit's proxy, and the bootloader it starts sees the proxy variables", async () => {
  await withTemp(async (dir) => {
    const binary = new TextEncoder().encode(
      '#!/bin/sh\nenv | grep -i proxy | sort > "$MARKER"\n',
    );
    const sha = createHash("sha256").update(binary).digest("hex");
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response(binary),
    );
    // bootloader.test resolves nowhere: only the proxy knows it.
    const proxy = await startProxy({
      targets: { "bootloader.test:80": server.addr.port },
    });
    try {
      const proxyUrl = `http://user:secret@127.0.0.1:${proxy.port}`;
      const config = await generateIgnition({
        bootloaderUrl: "http://bootloader.test/assisted-bootloader",
        bootloaderSha256: sha,
        ipxeUrl: "https://example.com/boot.ipxe",
        proxy: {
          httpProxy: proxyUrl,
          httpsProxy: proxyUrl,
          noProxy: "example.net",
        },
      });
      for (const f of config.storage.files) {
        const path = dir + f.path;
        await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), {
          recursive: true,
        });
        await Deno.writeFile(path, decodeDataUrl(f.contents.source), {
          mode: f.mode,
        });
      }
      // The unit's environment: download.env as systemd reads it.
      const unitEnv = Object.fromEntries(
        parseEnvFile(
          await Deno.readTextFile(dir + DOWNLOAD_ENV_PATH),
          DOWNLOAD_ENV_PATH,
        ),
      );
      const marker = `${dir}/marker`;
      const out = await new Deno.Command(dir + RUN_SCRIPT_PATH, {
        clearEnv: true,
        env: {
          PATH: "/usr/bin:/bin",
          ...unitEnv,
          BOOTLOADER_BIN: `${dir}/usr/local/bin/assisted-bootloader`,
          BOOTLOADER_CONFIG: dir + CONFIG_PATH,
          STATE_DIRECTORY: `${dir}/var/lib/assisted-bootloader`,
          MARKER: marker,
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) +
        new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, text);
      assert.deepEqual(
        proxy.requests.map((r) => `${r.method} ${r.target} ${r.refused}`),
        ["GET http://bootloader.test/assisted-bootloader 0"],
      );
      assert.match(
        text,
        new RegExp(
          `assisted-bootloader-run: HTTP_PROXY=http://\\*\\*\\*@127\\.0\\.0\\.1:${proxy.port}\n`,
        ),
      );
      assert.ok(!text.includes("secret"), "the password was logged");
      assert.deepEqual(
        (await Deno.readTextFile(marker)).trim().split("\n"),
        [
          `HTTPS_PROXY=${proxyUrl}`,
          `HTTP_PROXY=${proxyUrl}`,
          "NO_PROXY=example.net",
          `http_proxy=${proxyUrl}`,
          `https_proxy=${proxyUrl}`,
          "no_proxy=example.net",
        ],
      );
    } finally {
      await proxy.close();
      await server.shutdown();
    }
  });
});

Deno.test("make generate-ignition passes NM_CONNECTIONS and TARGET_*_PROXY through", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/nm`);
    await Deno.writeTextFile(`${dir}/nm/a.nmconnection`, STATIC);
    const out = `${dir}/a.ign`;
    const r = await new Deno.Command("make", {
      args: [
        "-s",
        "-C",
        ROOT,
        "generate-ignition",
        "BOOTLOADER_URL=https://example.com/bl",
        `BOOTLOADER_SHA256=${SHA}`,
        "IPXE_URL=https://example.com/boot.ipxe",
        `NM_CONNECTIONS=${dir}/nm`,
        "TARGET_HTTPS_PROXY=http://proxy.example.com:3128",
        "TARGET_NO_PROXY=.example.com",
        `IGNITION_OUT=${out}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    const config = JSON.parse(await Deno.readTextFile(out)) as IgnitionConfig;
    assert.equal(
      file(config, `${NM_CONNECTIONS_DIR}/a.nmconnection`).text,
      STATIC,
    );
    assert.match(
      file(config, DOWNLOAD_ENV_PATH).text,
      /^https_proxy="http:\/\/proxy\.example\.com:3128"$/m,
    );
  });
});
