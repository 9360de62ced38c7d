/**
 * Local files only when the user asked for them: a script fetched over the
 * network can never name a `file:` URL (kernel, initrd, module, imgfetch,
 * chain, imgexec, boot…), however it spells it; a script read from a file
 * may, and relative URLs resolve against the script's own base.
 */
import assert from "node:assert/strict";
import { IpxeError, runScriptSource } from "../../lib/ipxe/mod.ts";
import type { KexecPlan } from "../../lib/plan.ts";
import { kexecPlan } from "../test_util.ts";

/** Runs `source` as if fetched from `url`; `files` are what the fetcher serves. */
async function run(
  url: string,
  source: string,
  files: Record<string, string> = {},
): Promise<{ plan?: KexecPlan; error?: IpxeError; requested: string[] }> {
  const requested: string[] = [];
  try {
    const plan = await runScriptSource(source, {
      url,
      fetch: (u, options) => {
        requested.push(u);
        const body = files[u];
        if (body === undefined) return Promise.reject(new Error("HTTP 404"));
        return Promise.resolve({
          url: u,
          body: new TextEncoder().encode(body).subarray(
            0,
            options.maxBytes + 1,
          ),
        });
      },
    });
    return { plan: kexecPlan(plan), requested };
  } catch (err) {
    assert.ok(err instanceof IpxeError, String(err));
    return { error: err, requested };
  }
}

const REMOTE = "http://h/dir/boot.ipxe";
const LOCAL = "file:///srv/boot/boot.ipxe";

Deno.test("ipxe: a remote script naming a local file is fatal, whatever the command or spelling", async () => {
  const lines = [
    "initrd file:///path/to/offline-token /etc/x",
    "initrd file:///proc/self/environ",
    "kernel file:///boot/vmlinuz",
    "module file:///etc/shadow",
    "imgfetch --name x file:///etc/shadow",
    "chain file:///srv/other.ipxe",
    "imgexec file:///srv/other.ipxe",
    "boot file:///boot/vmlinuz",
    "initrd FILE:///etc/shadow",
    "initrd File:/etc/shadow",
    "initrd file://localhost/etc/shadow",
    "set f file ||\ninitrd ${f}:///etc/shadow",
    "set s:hex 66:69:6c:65 ||\ninitrd ${s:string}:///etc/shadow",
  ];
  for (const line of lines) {
    for (const handled of ["", " || goto failed"]) {
      const script =
        `#!ipxe\n${line}${handled}\nkernel http://h/k\nboot\n:failed\nkernel http://h/k\nboot\n`;
      const r = await run(REMOTE, script);
      assert.ok(r.error, `refused: ${line}${handled}`);
      assert.equal(r.error.exitCode, 3);
      assert.match(
        r.error.message,
        /^Script http:\/\/h\/dir\/boot\.ipxe line \d+: .*: a script fetched over the network cannot name local files/,
      );
      assert.deepEqual(r.requested, [], "nothing local was ever fetched");
    }
  }
});

Deno.test("ipxe: a chained remote script cannot name local files either, even under a local first script", async () => {
  const r = await run(
    LOCAL,
    "#!ipxe\nchain http://h/next.ipxe\n",
    {
      "http://h/next.ipxe":
        "#!ipxe\ninitrd file:///etc/shadow\nkernel http://h/k\nboot\n",
    },
  );
  assert.ok(r.error);
  assert.match(
    r.error.message,
    /^Script http:\/\/h\/next\.ipxe line 2: .*cannot name local files/,
  );
  // The same through a redirect: the fetched script's final URL counts.
  const https = await run(REMOTE, "#!ipxe\nchain https://h/s.ipxe\n", {
    "https://h/s.ipxe": "#!ipxe\nkernel file:///boot/vmlinuz\nboot\n",
  });
  assert.ok(https.error);
});

Deno.test("ipxe: relative URLs of a remote script stay remote; a local script may name local and remote files", async () => {
  const remote = await run(
    REMOTE,
    "#!ipxe\ninitrd ../etc/passwd\ninitrd //h2/x\ninitrd file\nkernel /vmlinuz\nboot\n",
  );
  assert.equal(remote.error, undefined);
  assert.deepEqual(remote.plan!.initrds.map((i) => i.url), [
    "http://h/etc/passwd",
    "http://h//h2/x",
    "http://h/dir/file",
  ]);
  const local = await run(
    LOCAL,
    "#!ipxe\ninitrd initrd.img\ninitrd file:///srv/extra.img /etc/extra\ninitrd http://h/remote.img\nkernel ../vmlinuz\nboot\n",
  );
  assert.equal(local.error, undefined);
  assert.equal(local.plan!.kernel.url, "file:///srv/vmlinuz");
  assert.deepEqual(local.plan!.initrds.map((i) => i.url), [
    "file:///srv/boot/initrd.img",
    "file:///srv/extra.img",
    "http://h/remote.img",
  ]);
  // A local script chaining a local one: still local.
  const chained = await run(LOCAL, "#!ipxe\nchain next.ipxe\n", {
    "file:///srv/boot/next.ipxe":
      "#!ipxe\ninitrd file:///srv/x.img\nkernel vmlinuz\nboot\n",
  });
  assert.equal(chained.error, undefined);
  assert.equal(chained.plan!.kernel.url, "file:///srv/boot/vmlinuz");
});
