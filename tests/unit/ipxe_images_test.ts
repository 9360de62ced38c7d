import assert from "node:assert/strict";
import {
  IpxeError,
  runScript,
  runScriptSource,
  type ScriptFetcher,
} from "../../lib/ipxe/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import type { KexecPlan, LocalBootPlan } from "../../lib/plan.ts";
import { kexecPlan } from "../test_util.ts";

const URL0 = "http://h/dir/boot.ipxe";

/** An in-memory fetcher: url -> body (string); redirects: url -> final url. Records requests. */
function fakeFetch(
  files: Record<string, string>,
  redirects: Record<string, string> = {},
) {
  const requested: string[] = [];
  const fetch: ScriptFetcher = (url, options) => {
    requested.push(url);
    const scheme = url.slice(0, url.indexOf(":"));
    if (scheme !== "http" && scheme !== "https") {
      return Promise.reject(new Error(`unsupported URL scheme "${scheme}"`));
    }
    const final = redirects[url] ?? url;
    const body = files[final];
    if (body === undefined) return Promise.reject(new Error("HTTP 404"));
    return Promise.resolve({
      url: final,
      body: new TextEncoder().encode(body).subarray(0, options.maxBytes + 1),
    });
  };
  return { fetch, requested };
}

interface Outcome {
  plan?: KexecPlan;
  local?: LocalBootPlan;
  error?: string;
  lines: string[];
  requested: string[];
}

async function run(
  source: string,
  files: Record<string, string> = {},
  extra: {
    settings?: Record<string, string>;
    maxChainDepth?: number;
    redirects?: Record<string, string>;
  } = {},
): Promise<Outcome> {
  const { fetch, requested } = fakeFetch(files, extra.redirects);
  const lines: string[] = [];
  try {
    const plan = await runScriptSource(source, {
      url: URL0,
      fetch,
      settings: extra.settings,
      maxChainDepth: extra.maxChainDepth,
      print: (l) => lines.push(l),
    });
    if (plan.action === "local-boot") return { local: plan, lines, requested };
    return { plan, lines, requested };
  } catch (e) {
    assert.ok(e instanceof IpxeError, String(e));
    return { error: e.message, lines, requested };
  }
}

const initrdUrls = (plan?: KexecPlan) => plan?.initrds.map((i) => i.url);

Deno.test("kernel + initrd + boot: URLs are planned, not fetched; relative URLs use the script's URL", async () => {
  const { plan, requested } = await run(
    "#!ipxe\nkernel vmlinuz a=1\ninitrd ../initrd.img\ninitrd /abs/x.img?v=2\nboot\n",
  );
  assert.deepEqual(requested, []);
  assert.deepEqual(plan, {
    action: "kexec",
    kernel: { url: "http://h/dir/vmlinuz", name: "vmlinuz" },
    initrds: [
      { url: "http://h/initrd.img", name: "initrd.img" },
      { url: "http://h/abs/x.img?v=2", name: "x.img" },
    ],
    cmdline: "a=1",
    scripts: [URL0],
  });
});

Deno.test("image options: --name forms, last wins, --, unknown option, options only before the URI", async () => {
  const { plan } = await run(
    [
      "#!ipxe",
      "initrd --name=one http://h/a",
      "initrd -ntwo http://h/b",
      "initrd -n three --name four http://h/c",
      "initrd --timeout 100 -aq -- http://h/d",
      "kernel http://h/k x --name foo -- y",
      "boot",
    ].join("\n"),
  );
  assert.deepEqual(plan?.initrds.map((i) => i.name), [
    "one",
    "two",
    "four",
    "d",
  ]);
  assert.equal(plan?.cmdline, "x --name foo -- y");
  const bad = await run("#!ipxe\ninitrd --bogus http://h/a\n");
  assert.match(bad.error!, /line 2: initrd: unrecognised option "--bogus"/);
  const missing = await run("#!ipxe\ninitrd --name\n");
  assert.match(missing.error!, /requires an argument/);
  const badTimeout = await run("#!ipxe\nkernel --timeout soon http://h/k\n");
  assert.match(badTimeout.error!, /invalid timeout value/);
});

