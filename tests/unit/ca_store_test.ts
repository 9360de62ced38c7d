/**
 * The system trust store as the bootloader reads it (where it looks, what it
 * keeps) and the `--ca-cert-url`/`--ca-cert-sha256` options.
 */
import assert from "node:assert/strict";
import {
  readSystemStore,
  splitPem,
  SYSTEM_CA_FILES,
  usableCertificates,
} from "../../lib/http/ca_store.ts";
import { parseConfig } from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { captureLog } from "../test_util.ts";

function pem(name: string): string {
  return `-----BEGIN CERTIFICATE-----\n${
    btoa(name)
  }\n-----END CERTIFICATE-----\n`;
}

function fs(
  files: Record<string, string>,
  dirs: Record<string, string[]> = {},
) {
  return {
    readTextFile: (path: string) => {
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(path);
    },
    readDir: (path: string) => {
      if (path in dirs) return dirs[path];
      throw new Deno.errors.NotFound(path);
    },
  };
}

Deno.test("ca_store: splitPem keeps every certificate and nothing else", () => {
  const text = `junk\n${
    pem("a")
  }# comment\n-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n${
    pem("b").replaceAll("\n", "\r\n")
  }`;
  const certs = splitPem(text);
  assert.equal(certs.length, 2);
  assert.equal(certs[0], pem("a"));
  assert.match(
    certs[1],
    /^-----BEGIN CERTIFICATE-----\r\n.*-----END CERTIFICATE-----\n$/s,
  );
  assert.deepEqual(splitPem("no certificate here"), []);
});

Deno.test("ca_store: the first well-known bundle found is read, the next ones are not", () => {
  const [debian, fedora] = SYSTEM_CA_FILES;
  assert.equal(debian, "/etc/ssl/certs/ca-certificates.crt");
  assert.equal(fedora, "/etc/pki/tls/certs/ca-bundle.crt");
  const both = readSystemStore({
    env: {},
    ...fs({ [debian]: pem("deb1") + pem("deb2"), [fedora]: pem("fed") }),
  });
  assert.deepEqual(both.sources, [debian]);
  assert.deepEqual(both.certificates, [pem("deb1"), pem("deb2")]);
  // Fedora CoreOS: only the pki bundle exists.
  const fcos = readSystemStore({ env: {}, ...fs({ [fedora]: pem("fed") }) });
  assert.deepEqual(fcos, { sources: [fedora], certificates: [pem("fed")] });
  // Nothing at all: an empty store, not an error.
  assert.deepEqual(readSystemStore({ env: {}, ...fs({}) }), {
    sources: [],
    certificates: [],
  });
});

Deno.test("ca_store: SSL_CERT_FILE replaces the well-known bundles, SSL_CERT_DIR adds to them", async () => {
  const [debian] = SYSTEM_CA_FILES;
  const files = {
    [debian]: pem("system"),
    "/custom.pem": pem("custom"),
    "/d1/b.pem": pem("d1b"),
    "/d1/a.crt": pem("d1a"),
    "/d1/README": "not a certificate",
    "/d2/c.pem": pem("d2c"),
  };
  const dirs = { "/d1": ["b.pem", "README", "a.crt"], "/d2": ["c.pem"] };
  const custom = readSystemStore({
    env: { SSL_CERT_FILE: "/custom.pem" },
    ...fs(files, dirs),
  });
  assert.deepEqual(custom, {
    sources: ["/custom.pem"],
    certificates: [pem("custom")],
  });
  const withDirs = readSystemStore({
    env: { SSL_CERT_DIR: "/d1::/d2" },
    ...fs(files, dirs),
  });
  assert.deepEqual(withDirs.sources, [debian, "/d1", "/d2"]);
  assert.deepEqual(withDirs.certificates, [
    pem("system"),
    pem("d1a"),
    pem("d1b"),
    pem("d2c"),
  ]);
  // A variable naming what is not there is said, not fatal.
  const [store, lines] = await captureLog(() =>
    Promise.resolve(readSystemStore({
      env: { SSL_CERT_FILE: "/missing.pem", SSL_CERT_DIR: "/nodir" },
      ...fs(files, dirs),
    }))
  );
  assert.deepEqual(store, { sources: [], certificates: [] });
  assert.ok(
    lines.some((l) =>
      /warn: SSL_CERT_FILE=\/missing\.pem cannot be read/.test(l)
    ),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) =>
      /warn: SSL_CERT_DIR entry \/nodir cannot be read/.test(l)
    ),
  );
});

Deno.test("ca_store: one unparsable certificate is left out, the others kept", () => {
  const certs = [pem("good1"), pem("bad"), pem("good2")];
  let calls = 0;
  const check = (set: string[]) => {
    calls++;
    if (set.includes(pem("bad"))) throw new TypeError("BadEncoding");
  };
  assert.deepEqual(usableCertificates(certs, check), {
    usable: [pem("good1"), pem("good2")],
    rejected: 1,
  });
  calls = 0;
  assert.deepEqual(usableCertificates([pem("good1")], check), {
    usable: [pem("good1")],
    rejected: 0,
  });
  assert.equal(calls, 1, "a usable set is checked once");
  // With Deno's own TLS stack: garbage between the markers is rejected.
  assert.deepEqual(usableCertificates([pem("garbage")]).rejected, 1);
});

// ---- --ca-cert-url / --ca-cert-sha256 ----

const SHA = "ab".repeat(32);
const sources = { env: {}, cmdline: "", readTextFile: () => "" };

function config(argv: string[], cmdline = "") {
  const r = parseConfig(["--ipxe-url", "http://h/boot.ipxe", ...argv], {
    ...sources,
    cmdline,
  });
  assert.equal(r.kind, "run");
  return (r as Extract<typeof r, { kind: "run" }>).config;
}

function usage(argv: string[], pattern: RegExp) {
  assert.throws(
    () => parseConfig(["--ipxe-url", "http://h/boot.ipxe", ...argv], sources),
    (err: unknown) => {
      assert.ok(err instanceof BootError, String(err));
      assert.equal(err.exitCode, ExitCode.Usage);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

Deno.test("config: --ca-cert-url takes its sha256, from flags or the kernel command line", () => {
  assert.equal(config([]).caCertUrl, undefined);
  assert.deepEqual(
    config([
      "--ca-cert-url",
      "http://10.0.2.100/ca.pem",
      "--ca-cert-sha256",
      SHA.toUpperCase(),
    ])
      .caCertUrl,
    { url: "http://10.0.2.100/ca.pem", sha256: SHA },
  );
  assert.deepEqual(
    config(
      [],
      `quiet assisted.ca_cert_url=https://h/ca.pem assisted.ca_cert_sha256=${SHA}`,
    )
      .caCertUrl,
    { url: "https://h/ca.pem", sha256: SHA },
  );
  usage(
    ["--ca-cert-url", "http://h/ca.pem"],
    /--ca-cert-url and --ca-cert-sha256 go together/,
  );
  usage(["--ca-cert-sha256", SHA], /go together/);
  usage(
    ["--ca-cert-url", "http://h/ca.pem", "--ca-cert-sha256", "abc"],
    /--ca-cert-sha256 must be 64 hexadecimal digits/,
  );
  usage(
    ["--ca-cert-url", "file:///etc/ca.pem", "--ca-cert-sha256", SHA],
    /--ca-cert-url must be http or https, got "file"/,
  );
});
