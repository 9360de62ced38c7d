/**
 * The configuration's steps: which layer wins for every pair of layers, a
 * list taken whole from one layer, every byte read through the injected
 * sources (/proc/cmdline and the default config file included), and a
 * validation that neither reads nor registers anything.
 */

import assert from "node:assert/strict";
import {
  type ConfigSources,
  DEFAULT_CONFIG_FILE,
  mergeLayers,
  parseConfig,
  readConfig,
  readFlags,
  readLayers,
  validateConfig,
} from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { readKernelCmdline, readNamedFiles } from "../../lib/config/layers.ts";
import { redact } from "../../lib/log.ts";
import type { UntrustedPart } from "../../lib/path_trust.ts";

const ID = "6f2a3c1e-8d4b-4e7a-9c1f-2b3d4e5f6a7b";

/** Sources with the given files (no other user controls any); every path read is recorded. */
function sources(
  files: Record<string, string>,
  extra: ConfigSources = {},
): ConfigSources & { reads: string[] } {
  const reads: string[] = [];
  return {
    env: {},
    readTextFile: (path) => {
      reads.push(path);
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(path);
    },
    fileMode: () => 0o100600,
    untrustedPart: () => undefined,
    ...extra,
    reads,
  };
}

function config(argv: string[], s: ConfigSources) {
  const r = readConfig(argv, s);
  assert.equal(r.kind, "run");
  return (r as Extract<typeof r, { kind: "run" }>).config;
}

Deno.test("config layers: the environment beats the config file when no flag sets the option", () => {
  const s = sources({
    "/cfg":
      `ASSISTED_IPXE_URL=http://file/x\nASSISTED_WORK_DIR=/from-file\nASSISTED_RETRIES=7\n`,
  }, {
    env: { ASSISTED_CONFIG: "/cfg", ASSISTED_WORK_DIR: "/from-env" },
    cmdline: "",
  });
  const c = config([], s);
  assert.equal(c.workDir, "/from-env", "env beats file");
  assert.equal(c.retries, 7, "the file still sets what env does not");
  assert.deepEqual(c.source, { kind: "ipxe-url", url: "http://file/x" });
});

Deno.test("config layers: the config file beats the kernel command line", () => {
  const s = sources({
    [DEFAULT_CONFIG_FILE]:
      "ASSISTED_WORK_DIR=/from-file\nASSISTED_INSECURE=0\n",
  }, {
    cmdline:
      "ro assisted.ipxe_url=http://cmdline/x assisted.work_dir=/from-cmdline assisted.insecure",
  });
  const c = config([], s);
  assert.equal(c.workDir, "/from-file", "file beats cmdline");
  assert.equal(c.insecure, false, "a false boolean in the file still wins");
  assert.deepEqual(c.source, { kind: "ipxe-url", url: "http://cmdline/x" });
});

Deno.test("config layers: a list option is taken whole from one layer, never merged across layers", () => {
  const s = sources({
    "/cfg":
      "ASSISTED_IPXE_URL=http://h/x\nASSISTED_SET='a=file b=file'\nASSISTED_CA_CERT=/file.pem\n",
  }, {
    env: {
      ASSISTED_CONFIG: "/cfg",
      ASSISTED_APPEND_KARG: "env1 env2",
      ASSISTED_CA_CERT: "/env.pem",
    },
    cmdline:
      "assisted.append_karg=cmd1 assisted.set=c=cmdline assisted.delete_karg=quiet assisted.delete_karg=splash",
  });
  const c = config(["--ca-cert", "/flag.pem"], s);
  assert.deepEqual(c.caCerts, ["/flag.pem"], "flag over env and file");
  assert.deepEqual(c.appendKargs, ["env1", "env2"], "env over cmdline");
  assert.deepEqual(c.settings, { a: "file", b: "file" }, "file over cmdline");
  assert.deepEqual(
    c.deleteKargs,
    ["quiet", "splash"],
    "the cmdline's repeats make the list when nothing else sets it",
  );
});