Deno.test("registered-image list: duplicates, find-first, stale kernels, imgfree", async () => {
  const a = await run(
    [
      "#!ipxe",
      "kernel http://h/old/vmlinuz old=1",
      "initrd http://h/one/initrd",
      "initrd http://h/two/initrd",
      "imgargs initrd first-only",
      "kernel http://h/new/vmlinuz new=1",
      "boot",
    ].join("\n"),
  );
  assert.equal(a.plan?.kernel.url, "http://h/new/vmlinuz");
  assert.equal(a.plan?.cmdline, "new=1");
  // The first kernel is not freed and goes to Linux too, cpio-wrapped by its command line.
  assert.deepEqual(a.plan?.initrds, [
    {
      url: "http://h/old/vmlinuz",
      name: "vmlinuz",
      cpio: { path: "old=1", mode: 0o644, mkdir: 0 },
    },
    {
      url: "http://h/one/initrd",
      name: "initrd",
      cpio: { path: "first-only", mode: 0o644, mkdir: 0 },
    },
    { url: "http://h/two/initrd", name: "initrd" },
  ]);
  const b = await run(
    "#!ipxe\ninitrd http://h/a\ninitrd http://h/b\ninitrd http://h/c\nimgfree b\nkernel http://h/k\nboot\n",
  );
  assert.deepEqual(initrdUrls(b.plan), ["http://h/a", "http://h/c"]);
  const c = await run(
    "#!ipxe\ninitrd http://h/a\nimgfree\nkernel http://h/k\nboot\n",
  );
  assert.deepEqual(initrdUrls(c.plan), []);
  const d = await run("#!ipxe\nimgfree nosuch\n");
  assert.match(
    d.error!,
    /line 2: imgfree: "nosuch": no such image$/,
  );
});

Deno.test("imgargs replaces or clears a command line; boot NAME args sets it", async () => {
  const a = await run(
    "#!ipxe\nkernel http://h/vmlinuz a b\nimgargs vmlinuz c -- d\nboot\n",
  );
  assert.equal(a.plan?.cmdline, "c -- d");
  const b = await run(
    "#!ipxe\nkernel http://h/vmlinuz a b\nimgargs vmlinuz\nboot\n",
  );
  assert.equal(b.plan?.cmdline, "");
  const c = await run(
    "#!ipxe\nset k\nset k ${k} x\nset k ${k} y\nkernel --name vm http://h/vmlinuz old\nboot vm ${k}\n",
  );
  assert.equal(c.plan?.kernel.name, "vm");
  assert.equal(c.plan?.cmdline, " x y");
  assert.deepEqual(c.requested, []);
});

Deno.test("selection: one selected image, lost when it is freed; nameless images are imgN", async () => {
  const a = await run(
    "#!ipxe\nkernel http://h/a\nkernel http://h/b\nimgfree b\nboot || echo x\n",
  );
  assert.deepEqual(a.lines, ["No image selected"]);
  const b = await run(
    "#!ipxe\ninitrd http://h\ninitrd http://h/dir/\nkernel http://h/k\nboot\n",
  );
  assert.deepEqual(b.plan?.initrds.map((i) => i.name), ["img0", ""]);
  const c = await run(
    "#!ipxe\nkernel http://h/a a\nkernel http://h/b b\nimgselect a\nboot\n",
  );
  assert.equal(c.plan?.kernel.url, "http://h/a");
  assert.deepEqual(initrdUrls(c.plan), ["http://h/b"]);
});

Deno.test("boot with nothing selected prints a message and succeeds", async () => {
  const { lines, error } = await run("#!ipxe\nboot && echo still here\n");
  assert.deepEqual(lines, ["No image selected", "still here"]);
  assert.match(error!, /ended without booting a kernel/);
});

