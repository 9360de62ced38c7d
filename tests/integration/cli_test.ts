/**
 * The bootloader CLI (`main.ts`) against the mock InfraEnv over loopback:
 * SaaS, hub, boot-order-control, local boot, token re-exchange, bad input.
 */
import assert from "node:assert/strict";
import { coreosBootTree, makeExt4 } from "../../dev/installed_disk.ts";
import {
  fakeKernel,
  type MockInfraEnv,
  type MockOptions,
  startMock,
} from "../../dev/mock_infraenv.ts";
import { makeFakeMachine } from "../fake_machine.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const MAC = "52:54:00:12:34:56";
const enc = (text: string) => new TextEncoder().encode(text);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json?: Record<string, unknown>;
}

async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: {
      NO_COLOR: "1",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
      // No local disks unless a test gives a fake machine.
      ASSISTED_LOCAL_DISKS_ROOT: "/nonexistent",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  let json: Record<string, unknown> | undefined;
  try {
    json = stdout.trim() ? JSON.parse(stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { code: out.code, stdout, stderr, json };
}

function assertCleanError(run: Run, code: number, pattern: RegExp) {
  assert.equal(run.code, code, `exit code; stderr: ${run.stderr}`);
  const lines = run.stderr.trim().split("\n");
  const last = lines.at(-1)!;
  assert.match(last, pattern);
  assert.match(last, /^assisted-bootloader: error: /);
  assert.ok(!run.stderr.includes("    at "), `no stack trace: ${run.stderr}`);
  assert.equal(run.stdout, "", "nothing on stdout");
}

async function withMock(
  options: MockOptions,
  fn: (mock: MockInfraEnv) => Promise<void>,
) {
  const mock = await startMock(options);
  try {
    await fn(mock);
  } finally {
    await mock.close();
  }
}

/** The SaaS source: API, SSO, InfraEnv id and an offline token file. */
function saasArgs(mock: MockInfraEnv, refreshTokenFile: string): string[] {
  return [
    "--api-url",
    mock.apiUrl,
    "--sso-url",
    mock.ssoUrl,
    "--infra-env-id",
    mock.infraEnvId,
    "--refresh-token-file",
    refreshTokenFile,
  ];
}

async function tokenFile(content: string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "ab-token-" });
  await Deno.writeTextFile(path, content);
  return path;
}

Deno.test("cli: SaaS: refresh token → access token → script → plan, with karg edits", async () => {
  await withMock({
    authMode: "rhsso",
    extraKargs: ["p1", 'p3="this is an argument"'],
  }, async (mock) => {
    const rt = await tokenFile(mock.refreshToken + "\n");
    const run = await cli([
      ...saasArgs(mock, rt),
      "--print-plan",
      "--no-host-settings",
      "--append-karg",
      "console=ttyS0",
      "--delete-karg",
      "rd.luks.options",
    ]);
    await Deno.remove(rt);
    assert.equal(run.code, 0, run.stderr);
    const plan = run.json!;
    assert.equal(plan.action, "kexec");
    const kernel = plan.kernel as { url: string; name: string };
    assert.equal(
      kernel.url,
      `${mock.imageBaseUrl}/api/assisted-images/boot-artifacts/kernel?arch=x86_64&version=4.18`,
    );
    assert.equal(kernel.name, "kernel");
    const initrds = plan.initrds as {
      url: string;
      name: string;
      cpio?: unknown;
    }[];
    assert.equal(initrds.length, 1);
    assert.equal(initrds[0].name, "initrd");
    assert.match(
      initrds[0].url,
      /\/pxe-initrd\?arch=x86_64&image_token=imgtok-[^&]+&version=4\.18$/,
    );
    assert.equal(initrds[0].cpio, undefined);
    assert.equal(
      plan.cmdline,
      `initrd=initrd coreos.live.rootfs_url=${mock.imageBaseUrl}/api/assisted-images/boot-artifacts/rootfs?arch=x86_64&version=4.18 ` +
        `random.trust_cpu=on ignition.firstboot ignition.platform.id=metal console=tty1 console=ttyS1,115200n8 ` +
        `coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8" p1 p3="this is an argument" console=ttyS0`,
    );
    assert.deepEqual(plan.scripts, [
      `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script`,
    ]);
    assert.ok(
      !run.stderr.includes(mock.refreshToken),
      "the refresh token is never logged",
    );
    assert.ok(!/imgtok-/.test(run.stderr), "image tokens are redacted in logs");
    const image = mock.requests.filter((r) => r.server === "image");
    assert.equal(image.length, 0, "--print-plan downloads no artifact");
  });
});