Deno.test("config layers: each layer is read apart, and merging takes the first that sets an option", () => {
  const s = sources({ "/cfg": "ASSISTED_RETRIES=7\nASSISTED_TIMEOUT=9\n" }, {
    env: { ASSISTED_CONFIG: "/cfg", ASSISTED_RETRIES: "3" },
    cmdline: "assisted.timeout=1 assisted.progress=none",
  });
  const layers = readLayers(readFlags(["--retries", "2"]), s, () => {});
  assert.deepEqual({ ...layers.flags }, { retries: "2" });
  assert.deepEqual(layers.env, { config: "/cfg", retries: "3" });
  assert.deepEqual(layers.file, { retries: "7", timeout: "9" });
  assert.deepEqual(layers.cmdline, { timeout: "1", progress: "none" });
  assert.deepEqual(mergeLayers(layers), {
    retries: "2",
    config: "/cfg",
    timeout: "9",
    progress: "none",
  });
});

Deno.test("config layers: /proc/cmdline and the default config file are read through the injected sources", () => {
  const s = sources({
    "/proc/cmdline": "BOOT_IMAGE=/vmlinuz assisted.ipxe_url=http://proc/x\n",
    [DEFAULT_CONFIG_FILE]: "ASSISTED_RETRIES=4\n",
  });
  const c = config([], s);
  assert.deepEqual(c.source, { kind: "ipxe-url", url: "http://proc/x" });
  assert.equal(c.retries, 4);
  assert.deepEqual(s.reads.sort(), [DEFAULT_CONFIG_FILE, "/proc/cmdline"]);

  // ASSISTED_KERNEL_CMDLINE_FILE names another file, read the same way.
  const other = sources(
    { "/tmp/cmdline": "assisted.ipxe_url=http://other/x" },
    {
      env: { ASSISTED_KERNEL_CMDLINE_FILE: "/tmp/cmdline" },
    },
  );
  assert.deepEqual(config([], other).source, {
    kind: "ipxe-url",
    url: "http://other/x",
  });
  assert.ok(other.reads.includes("/tmp/cmdline"));
  assert.ok(!other.reads.includes("/proc/cmdline"));

  // Files the options name come through the same function.
  const named = sources({ "/id": ID + "\n", "/tok": "token-value-123456\n" }, {
    cmdline: "",
  });
  const n = config(
    ["--infra-env-id-file", "/id", "--token-file", "/tok"],
    named,
  );
  assert.equal(n.source.kind === "infraenv" && n.source.infraEnvId, ID);
  assert.deepEqual(named.reads.sort(), [DEFAULT_CONFIG_FILE, "/id", "/tok"]);
});

Deno.test({
  name:
    "config validation is pure: no permission at all, and secrets are returned, not registered",
  permissions: "none",
  fn() {
    const token = "pure-validation-token-" + crypto.randomUUID();
    const { config: c, secrets } = validateConfig({
      "infra-env-id": ID,
      "token-file": "/t",
    }, { "/t": { text: token + "\n", mode: 0o100600 } });
    assert.deepEqual(c.source.kind === "infraenv" && c.source.auth, {
      kind: "token",
      token,
    });
    assert.deepEqual(secrets, [token]);
    assert.ok(redact(`x ${token}`).includes(token), "not registered");
    // A named file that could not be read is reported by validation, with the reader's reason.
    assert.throws(
      () =>
        validateConfig({ "infra-env-id": ID, "token-file": "/t" }, {
          "/t": { error: "permission denied" },
        }),
      /Cannot read token file \/t: permission denied/,
    );
  },
});

Deno.test("config: readConfig returns secrets and warnings to its caller, parseConfig registers and logs them", () => {
  const token = "returned-token-" + crypto.randomUUID();
  const s = sources({ "/t": token }, { cmdline: "assisted.typo=1" });
  const warnings: string[] = [];
  const r = readConfig(["--infra-env-id", ID, "--token-file", "/t"], {
    ...s,
    warn: (m) => warnings.push(m),
  });
  assert.equal(r.kind === "run" && r.secrets[0], token);
  assert.deepEqual(warnings, [
    "ignoring unknown kernel command line parameter assisted.typo",
  ]);
  assert.ok(redact(token).includes(token), "readConfig registers nothing");
  parseConfig(["--infra-env-id", ID, "--token-file", "/t"], {
    ...s,
    cmdline: "",
  });
  assert.equal(redact(token), "REDACTED", "parseConfig registers the token");
});

const PIN = "ab".repeat(32);
const OTHER = "cd".repeat(32);
const K = "http://h/k";