Deno.test("digests and imgstat need existing images", async () => {
  const { plan } = await run(
    "#!ipxe\nkernel http://h/k\ninitrd http://h/i\nmd5sum k i\nsha1sum i\nsha256sum k\nimgstat\nboot\n",
  );
  assert.equal(plan?.kernel.url, "http://h/k");
  const missing = await run("#!ipxe\nkernel http://h/k\nmd5sum k nope\n");
  assert.match(missing.error!, /line 3: md5sum: "nope": no such image$/);
});

Deno.test("cpio wrap: initrd URL /path mode=… mkdir=…", async () => {
  const { plan } = await run(
    [
      "#!ipxe",
      "initrd http://h/a.sh /sbin/init mode=755",
      "initrd http://h/b /etc/x/y mkdir=2 mode=0600",
      "initrd http://h/c /etc/all/ mkdir=-1",
      "initrd http://h/d",
      "initrd http://h/e ${empty}",
      "kernel http://h/k",
      "boot",
    ].join("\n"),
  );
  assert.deepEqual(plan?.initrds.map((i) => i.cpio), [
    { path: "/sbin/init", mode: 0o755, mkdir: 0 },
    { path: "/etc/x/y", mode: 0o600, mkdir: 2 },
    { path: "/etc/all/", mode: 0o644, mkdir: -1 },
    undefined,
    undefined,
  ]);
});

Deno.test("chain: nested scripts share settings both ways and resolve URLs against their own URL", async () => {
  const { plan, requested, lines } = await run(
    "#!ipxe\nset from parent\nchain sub/child.ipxe?x=1 arg\necho parent sees ${from_child}\nkernel ${kurl}\nboot\n",
    {
      "http://h/dir/sub/child.ipxe?x=1":
        "#!ipxe\necho child sees ${from}\nset from_child yes\nset kurl ${cwduri}vmlinuz\ninitrd rd.img\n",
    },
  );
  assert.deepEqual(requested, ["http://h/dir/sub/child.ipxe?x=1"]);
  assert.deepEqual(lines, ["child sees parent", "parent sees yes"]);
  assert.equal(plan?.kernel.url, "http://h/dir/sub/vmlinuz");
  // The returned script stays registered (re-registered after its own initrd) and is cpio-wrapped by its arguments.
  assert.deepEqual(plan?.initrds, [
    { url: "http://h/dir/sub/rd.img", name: "rd.img" },
    {
      url: "http://h/dir/sub/child.ipxe?x=1",
      name: "child.ipxe",
      cpio: { path: "arg", mode: 0o644, mkdir: 0 },
    },
  ]);
  assert.deepEqual(plan?.scripts, [URL0, "http://h/dir/sub/child.ipxe?x=1"]);
});

Deno.test("chain --autofree: the returned script is not handed to Linux", async () => {
  const { plan } = await run(
    "#!ipxe\nchain --autofree c.ipxe\nkernel k\nboot\n",
    { "http://h/dir/c.ipxe": "#!ipxe\n" },
  );
  assert.deepEqual(plan?.initrds, []);
});

Deno.test("chain of a kernel boots it with its arguments and the registered images", async () => {
  const { plan, requested } = await run(
    "#!ipxe\ninitrd --name initrd http://h/initrd.img\nchain http://h/vmlinuz initrd=initrd quiet\necho not reached\n",
    { "http://h/vmlinuz": "MZ\x00\x00 not a script" },
  );
  assert.deepEqual(requested, ["http://h/vmlinuz"]);
  assert.deepEqual(plan, {
    action: "kexec",
    kernel: { url: "http://h/vmlinuz", name: "vmlinuz" },
    initrds: [{ url: "http://h/initrd.img", name: "initrd" }],
    cmdline: "initrd=initrd quiet",
    scripts: [URL0],
  });
});

