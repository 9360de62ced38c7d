/**
 * The bootloader trusts the system store by itself: a hub whose CA is only in
 * the "system store" (a bundle named by `SSL_CERT_FILE`, the real store is
 * never touched) is reached by `main.ts` with `DENO_TLS_CA_STORE` unset, a CA
 * in no store is still refused, and a CA fetched with `--ca-cert-url` is
 * trusted only when its sha256 matches, from flags or the kernel command line.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fetchCaCert } from "../../lib/http/ca_cert_url.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { createClient } from "../../lib/http/client.ts";
import { makeTestCerts, withTemp } from "../test_util.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `main.ts` with exactly `env` (plus PATH, HOME, DENO_DIR): nothing set by the caller leaks in. */
async function cli(args: string[], env: Record<string, string>): Promise<Run> {
  const full: Record<string, string> = {
    ASSISTED_CONFIG: "/dev/null",
    ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
    DENO_NO_UPDATE_CHECK: "1",
    NO_COLOR: "1",
    ...env,
  };
  for (const name of ["PATH", "HOME", "DENO_DIR", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) full[name] ??= value;
  }
  assert.equal(full.DENO_TLS_CA_STORE, undefined);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--no-host-settings", "--retries", "0", ...args],
    env: full,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function assertFailed(r: Run, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, show(r));
  const last = r.stderr.trim().split("\n").at(-1) ?? "";
  assert.match(last, /^assisted-bootloader: error: /, show(r));
  assert.match(last, pattern, show(r));
  assert.ok(!/^\s+at /m.test(r.stderr), `no stack trace\n${show(r)}`);
}

interface Env {
  dir: string;
  /** The iPXE script over https, signed by `dir/ca.pem`. */
  scriptUrl: string;
  /** Plain http origin serving `/ca.pem` and `/other.pem`. */
  plain: string;
  /** sha256 of ca.pem. */
  caSha: string;
  /** A bundle like the system's, without the test CA (the real one plus another CA). */
  storeWithout: string;
  /** The same bundle with the test CA. */
  storeWith: string;
}

async function withEnv(fn: (env: Env) => Promise<void>): Promise<void> {
  await withTemp(async (dir) => {
    await makeTestCerts(dir);
    await Deno.mkdir(`${dir}/other`);
    await makeTestCerts(`${dir}/other`);
    const ca = await Deno.readTextFile(`${dir}/ca.pem`);
    const other = await Deno.readTextFile(`${dir}/other/ca.pem`);
    let system = "";
    try {
      system = await Deno.readTextFile("/etc/ssl/certs/ca-certificates.crt");
    } catch {
      // no system bundle on this machine: the test CAs alone
    }
    await Deno.writeTextFile(`${dir}/store-without.pem`, system + other);
    await Deno.writeTextFile(`${dir}/store-with.pem`, system + other + ca);
    const tls = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      cert: await Deno.readTextFile(`${dir}/leaf.pem`),
      key: await Deno.readTextFile(`${dir}/leaf.key`),
    }, (req) => {
      const base = new URL(req.url).origin;
      return new Response(
        `#!ipxe\nkernel ${base}/k console=ttyS0\ninitrd ${base}/i.img\nboot\n`,
      );
    });
    const plain = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => {
        const path = new URL(req.url).pathname;
        if (path === "/ca.pem") return new Response(ca);
        if (path === "/other.pem") return new Response(other);
        return new Response("not found", { status: 404 });
      },
    );
    try {
      await fn({
        dir,
        scriptUrl: `https://127.0.0.1:${tls.addr.port}/boot.ipxe`,
        plain: `http://127.0.0.1:${plain.addr.port}`,
        caSha: createHash("sha256").update(ca).digest("hex"),
        storeWithout: `${dir}/store-without.pem`,
        storeWith: `${dir}/store-with.pem`,
      });
    } finally {
      await tls.shutdown();
      await plain.shutdown();
    }
  });
}

Deno.test("trust store: a CA only in the system store is trusted without DENO_TLS_CA_STORE; one in no store is refused", async () => {
  await withEnv(async (env) => {
    const ok = await cli(["--ipxe-url", env.scriptUrl, "--print-plan"], {
      SSL_CERT_FILE: env.storeWith,
    });
    assert.equal(ok.code, 0, show(ok));
    assert.match(
      JSON.parse(ok.stdout).kernel.url,
      /^https:\/\/127\.0\.0\.1:\d+\/k$/,
    );
    // The same through a directory of PEM files (SSL_CERT_DIR), as OpenSSL reads it.
    await Deno.mkdir(`${env.dir}/certs`);
    await Deno.copyFile(`${env.dir}/ca.pem`, `${env.dir}/certs/hub-ca.pem`);
    const dir = await cli(["--ipxe-url", env.scriptUrl, "--print-plan"], {
      SSL_CERT_FILE: env.storeWithout,
      SSL_CERT_DIR: `${env.dir}/certs`,
    });
    assert.equal(dir.code, 0, show(dir));
    // Not in the store: refused, with the exit code of a failed script fetch.
    const refused = await cli(["--ipxe-url", env.scriptUrl, "--print-plan"], {
      SSL_CERT_FILE: env.storeWithout,
    });
    assertFailed(refused, ExitCode.Api, /certificate|UnknownIssuer/i);
  });
});