/** The usage error `readConfig` throws, its message matched. */
function refused(argv: string[], s: ConfigSources, pattern: RegExp): void {
  assert.throws(() => readConfig(argv, s), (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("config layers: an empty value is a usage error in every layer and for every kind, never a silent 'unset' that drops the pins below", () => {
  const file = `ASSISTED_IPXE_URL=${K}\nASSISTED_ARTIFACT_SHA256=${K}=${PIN}\n`;
  for (
    const [env, pattern] of [
      [
        { ASSISTED_ARTIFACT_SHA256: "" },
        /^Environment variable ASSISTED_ARTIFACT_SHA256 is empty/,
      ],
      [{ ASSISTED_ARTIFACT_SHA256: "  " }, /ASSISTED_ARTIFACT_SHA256 is empty/],
      [{ ASSISTED_KERNEL_SHA256: "" }, /ASSISTED_KERNEL_SHA256 is empty/],
      [{ ASSISTED_WORK_DIR: "" }, /ASSISTED_WORK_DIR is empty/],
      [{ ASSISTED_NO_CACHE: "" }, /ASSISTED_NO_CACHE is empty/],
    ] as const
  ) {
    refused(
      [],
      sources({ "/cfg": file }, { env: { ASSISTED_CONFIG: "/cfg", ...env } }),
      pattern,
    );
  }
  refused(
    [],
    sources({ "/cfg": `${file}ASSISTED_SET=\n` }, {
      env: { ASSISTED_CONFIG: "/cfg" },
    }),
    /^Config file \/cfg ASSISTED_SET is empty/,
  );
  refused(
    ["--ipxe-url", K],
    sources({}, { cmdline: "assisted.artifact_sha256= quiet" }),
    /^Kernel command line parameter assisted\.artifact_sha256 is empty/,
  );
  for (
    const flag of [
      "--work-dir",
      "--artifact-sha256",
      "--kernel-sha256",
      "--config",
    ]
  ) {
    refused(
      ["--ipxe-url", K, flag, ""],
      sources({}),
      new RegExp(`^${flag} is empty`),
    );
  }
  // Blanks are empty too, and so is one blank among a list flag's values.
  refused(
    ["--ipxe-url", K, "--work-dir", " \t"],
    sources({}),
    /^--work-dir is empty/,
  );
  refused(
    ["--ipxe-url", K, "--ca-cert", "/a", "--ca-cert", " "],
    sources({}),
    /^--ca-cert is empty/,
  );
  // The pins of the file stand when nothing above sets the option.
  const c = config(
    [],
    sources({ "/cfg": file }, { env: { ASSISTED_CONFIG: "/cfg" } }),
  );
  assert.deepEqual(c.artifactSha256, { [K]: PIN });
});

Deno.test("config layers: a config file key in any case is read; any other key is an error, with a hint when it looks like one of ours", () => {
  for (
    const key of [
      "assisted_kernel_sha256",
      "Assisted_Kernel_Sha256",
      "ASSISTED_kernel_SHA256",
    ]
  ) {
    const c = config(
      [],
      sources({ "/cfg": `ASSISTED_IPXE_URL=${K}\n${key}=${PIN}\n` }, {
        env: { ASSISTED_CONFIG: "/cfg" },
      }),
    );
    assert.equal(c.kernelSha256, PIN, key);
  }
  for (
    const [line, pattern] of [
      [
        `KERNEL_SHA256=${PIN}`,
        /^Config file \/cfg: unknown setting KERNEL_SHA256 \(did you mean ASSISTED_KERNEL_SHA256\?\)/,
      ],
      [`ASSISTED_KERNEL_SHA=${PIN}`, /unknown setting ASSISTED_KERNEL_SHA$/],
      [
        `ASISTED_INITRD_SHA256=${PIN}`,
        /unknown setting ASISTED_INITRD_SHA256 \(did you mean ASSISTED_INITRD_SHA256\?\)/,
      ],
      ["HTTP_PROXY=http://proxy:3128", /unknown setting HTTP_PROXY/],
      [
        `ASSISTED_KERNEL_SHA256=${PIN}\nassisted_kernel_sha256=${OTHER}`,
        /ASSISTED_KERNEL_SHA256 and config file \/cfg assisted_kernel_sha256 set the same option differently/,
      ],
    ] as const
  ) {
    refused(
      [],
      sources({ "/cfg": `ASSISTED_IPXE_URL=${K}\n${line}\n` }, {
        env: { ASSISTED_CONFIG: "/cfg" },
      }),
      pattern,
    );
  }
});

Deno.test("config layers: in the environment and on the kernel command line, a name that looks like ours is warned about, never silently ignored", () => {
  const warnings: string[] = [];
  const r = readConfig(["--ipxe-url", K], {
    ...sources({}),
    env: {
      KERNEL_SHA256: PIN,
      ASSISTED_KERNEL_SHA: PIN,
      assisted_initrd_sha256: PIN,
      PATH: "/bin",
      GITHUB_TOKEN: "x",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
    },
    cmdline:
      `quiet kernel_sha256=${PIN} assisted.ARTIFACT_SHA256=${K}=${OTHER} assisted.kernel_sha=${PIN}`,
    warn: (m) => warnings.push(m),
  });
  assert.equal(r.kind, "run");
  const c = (r as Extract<typeof r, { kind: "run" }>).config;
  assert.equal(c.initrdSha256, PIN, "lower case is read");
  assert.deepEqual(
    c.artifactSha256,
    { [K]: OTHER },
    "any case after assisted.",
  );
  assert.equal(c.kernelSha256, undefined);
  assert.deepEqual(warnings.sort(), [
    "ignoring environment variable ASSISTED_KERNEL_SHA: no such option",
    "ignoring environment variable KERNEL_SHA256: not read (did you mean ASSISTED_KERNEL_SHA256?)",
    "ignoring kernel command line parameter kernel_sha256: not read (did you mean assisted.kernel_sha256?)",
    "ignoring unknown kernel command line parameter assisted.kernel_sha",
  ]);
});

Deno.test("config layers: a bad value is named where it was set, not as its flag", () => {
  const cases: [ConfigSources, RegExp][] = [
    [
      { env: { ASSISTED_KERNEL_SHA256: "abc" } },
      /^Environment variable ASSISTED_KERNEL_SHA256 must be 64 hexadecimal digits$/,
    ],
    [
      { env: { ASSISTED_CONFIG: "/cfg" } },
      /^Config file \/cfg ASSISTED_RETRIES must be a number/,
    ],
    [
      { cmdline: "assisted.mac=zz" },
      /^Kernel command line parameter assisted\.mac must look like/,
    ],
  ];
  for (const [extra, pattern] of cases) {
    refused(
      ["--ipxe-url", K],
      sources({ "/cfg": "ASSISTED_RETRIES=many\n" }, extra),
      pattern,
    );
  }
  refused(
    ["--ipxe-url", K, "--kernel-sha256", "abc"],
    sources({}),
    /^--kernel-sha256 must be 64/,
  );
  // A flag is named as itself, even when a layer below sets the option too.
  refused(
    ["--ipxe-url", K, "--retries", "many"],
    sources({}, { env: { ASSISTED_RETRIES: "5" } }),
    /^--retries must be a number/,
  );
});

Deno.test("readKernelCmdline: only assisted.* arguments, - or _ alike; the initramfs's own are not warned about; a bad value names its parameter", () => {
  const warnings: string[] = [];
  assert.deepEqual(
    {
      ...readKernelCmdline(
        "console=ttyS0 quiet xassisted.retries=9 assisted.no_kexec assisted.retries=3 assisted.proxy=http://p:3128 assisted.no_proxy=h assisted.on-failure=shell assisted.retry-delay=5 assisted.typo=1",
        (w) => warnings.push(w),
      ),
    },
    { "no-kexec": true, retries: "3" },
  );
  assert.deepEqual(warnings, [
    "ignoring unknown kernel command line parameter assisted.typo",
  ]);
  assert.throws(
    () => readKernelCmdline("assisted.no-kexec=maybe", () => {}),
    /^BootError: Kernel command line parameter assisted\.no-kexec must be a boolean/,
  );
});

Deno.test("config layers: an option repeated in one layer with the same value is read once; with another value it is refused, a list in a config file too", () => {
  const c = config(
    ["--ipxe-url", K],
    sources({ "/cfg": "ASSISTED_SET=a=1 b=2\nASSISTED_SET=a=1  b=2\n" }, {
      env: { ASSISTED_CONFIG: "/cfg" },
      cmdline:
        "assisted.retries=3 assisted.retries=3 assisted.no_kexec assisted.no_kexec=1",
    }),
  );
  assert.equal(c.retries, 3);
  assert.equal(c.mode, "no-kexec");
  assert.deepEqual(c.settings, { a: "1", b: "2" });
  refused(
    ["--ipxe-url", K],
    sources({}, { cmdline: "assisted.retries=3 quiet assisted.retries=4" }),
    /^Kernel command line parameter assisted\.retries and kernel command line parameter assisted\.retries set the same option differently$/,
  );
  refused(
    ["--ipxe-url", K],
    sources({ "/cfg": "ASSISTED_SET=a=1\nASSISTED_SET=a=2\n" }, {
      env: { ASSISTED_CONFIG: "/cfg" },
    }),
    /^Config file \/cfg ASSISTED_SET and config file \/cfg ASSISTED_SET set the same option differently$/,
  );
});

Deno.test("readKernelCmdline: an argument is split as the kernel splits it, an '=' first in it part of its name", () => {
  const warnings: string[] = [];
  assert.deepEqual(
    {
      ...readKernelCmdline(
        `=kernel_sha256=${PIN} =assisted.retries=3`,
        (w) => warnings.push(w),
      ),
    },
    {},
  );
  assert.deepEqual(warnings, [
    "ignoring kernel command line parameter =kernel_sha256: not read (did you mean assisted.kernel_sha256?)",
  ]);
});

Deno.test("readKernelCmdline: an unknown assisted.* parameter's hint is spelled as a kernel parameter and read from the name after assisted. alone", () => {
  const warnings: string[] = [];
  readKernelCmdline(
    `assisted.initrd_sha_256=${PIN} assisted.elete_karg=x`,
    (w) => warnings.push(w),
  );
  assert.deepEqual(warnings, [
    "ignoring unknown kernel command line parameter assisted.initrd_sha_256 (did you mean assisted.initrd_sha256?)",
    // The prefix's last letter does not complete delete_karg.
    "ignoring unknown kernel command line parameter assisted.elete_karg",
  ]);
});

Deno.test("readLayers: ASSISTED_ names in any case and spelling; unknown ones ignored in the environment, refused in a config file except the test hooks; an unreadable --config named", () => {
  const s = sources({
    "/c.env":
      "ASSISTED_KERNEL_CMDLINE_FILE=/x\nASSISTED_MEMINFO_FILE=/m\nASSISTED_DEBUG=1\nASSISTED_LOCAL_DISKS_ROOT=/r\nASSISTED_RETRIES=4\n",
  }, {
    env: {
      "ASSISTED_no-kexec": "1",
      ASSISTED_Infra_Env_Id: ID,
      ASSISTED_TYPO: "1",
      XXXXXXXX_RETRIES: "7",
    },
    cmdline: "",
  });
  const layers = readLayers(readFlags(["--config", "/c.env"]), s, () => {});
  assert.deepEqual({ ...layers.env }, {
    "no-kexec": true,
    "infra-env-id": ID,
  });
  assert.deepEqual({ ...layers.file }, { retries: "4" });
  assert.equal(layers.meminfoFile, "/proc/meminfo");
  assert.throws(
    () =>
      readLayers(
        readFlags([]),
        sources({}, { env: { ASSISTED_NO_KEXEC: "maybe" }, cmdline: "" }),
        () => {},
      ),
    /^BootError: Environment variable ASSISTED_NO_KEXEC must be a boolean/,
  );
  assert.throws(
    () =>
      readLayers(
        readFlags(["--config", "/c.env"]),
        sources({ "/c.env": "ASSISTED_TYPO=1\n" }, { cmdline: "" }),
        () => {},
      ),
    /^BootError: Config file \/c\.env: unknown setting ASSISTED_TYPO$/,
  );
  for (
    const [err, why] of [
      [new Deno.errors.NotFound("x"), "no such file"],
      [new Deno.errors.PermissionDenied("x"), "permission denied"],
    ] as const
  ) {
    assert.throws(
      () =>
        readLayers(readFlags(["--config", "/c.env"]), {
          env: {},
          cmdline: "",
          readTextFile: () => {
            throw err;
          },
        }, () => {}),
      new RegExp(`^BootError: Cannot read config file /c\\.env: ${why}$`),
    );
  }
  // An unreadable kernel command line is an empty one.
  assert.equal(
    readLayers(readFlags([]), sources({}), () => {}).hostCmdline,
    "",
  );
});

Deno.test("readNamedFiles: paths trimmed, read once; only a secret readable by others is warned about", () => {
  const warnings: string[] = [];
  const files = readNamedFiles({
    "token-file": " /t ",
    "infra-env-id-file": "/id",
  } as never, {
    readTextFile: (path) => `text of ${path}`,
    fileMode: () => 0o100644,
  }, (w) => warnings.push(w));
  assert.deepEqual(Object.keys(files).sort(), ["/id", "/t"]);
  assert.deepEqual(warnings, [
    "Token file /t is readable by other users (mode 0644): chmod 600 /t",
  ]);
});

/** A stand-in machine where another user controls `parts` (by path). */
function untrusted(parts: Record<string, UntrustedPart>): ConfigSources {
  return { untrustedPart: (path) => parts[path] };
}

const OPEN_FILE = (path: string): UntrustedPart => ({
  kind: "file",
  path,
  why: "writable by other users (mode 0666)",
  text: "is writable by other users (mode 0666)",
  fix: `chmod go-w ${path}`,
});

const THEIR_DIR: UntrustedPart = {
  kind: "directory",
  path: "/home/eve",
  why: "a directory of uid 1000 (not root, not this user)",
  text:
    "is reached through /home/eve, a directory of uid 1000 (not root, not this user)",
};

function usage(message: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.equal(err.message, message);
    return true;
  };
}

Deno.test("config layers: a config file another user can change is refused unread (exit 2), however it is named, the default one too", () => {
  const text = "ASSISTED_IPXE_URL=http://h/x\n";
  const consequence = "whoever can change it decides what this machine boots";
  const cases: [string[], Record<string, string>, string][] = [
    [["--config", "/c.env"], {}, "/c.env"],
    [[], { ASSISTED_CONFIG: "/c.env" }, "/c.env"],
    [[], {}, DEFAULT_CONFIG_FILE],
  ];
  for (const [argv, env, path] of cases) {
    const s = sources({ [path]: text }, {
      env,
      cmdline: "",
      ...untrusted({ [path]: OPEN_FILE(path) }),
    });
    assert.throws(
      () => readConfig(argv, s),
      usage(
        `Config file ${path} is writable by other users (mode 0666): ${consequence} (chmod go-w ${path})`,
      ),
      path,
    );
    assert.deepEqual(s.reads, [], "not read");
  }
  const s = sources({ "/home/eve/c.env": text }, {
    cmdline: "",
    ...untrusted({ "/home/eve/c.env": THEIR_DIR }),
  });
  assert.throws(
    () => readConfig(["--config", "/home/eve/c.env"], s),
    usage(
      `Config file /home/eve/c.env is reached through /home/eve, a directory of uid 1000 (not root, not this user): ${consequence}`,
    ),
  );
  // A walk that cannot finish is a read that failed.
  assert.throws(
    () =>
      readConfig(["--config", "/c.env"], {
        ...sources({ "/c.env": text }, { cmdline: "" }),
        untrustedPart: () => {
          throw new Deno.errors.PermissionDenied("lstat /c.env");
        },
      }),
    usage("Cannot read config file /c.env: permission denied"),
  );
  // A missing default config file is still none at all.
  const none = sources({}, { cmdline: "", env: { ASSISTED_IPXE_URL: "h" } });
  assert.deepEqual(readLayers(readFlags([]), none, () => {}).file, {});
});

Deno.test("config layers: an InfraEnv id file, token file or refresh token file another user can change is refused unread (exit 2), naming it", () => {
  const api = ["--api-url", "https://api.example.test"];
  const cases: [string[], string, string][] = [
    [
      ["--infra-env-id-file", "/id", "--token", "t0k3n"],
      "/id",
      "InfraEnv id file",
    ],
    [["--infra-env-id", ID, "--token-file", "/t"], "/t", "Token file"],
    [
      ["--infra-env-id", ID, "--refresh-token-file", "/r"],
      "/r",
      "Refresh token file",
    ],
  ];
  for (const [argv, path, subject] of cases) {
    const files = { "/id": ID, "/t": "t0k3n", "/r": "r3fr3sh" };
    for (const part of [OPEN_FILE(path), THEIR_DIR]) {
      const s = sources(files, { cmdline: "", ...untrusted({ [path]: part }) });
      assert.throws(
        () => readConfig([...api, ...argv], s),
        usage(
          `${subject} ${path} ${part.text}: whoever can change it decides what this machine boots${
            part.fix ? ` (${part.fix})` : ""
          }`,
        ),
        `${subject} ${part.kind}`,
      );
      assert.ok(!s.reads.includes(path), "not read");
    }
    // The same file, trusted, is read and used.
    config([...api, ...argv], sources(files, { cmdline: "" }));
  }
});