Deno.test("chain failures: status through ||, exit codes, fetch errors named", async () => {
  const a = await run(
    "#!ipxe\nchain http://h/missing.ipxe || echo fallback\nchain c.ipxe || echo child failed\nchain tftp://h/x\n",
    {
      "http://h/dir/c.ipxe":
        "#!ipxe\necho in child\nexit 3\necho not reached\n",
    },
  );
  assert.deepEqual(a.lines.filter((l) => !l.includes(":")), [
    "fallback",
    "in child",
    "child failed",
  ]);
  assert.match(
    a.error!,
    /^Script http:\/\/h\/dir\/boot.ipxe line 4: chain tftp:\/\/h\/x: unsupported URL scheme "tftp"$/,
  );
  const b = await run("#!ipxe\nchain http://h/missing.ipxe\n");
  assert.match(b.error!, /line 2: chain http:\/\/h\/missing.ipxe: HTTP 404$/);
  const c = await run("#!ipxe\nchain c.ipxe\n", {
    "http://h/dir/c.ipxe": "#!ipxe\ngoto nowhere\n",
  });
  assert.match(
    c.error!,
    /^Script http:\/\/h\/dir\/c.ipxe line 2: goto: label "nowhere" not found$/,
  );
});

Deno.test("exit in a chained script returns to its parent; after chain --replace it ends the run", async () => {
  const child = { "http://h/dir/c.ipxe": "#!ipxe\necho child\nexit\n" };
  const a = await run(
    "#!ipxe\nchain c.ipxe\necho back\nkernel http://h/k\nboot\n",
    child,
  );
  assert.deepEqual(a.lines, ["child", "back"]);
  assert.equal(a.plan?.kernel.url, "http://h/k");
  // The replacement is the outermost script now: its exit leaves iPXE.
  const b = await run("#!ipxe\nchain --replace c.ipxe\n", child);
  assert.match(
    b.local!.reason,
    /^Script http:\/\/h\/dir\/c.ipxe line 3: exit: the script handed/,
  );
  // A sanboot in a chained script unwinds them all.
  const c = await run("#!ipxe\nchain s.ipxe || echo not reached\n", {
    "http://h/dir/s.ipxe": "#!ipxe\nsanboot --drive 0x81\n",
  });
  assert.deepEqual(c.lines, []);
  assert.match(c.local!.reason, /s.ipxe line 2: sanboot: .* \(drive 0x81\)$/);
});

Deno.test("a failed fetch is the cause of the script's failure, and keeps its exit code", async () => {
  const refused = new BootError("http://h/x answered HTTP 401", ExitCode.Api);
  const fetch: ScriptFetcher = () => Promise.reject(refused);
  const err = await runScriptSource("#!ipxe\nchain http://h/x\n", {
    url: URL0,
    fetch,
  }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof IpxeError, String(err));
  assert.equal(err.cause, refused);
  assert.equal(err.exitCode, ExitCode.Api);
  assert.match(
    err.message,
    /line 2: chain http:\/\/h\/x: http:\/\/h\/x answered HTTP 401$/,
  );
  // Recovered from, it is no longer the failure: a later one is, with its code.
  const later = await runScriptSource(
    "#!ipxe\nchain http://h/x || echo retry later\ngoto nowhere\n",
    { url: URL0, fetch },
  ).then(() => undefined, (e: unknown) => e);
  assert.ok(later instanceof IpxeError);
  assert.equal(later.cause, undefined);
  assert.equal(later.exitCode, ExitCode.Script);
  // A plain error (not a BootError) is kept as the cause; the code stays 3.
  const plain = await run("#!ipxe\nchain http://h/missing.ipxe\n");
  assert.match(plain.error!, /HTTP 404$/);
});

Deno.test("chain --replace: tail call, the rest never runs, the old script is dropped", async () => {
  const { plan, lines } = await run(
    "#!ipxe\nchain --replace r.ipxe\necho not reached\n",
    {
      "http://h/dir/r.ipxe": "#!ipxe\necho replaced\nkernel k\nboot\n",
    },
  );
  assert.deepEqual(lines, ["replaced"]);
  assert.equal(plan?.kernel.url, "http://h/dir/k");
  assert.deepEqual(plan?.scripts, [URL0, "http://h/dir/r.ipxe"]);
  assert.deepEqual(plan?.initrds, []);
});