Deno.test("cli: hub: --ipxe-url with api_key, no bearer anywhere", async () => {
  await withMock({ authMode: "local" }, async (mock) => {
    const run = await cli([
      "--ipxe-url",
      mock.ipxeScriptUrl,
      "--print-plan",
      "--no-host-settings",
    ]);
    assert.equal(run.code, 0, run.stderr);
    const initrds = run.json!.initrds as { url: string }[];
    assert.match(initrds[0].url, /api_key=/);
    assert.ok(
      mock.requests.every((r) => r.headers.authorization === undefined),
    );
    assert.ok(
      !run.stderr.includes("local-api-key"),
      "api_key is redacted in logs",
    );
  });
});

Deno.test("cli: boot-order-control: the redirect chains with the MAC", async () => {
  await withMock({ authMode: "rhsso" }, async (mock) => {
    const run = await cli([
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--token",
      mock.accessToken,
      "--ipxe-script-type",
      "boot-order-control",
      "--mac",
      MAC,
      "--no-host-settings",
      "--print-plan",
    ]);
    assert.equal(run.code, 0, run.stderr);
    const scripts = run.json!.scripts as string[];
    assert.equal(scripts.length, 2);
    assert.match(scripts[0], /ipxe_script_type=boot-order-control/);
    assert.match(
      scripts[1],
      /file_name=ipxe-script&image_token=imgtok-[^&]+&mac=52:54:00:12:34:56$/,
    );
    const chained = mock.requests.find((r) => r.path.includes("mac="))!;
    assert.equal(
      chained.headers.authorization,
      undefined,
      "the signed chain URL carries its own credential",
    );
  });
});