Deno.test("--ca-cert-url: the fetched CA is trusted when its sha256 matches, from flags or the kernel command line", async () => {
  await withEnv(async (env) => {
    const empty = { SSL_CERT_FILE: env.storeWithout };
    const url = `${env.plain}/ca.pem`;
    const ok = await cli([
      "--ipxe-url",
      env.scriptUrl,
      "--print-plan",
      "--ca-cert-url",
      url,
      "--ca-cert-sha256",
      env.caSha,
    ], empty);
    assert.equal(ok.code, 0, show(ok));
    assert.match(
      ok.stderr,
      /trusting 1 CA certificate\(s\) from http:\/\/127\.0\.0\.1:\d+\/ca\.pem/,
    );
    // The initramfs way: assisted.* parameters on the kernel command line.
    const cmdline = `${env.dir}/cmdline`;
    await Deno.writeTextFile(
      cmdline,
      `console=ttyS0 assisted.ipxe_url=${env.scriptUrl} assisted.ca_cert_url=${url} assisted.ca_cert_sha256=${env.caSha}\n`,
    );
    const kernel = await cli(["--print-plan"], {
      ...empty,
      ASSISTED_KERNEL_CMDLINE_FILE: cmdline,
    });
    assert.equal(kernel.code, 0, show(kernel));
    // Another CA's bytes under the same digest: not trusted, and nothing else is fetched.
    const mismatch = await cli([
      "--ipxe-url",
      env.scriptUrl,
      "--print-plan",
      "--ca-cert-url",
      `${env.plain}/other.pem`,
      "--ca-cert-sha256",
      env.caSha,
    ], empty);
    assertFailed(
      mismatch,
      ExitCode.Verify,
      /The CA certificate http:\/\/127\.0\.0\.1:\d+\/other\.pem has sha256 [0-9a-f]{64}, not [0-9a-f]{64} \(--ca-cert-sha256\): not trusted/,
    );
    assert.ok(
      !mismatch.stderr.includes("fetching the iPXE script"),
      show(mismatch),
    );
    const missing = await cli([
      "--ipxe-url",
      env.scriptUrl,
      "--print-plan",
      "--ca-cert-url",
      `${env.plain}/nothing.pem`,
      "--ca-cert-sha256",
      env.caSha,
    ], empty);
    assertFailed(
      missing,
      ExitCode.Download,
      /Cannot download the CA certificate .*HTTP 404/,
    );
    const alone = await cli([
      "--ipxe-url",
      env.scriptUrl,
      "--print-plan",
      "--ca-cert-url",
      url,
    ], empty);
    assertFailed(
      alone,
      ExitCode.Usage,
      /--ca-cert-url and --ca-cert-sha256 go together/,
    );
  });
});

Deno.test("fetchCaCert: not PEM, or PEM the TLS stack cannot parse, is a verification error", async () => {
  const bodies: Record<string, string> = {
    "/html": "<html>login</html>",
    "/garbage":
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(bodies[new URL(req.url).pathname]),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  const sha = (s: string) => createHash("sha256").update(s).digest("hex");
  try {
    for (
      const [path, pattern] of [
        ["/html", /holds no PEM certificate/],
        ["/garbage", /holds a certificate that cannot be parsed/],
      ] as const
    ) {
      await assert.rejects(
        fetchCaCert(`${base}${path}`, sha(bodies[path]), { retries: 0 }),
        (err: unknown) => {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Verify);
          assert.match(err.message, pattern);
          return true;
        },
      );
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("createClient: a --ca-cert file with a certificate the TLS stack cannot parse is a usage error", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/bad.pem`,
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    assert.throws(
      () => createClient({ caCertFiles: [`${dir}/bad.pem`], systemCerts: [] }),
      (err: unknown) =>
        err instanceof BootError && err.exitCode === ExitCode.Usage &&
        /bad\.pem holds a certificate that cannot be parsed/.test(err.message),
    );
  });
});

Deno.test("createClient: a --ca-cert file another user can change is refused unread (exit 2), however good its certificate; the same file 0644 is trusted", async () => {
  await withTemp(async (tmp) => {
    const dir = await Deno.realPath(tmp);
    await makeTestCerts(dir);
    const ca = `${dir}/ca.pem`;
    for (const mode of [0o666, 0o664]) {
      await Deno.chmod(ca, mode);
      assert.throws(
        () => createClient({ caCertFiles: [ca], systemCerts: [] }),
        (err: unknown) => {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Usage);
          assert.equal(
            err.message,
            `CA certificate ${ca} is writable by other users (mode 0${
              mode.toString(8)
            }): whoever can change it decides what this machine boots (chmod go-w ${ca})`,
          );
          return true;
        },
      );
    }
    await Deno.chmod(ca, 0o644);
    createClient({ caCertFiles: [ca], systemCerts: [] })!.close();
  });
});