Deno.test("chain follows redirects: the final URL is the base", async () => {
  const { plan } = await run("#!ipxe\nchain http://h/short\n", {
    "http://other/long/path/s.ipxe": "#!ipxe\nkernel vmlinuz\nboot\n",
  }, { redirects: { "http://h/short": "http://other/long/path/s.ipxe" } });
  assert.equal(plan?.kernel.url, "http://other/long/path/vmlinuz");
});

Deno.test("imgfetch'd images are fetched when executed", async () => {
  const { plan, requested } = await run(
    "#!ipxe\nimgfetch --name menu http://h/m.ipxe\nchain menu\n",
    {
      "http://h/m.ipxe": "#!ipxe\nkernel http://h/k\nboot\n",
    },
  );
  assert.deepEqual(requested, ["http://h/m.ipxe"]);
  assert.equal(plan?.kernel.url, "http://h/k");
});

Deno.test("caps: chain recursion ends at the depth cap", async () => {
  const { error, requested } = await run("#!ipxe\nchain self.ipxe\n", {
    "http://h/dir/self.ipxe": "#!ipxe\nchain self.ipxe\n",
  }, { maxChainDepth: 5 });
  assert.match(error!, /exceeds the cap of 5 nested scripts/);
  assert.equal(requested.length, 5);
});

Deno.test("assisted boot script: quoted persistent kargs are kept verbatim", async () => {
  const initrd =
    "https://a.example/api/assisted-images/images/ID/pxe-initrd?arch=x86_64&image_token=TOKEN&version=4.18";
  const kernel =
    "https://a.example/api/assisted-images/boot-artifacts/kernel?arch=x86_64&version=4.18";
  const rootfs =
    "https://a.example/api/assisted-images/boot-artifacts/rootfs?arch=x86_64&version=4.18";
  const kargs =
    `initrd=initrd coreos.live.rootfs_url=${rootfs} random.trust_cpu=on rd.luks.options=discard ` +
    `ignition.firstboot ignition.platform.id=metal console=tty1 console=ttyS1,115200n8 ` +
    `coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8" p1 p2=argument p3="this is an argument"`;
  const { plan } = await run(
    `#!ipxe\ninitrd --name initrd ${initrd}\nkernel ${kernel} ${kargs}\nboot\n`,
  );
  assert.deepEqual(plan, {
    action: "kexec",
    kernel: { url: kernel, name: "kernel" },
    initrds: [{ url: initrd, name: "initrd" }],
    cmdline: kargs,
    scripts: [URL0],
  });
});

Deno.test("assisted redirect script: chain …&mac=${net0/mac} through runScript", async () => {
  const first =
    "http://svc/api/assisted-install/v2/infra-envs/ID/downloads/files?file_name=ipxe-script";
  const second = `${first}&mac=52:54:00:12:34:56`;
  const { fetch, requested } = fakeFetch({
    [first]: `#!ipxe\nchain ${first}&mac=\${net0/mac}\n`,
    [second]:
      "#!ipxe\ninitrd --name initrd http://img/pxe-initrd\nkernel http://img/kernel initrd=initrd\nboot\n",
  });
  const plan = kexecPlan(
    await runScript(first, {
      fetch,
      settings: { "net0/mac": "52:54:00:12:34:56" },
    }),
  );
  assert.deepEqual(requested, [first, second]);
  assert.equal(plan.kernel.url, "http://img/kernel");
  assert.deepEqual(plan.scripts, [first, second]);
  assert.deepEqual(plan.initrds, [{
    url: "http://img/pxe-initrd",
    name: "initrd",
  }]);
});