Deno.test("cli: 404 to the MAC-specific request → local-boot, exit 0", async () => {
  await withMock({ authMode: "none", installedMacs: [MAC] }, async (mock) => {
    const run = await cli([
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--ipxe-script-type",
      "boot-order-control",
      "--mac",
      MAC,
      "--no-host-settings",
      "--print-plan",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json!.action, "local-boot");
    assert.match(
      run.json!.reason as string,
      /IPXE booting skipped\. InfraEnv .* is already installed/,
    );
  });
});

Deno.test("cli: an installed host: --print-plan shows the local entry, --no-kexec stages it, --local-boot exit|reboot", async () => {
  await withMock({ authMode: "none", installedMacs: [MAC] }, async (mock) => {
    const dir = await Deno.makeTempDir({ prefix: "ab-cli-local-" });
    try {
      const boot = `${dir}/boot.img`;
      await makeExt4(
        boot,
        coreosBootTree([{
          n: 1,
          kernel: fakeKernel(100_000),
          initrd: new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]),
          options: "$ignition_firstboot root=UUID=abc rw",
        }], { firstboot: "set ignition_network_kcmdline='ip=dhcp'\n" }),
        { label: "boot" },
      );
      await makeFakeMachine(`${dir}/m`, [{
        name: "sda",
        major: 8,
        partitions: [{ partLabel: "boot", image: boot }],
      }]);
      const env = { ASSISTED_LOCAL_DISKS_ROOT: `${dir}/m` };
      const base = [
        "--api-url",
        mock.apiUrl,
        "--infra-env-id",
        mock.infraEnvId,
        "--mac",
        MAC,
        "--no-host-settings",
      ];
      const plan = await cli([...base, "--print-plan"], env);
      assert.equal(plan.code, 0, plan.stderr);
      assert.deepEqual(plan.json, {
        action: "local-kexec",
        reason: plan.json!.reason as string,
        device: `${dir}/m/dev/sda1`,
        entry: "loader/entries/ostree-1-rhcos.conf",
        title: "rhcos (ostree:0)",
        kernel: "/ostree/rhcos-00000001/vmlinuz-6.1.0",
        initrds: ["/ostree/rhcos-00000001/initramfs-6.1.0.img"],
        cmdline:
          "BOOT_IMAGE=/ostree/rhcos-00000001/vmlinuz-6.1.0 ignition.firstboot ip=dhcp root=UUID=abc rw",
        firstboot: true,
      });
      assert.match(plan.json!.reason as string, /^IPXE booting skipped\./);
      const work = `${dir}/work`;
      const staged = await cli(
        [...base, "--no-kexec", "--work-dir", work],
        env,
      );
      assert.equal(staged.code, 0, staged.stderr);
      assert.equal(staged.json!.action, "local-kexec");
      const files = staged.json!.staged as {
        kernel: { path: string; size: number; format: string };
        initrd: { path: string; parts: { path: string }[] };
      };
      assert.equal(files.kernel.path, `${work}/kernel`);
      assert.equal(files.kernel.size, 100_000);
      assert.equal(files.kernel.format, "bzimage");
      assert.equal((await Deno.stat(files.initrd.path)).isFile, true);
      const exit = await cli(
        [...base, "--print-plan", "--local-boot", "exit"],
        env,
      );
      assert.equal(exit.json!.action, "local-boot");
      const reboot = await cli(
        [...base, "--print-plan", "--local-boot", "reboot"],
        env,
      );
      assert.equal(reboot.json!.action, "local-reboot");
      assertCleanError(
        await cli([...base, "--print-plan", "--local-boot", "firmware"], env),
        2,
        /--local-boot must be kexec, exit or reboot, got "firmware"/,
      );
      // A script that hands back to the firmware is a local boot too.
      await Deno.writeTextFile(`${dir}/s.ipxe`, "#!ipxe\necho bye\nexit\n");
      const script = await cli(
        ["--ipxe-url", `file://${dir}/s.ipxe`, "--print-plan"],
        env,
      );
      assert.equal(script.code, 0, script.stderr);
      assert.equal(script.json!.action, "local-kexec");
      assert.match(
        script.json!.reason as string,
        /s\.ipxe line 3: exit: the script handed the machine back/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("cli: an installed host with no installed system found: a clear message, exit 0", async () => {
  await withMock({ authMode: "none", installedMacs: [MAC] }, async (mock) => {
    const run = await cli([
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--mac",
      MAC,
      "--no-host-settings",
      "--print-plan",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json!.action, "local-boot");
    assert.match(run.stderr, /no installed system found on the local disks/);
  });
});

Deno.test("cli: the first request carries the boot NIC's MAC: an installed host boots locally", async () => {
  await withMock({ authMode: "none", installedMacs: [MAC] }, async (mock) => {
    const base = [
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--no-host-settings",
      "--print-plan",
    ];
    const installed = await cli([...base, "--mac", MAC]);
    assert.equal(installed.code, 0, installed.stderr);
    assert.equal(installed.json!.action, "local-boot");
    assert.ok(
      mock.requests[0].path.endsWith(
        `file_name=ipxe-script&mac=${encodeURIComponent(MAC)}`,
      ),
      mock.requests[0].path,
    );
    const other = await cli([...base, "--mac", "52:54:00:00:00:02"]);
    assert.equal(other.json!.action, "kexec");
    assert.deepEqual(other.json!.scripts, [
      `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script&mac=52%3A54%3A00%3A00%3A00%3A02`,
    ]);
    const always = await cli([
      ...base,
      "--mac",
      MAC,
      "--ipxe-script-type",
      "discovery-image-always",
    ]);
    assert.equal(
      always.json!.action,
      "kexec",
      "discovery-image-always asks without the MAC",
    );
  });
});

Deno.test("cli: a MAC two hosts have: the plain script URL boots discovery, said once, not retried", async () => {
  const hosts = [
    { macs: [MAC], status: "installed" },
    { macs: [MAC], status: "known" },
  ];
  await withMock({ authMode: "none", hosts }, async (mock) => {
    const base = [
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--mac",
      MAC,
      "--no-host-settings",
      "--print-plan",
    ];
    const plain =
      `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script`;
    const run = await cli(base);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json!.action, "kexec");
    assert.deepEqual(run.json!.scripts, [plain]);
    const said = run.stderr.split("\n").filter((l) => /without mac=/.test(l));
    assert.equal(said.length, 1, run.stderr);
    assert.match(said[0], /Unexpected number of hosts 2 with mac/);
    assert.deepEqual(
      mock.requests.map((r) => r.status),
      [500, 200],
      "one 500, no retries",
    );
    // The boot-order-control redirect's MAC request falls back the same way.
    mock.requests.length = 0;
    const redirect = await cli([
      ...base,
      "--ipxe-script-type",
      "boot-order-control",
    ]);
    assert.equal(redirect.code, 0, redirect.stderr);
    const scripts = redirect.json!.scripts as string[];
    assert.equal(scripts.length, 2);
    assert.equal(scripts[1], `${plain}`);
    assert.deepEqual(mock.requests.map((r) => r.status), [200, 500, 200]);
  });
});

Deno.test("cli: an installed host still boots locally; one installing, at a late stage, too", async () => {
  await withMock({
    authMode: "none",
    hosts: [
      { macs: [MAC], status: "installed" },
      {
        macs: ["52:54:00:00:00:07"],
        status: "installing-in-progress",
        stage: "Waiting for ignition",
      },
    ],
  }, async (mock) => {
    for (
      const [mac, why] of [[MAC, /is already installed/], [
        "52:54:00:00:00:07",
        /is in stage Waiting for ignition/,
      ]] as const
    ) {
      const run = await cli([
        "--api-url",
        mock.apiUrl,
        "--infra-env-id",
        mock.infraEnvId,
        "--mac",
        mac,
        "--no-host-settings",
        "--print-plan",
      ]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.json!.action, "local-boot");
      assert.match(run.json!.reason as string, why);
    }
  });
});

Deno.test("cli: --console host puts this kernel's consoles in the plan, persistent-kargs intact", async () => {
  await withMock({ authMode: "none" }, async (mock) => {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(
        `${dir}/cmdline`,
        "BOOT_IMAGE=/vmlinuz root=/dev/vda console=tty0 console=ttyS0,115200n8\n",
      );
      const env = { ASSISTED_KERNEL_CMDLINE_FILE: `${dir}/cmdline` };
      const args = [
        "--ipxe-url",
        mock.ipxeScriptUrl,
        "--print-plan",
        "--no-host-settings",
      ];
      const persistent =
        'coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"';
      const keep = await cli(args, env);
      assert.equal(keep.code, 0, keep.stderr);
      assert.match(
        keep.json!.cmdline as string,
        new RegExp(` console=tty1 console=ttyS1,115200n8 ${persistent}$`),
        "keep is the default",
      );
      const host = await cli([...args, "--console", "host"], env);
      assert.equal(host.code, 0, host.stderr);
      assert.match(
        host.json!.cmdline as string,
        new RegExp(
          ` ignition\\.platform\\.id=metal console=tty0 console=ttyS0,115200n8 ${persistent}$`,
        ),
      );
      assert.match(
        host.stderr,
        /consoles from this kernel's command line: console=tty0 console=ttyS0,115200n8 \(the script had console=tty1 console=ttyS1,115200n8\)/,
      );
      // From the kernel command line itself, as the initramfs gives it.
      await Deno.writeTextFile(
        `${dir}/cmdline`,
        "console=ttyAMA0,115200 assisted.console=host-persistent\n",
      );
      const all = await cli(args, env);
      assert.equal(all.code, 0, all.stderr);
      assert.match(
        all.json!.cmdline as string,
        / console=ttyAMA0,115200 coreos\.inst\.persistent-kargs="console=ttyAMA0,115200"$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("cli: ${platform} is this machine's firmware with host settings, the architecture's default without", async () => {
  await withMock({
    authMode: "none",
    scriptOverride:
      "#!ipxe\nkernel http://h/vmlinuz p=${platform} a=${buildarch}\nboot\n",
  }, async (mock) => {
    const arm = Deno.build.arch === "aarch64";
    let efi = arm;
    try {
      Deno.statSync("/sys/firmware/efi");
      efi = true;
    } catch {
      // BIOS firmware (or no sysfs): pcbios on x86.
    }
    const arch = arm ? "arm64" : "x86_64";
    const host = await cli(["--ipxe-url", mock.ipxeScriptUrl, "--print-plan"]);
    assert.equal(host.code, 0, host.stderr);
    assert.equal(host.json!.cmdline, `p=${efi ? "efi" : "pcbios"} a=${arch}`);
    const none = await cli([
      "--ipxe-url",
      mock.ipxeScriptUrl,
      "--print-plan",
      "--no-host-settings",
    ]);
    assert.equal(none.json!.cmdline, `p=${arm ? "efi" : "pcbios"} a=${arch}`);
  });
});

Deno.test("cli: a 401 from the API → the offline token is exchanged again", async () => {
  await withMock({ authMode: "rhsso", rejectBearer: 1 }, async (mock) => {
    const rt = await tokenFile(mock.refreshToken);
    const run = await cli([
      ...saasArgs(mock, rt),
      "--print-plan",
      "--no-host-settings",
    ]);
    await Deno.remove(rt);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(
      mock.requests.filter((r) => r.path.includes("openid-connect")).length,
      2,
    );
    assert.match(
      run.stderr,
      /answered 401: exchanging the refresh token again/,
    );
  });
});

Deno.test("cli: a bad token or offline token is a clear one-line error", async () => {
  await withMock({ authMode: "rhsso" }, async (mock) => {
    const base = [
      "--api-url",
      mock.apiUrl,
      "--infra-env-id",
      mock.infraEnvId,
      "--print-plan",
    ];
    assertCleanError(
      await cli([...base, "--token", "expired-or-wrong-token"]),
      4,
      /answered HTTP 401: unauthenticated for invalid credentials \(check the token\)/,
    );
    const rt = await tokenFile("not-the-right-offline-token");
    assertCleanError(
      await cli([
        ...base,
        "--sso-url",
        mock.ssoUrl,
        "--refresh-token-file",
        rt,
      ]),
      4,
      /SSO refused the refresh token \(HTTP 400\): Invalid refresh token/,
    );
    await Deno.remove(rt);
    assertCleanError(
      await cli([
        "--api-url",
        mock.apiUrl,
        "--infra-env-id",
        "00000000-0000-0000-0000-000000000000",
        "--print-plan",
        "--token",
        mock.accessToken,
      ]),
      4,
      /HTTP 404: Object Not Found/,
    );
  });
});

Deno.test("cli: a 401 on a chained script exits 4 (the API refused), not 3", async () => {
  await withMock({ authMode: "rhsso" }, async (mock) => {
    // A script of one's own that chains the InfraEnv's signed script URL,
    // whose image_token has expired (or was never valid).
    const signed =
      `${mock.apiUrl}/assisted-install/v2/infra-envs/${mock.infraEnvId}/downloads/files?file_name=ipxe-script&image_token=expired-token`;
    mock.update({
      files: {
        "/boot.ipxe": enc(`#!ipxe\nchain ${signed}&mac=\${net0/mac}\n`),
      },
    });
    const run = await cli([
      "--ipxe-url",
      `${mock.baseUrl}/boot.ipxe`,
      "--mac",
      MAC,
      "--no-host-settings",
      "--print-plan",
    ]);
    assertCleanError(
      run,
      4,
      /line 2: chain .*image_token=REDACTED.*answered HTTP 401: unauthenticated for invalid credentials/,
    );
    assert.ok(!run.stderr.includes("expired-token"), run.stderr);
    // The same script failing for a reason of its own stays a script error.
    mock.update({
      files: { "/boot.ipxe": enc("#!ipxe\nchain ${missing}\n") },
    });
    assertCleanError(
      await cli(["--ipxe-url", `${mock.baseUrl}/boot.ipxe`, "--print-plan"]),
      3,
      /line 2: chain "" is not a URI/,
    );
  });
});

Deno.test("cli: bad input exits 2 with one line, never a stack trace", async () => {
  assertCleanError(await cli([]), 2, /No script source/);
  assertCleanError(
    await cli(["--ipxe-url", "http://127.0.0.1:9/x", "--frobnicate"]),
    2,
    /Unknown option '--frobnicate'/,
  );
  assertCleanError(
    await cli(["--ipxe-url", "ftp://h/x"]),
    2,
    /--ipxe-url must be http or https or file/,
  );
  assertCleanError(
    await cli(["--print-plan"], {
      ASSISTED_IPXE_URL: "http://127.0.0.1:9/x",
      ASSISTED_RETRIES: "many",
    }),
    2,
    /: error: Environment variable ASSISTED_RETRIES must be a number/,
  );
  assertCleanError(
    await cli(["--print-plan", "--work-dir", ""], {
      ASSISTED_IPXE_URL: "http://127.0.0.1:9/x",
    }),
    2,
    /--work-dir is empty/,
  );
});

Deno.test("cli: a script that fails is exit 3 naming the script", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/s.ipxe`,
      "#!ipxe\necho hello\ngoto nowhere\n",
    );
    const run = await cli([
      "--ipxe-url",
      `file://${dir}/s.ipxe`,
      "--print-plan",
      "--no-host-settings",
    ]);
    assertCleanError(run, 3, /s\.ipxe/);
    assert.match(run.stderr, /script: hello/);
    await Deno.writeTextFile(`${dir}/t.ipxe`, "not a script\n");
    assertCleanError(
      await cli(["--ipxe-url", `file://${dir}/t.ipxe`, "--print-plan"]),
      3,
      /t\.ipxe/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a script sent a byte at a time is cut by --min-speed: exit 4, never a boot held forever", async () => {
  // "#!ipxe" and then a byte every 50 ms for 3 s: never silent for --timeout.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, () => {
    let sent = 0;
    return new Response(
      new ReadableStream<Uint8Array>({
        pull: (controller) =>
          new Promise<void>((resolve) => {
            timer = setTimeout(() => {
              if (sent++ === 60) controller.close();
              else controller.enqueue(enc(sent === 1 ? "#!ipxe\n" : "#"));
              resolve();
            }, sent === 0 ? 0 : 50);
          }),
        cancel: () => clearTimeout(timer),
      }),
    );
  });
  try {
    const run = await cli([
      "--ipxe-url",
      `http://127.0.0.1:${server.addr.port}/s.ipxe`,
      "--print-plan",
      "--no-host-settings",
      "--min-speed",
      "100",
      "--min-speed-time",
      "1",
      "--retries",
      "0",
    ]);
    assertCleanError(
      run,
      4,
      /s\.ipxe: slower than 100 bytes\/s \(\d+ bytes in 1(\.\d)? s\) after \d+ bytes$/,
    );
  } finally {
    clearTimeout(timer);
    await server.shutdown();
  }
});

Deno.test("cli: --no-kexec downloads and verifies into the work dir", async () => {
  await withMock({ authMode: "local" }, async (mock) => {
    const work = await Deno.makeTempDir();
    try {
      const run = await cli([
        "--ipxe-url",
        mock.ipxeScriptUrl,
        "--no-kexec",
        "--work-dir",
        `${work}/w`,
        "--no-host-settings",
        "--progress",
        "none",
      ]);
      assert.equal(run.code, 0, run.stderr);
      const result = run.json as {
        kernel: { path: string; sha256: string; size: number };
        initrd: { path: string; size: number };
      };
      const bytes = await Deno.readFile(result.kernel.path);
      const digest = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      assert.equal(result.kernel.sha256, digest);
      assert.equal(result.kernel.size, bytes.length);
      assert.equal(
        (await Deno.stat(result.initrd.path)).size,
        result.initrd.size,
      );
      assert.equal((await Deno.stat(`${work}/w`)).mode! & 0o777, 0o700);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  });
});

Deno.test("cli: --help and --version", async () => {
  const help = await cli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: assisted-bootloader \[options\]/);
  assert.match(help.stdout, /Examples:/);
  const version = await cli(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^assisted-bootloader \d+\.\d+\.\d+/);
});