Deno.test("runScript: fetch failures and non-scripts", async () => {
  const { fetch } = fakeFetch({ "http://h/k": "\x7fELF" });
  await assert.rejects(
    runScript("http://h/none", { fetch }),
    (e) =>
      e instanceof IpxeError &&
      e.message === "Script http://h/none: HTTP 404" && e.exitCode === 3,
  );
  await assert.rejects(
    runScript("http://h/k", { fetch }),
    /Script http:\/\/h\/k is not an iPXE script/,
  );
});

Deno.test("caps: chain --replace and retry loops end at the fetch cap", async () => {
  const { fetch, requested } = fakeFetch({
    "http://h/dir/self.ipxe": "#!ipxe\nchain --replace self.ipxe\n",
  });
  await assert.rejects(
    runScriptSource("#!ipxe\nchain --replace self.ipxe\n", {
      url: URL0,
      fetch,
      maxFetches: 50,
    }),
    (e) =>
      e instanceof IpxeError &&
      /more than 50 scripts or images fetched/.test(e.message),
  );
  assert.equal(requested.length, 50);
  const retry = fakeFetch({});
  await assert.rejects(
    runScriptSource("#!ipxe\n:retry\nchain http://h/missing || goto retry\n", {
      url: URL0,
      fetch: retry.fetch,
    }),
    /line 3: more than 1000 scripts or images fetched/,
  );
  assert.equal(retry.requested.length, 1000);
});

Deno.test("caps: an oversized chained script fails the chain", async () => {
  const big = `#!ipxe\n${"echo x\n".repeat(200)}`;
  const { fetch } = fakeFetch({ "http://h/dir/big.ipxe": big });
  await assert.rejects(
    runScriptSource("#!ipxe\nchain big.ipxe\n", {
      url: URL0,
      fetch,
      maxScriptBytes: 1000,
    }),
    /line 2: chain http:\/\/h\/dir\/big.ipxe: script is larger than 1000 bytes/,
  );
});

Deno.test("an empty URI (unset setting) fails instead of naming the script itself", async () => {
  const { error } = await run("#!ipxe\nkernel ${memdisk} iso raw\nboot\n");
  assert.match(
    error!,
    /line 2: kernel "" is not a URI \(an unset setting\?\)$/,
  );
});

Deno.test("aliases and --timeout: module/imgfetch, imgload/imgselect, imgexec; timeout reaches the fetcher", async () => {
  const seen: Array<number | undefined> = [];
  const plan = kexecPlan(
    await runScriptSource(
      [
        "#!ipxe",
        "module http://h/m1",
        "imgfetch http://h/m2",
        "imgload http://h/k1",
        "imgselect http://h/k2 two",
        "imgexec --timeout 250 http://h/s.ipxe",
      ].join("\n"),
      {
        url: URL0,
        fetch: (url, options) => {
          seen.push(options.timeoutMs);
          return Promise.resolve({
            url,
            body: new TextEncoder().encode("#!ipxe\nboot\n"),
          });
        },
      },
    ),
  );
  assert.deepEqual(seen, [250]);
  assert.equal(plan.kernel.url, "http://h/k2");
  assert.equal(plan.cmdline, "two");
  assert.deepEqual(initrdUrls(plan), [
    "http://h/m1",
    "http://h/m2",
    "http://h/k1",
  ]);
});

Deno.test("cpio wrap: mode= and mkdir= count only where an argument starts, never inside another word", async () => {
  const { plan } = await run(
    [
      "#!ipxe",
      "initrd http://h/a /etc/automode=0700 mode=0640",
      "initrd http://h/b /etc/x remode=0777 nomkdir=3",
      "initrd http://h/c /etc/y xmode=0777 mode=0600 amkdir=9 mkdir=1",
      "kernel http://h/k",
      "boot",
    ].join("\n"),
  );
  assert.deepEqual(plan?.initrds.map((i) => i.cpio), [
    { path: "/etc/automode=0700", mode: 0o640, mkdir: 0 },
    { path: "/etc/x", mode: 0o644, mkdir: 0 },
    { path: "/etc/y", mode: 0o600, mkdir: 1 },
  ]);
});
