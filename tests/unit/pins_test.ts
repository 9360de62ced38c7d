/**
 * Pins fail closed: one URL spelled two ways is one URL, a pin that matches
 * nothing and pins that disagree are usage errors.
 */
import assert from "node:assert/strict";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { artifactPin, checkPins, normalizeUrl } from "../../lib/stage/pins.ts";
import type { KexecPlan } from "../../lib/plan.ts";

const A = "a".repeat(64);
const B = "b".repeat(64);

function usage(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof BootError, String(err));
    assert.equal(err.exitCode, ExitCode.Usage);
    assert.match(err.message, pattern);
    return true;
  };
}

function plan(kernel: string, initrds: string[] = []): KexecPlan {
  return {
    action: "kexec",
    kernel: { url: kernel, name: "k" },
    initrds: initrds.map((url) => ({ url, name: "i" })),
    cmdline: "",
    scripts: [],
  };
}

Deno.test("normalizeUrl: spellings of one resource compare equal", () => {
  const same = [
    "http://h/i",
    "HTTP://H/i",
    "http://h:80/i",
    "http://h/./i",
    "http://h/a/../i",
    "http://h/a/b/../../i",
    "http://h/a/%2e%2E/i",
    "http://h/%69",
    "http://h/i#fragment",
    "http://h/i?",
    "http://h//a/../../i",
  ];
  for (const url of same) assert.equal(normalizeUrl(url), "http://h/i", url);
  assert.equal(normalizeUrl("https://h:443/x"), "https://h/x");
  assert.equal(normalizeUrl("http://h/a%2fb"), "http://h/a%2Fb");
  assert.equal(normalizeUrl("http://h/a%2Fb"), "http://h/a%2Fb");
  assert.equal(normalizeUrl("http://h/%7euser"), "http://h/~user");
  assert.equal(normalizeUrl("http://h/i?x=%7e&y=%2f"), "http://h/i?x=~&y=%2F");
  assert.equal(normalizeUrl("file:///srv/./x"), "file:///srv/x");
  assert.equal(normalizeUrl("file://localhost/srv/x"), "file:///srv/x");
  // Different resources stay different.
  assert.notEqual(normalizeUrl("http://h/i"), normalizeUrl("https://h/i"));
  assert.notEqual(normalizeUrl("http://h/i"), normalizeUrl("http://h:8080/i"));
  assert.notEqual(normalizeUrl("http://h/a%2Fb"), normalizeUrl("http://h/a/b"));
  assert.notEqual(normalizeUrl("http://h/i?a=1"), normalizeUrl("http://h/i"));
  assert.equal(normalizeUrl("not a url"), undefined);
});

Deno.test("artifactPin: the script's spelling and the user's meet in normal form", () => {
  const pins = { "http://h/i": A };
  for (
    const url of [
      "http://h/i",
      "HTTP://h/i",
      "http://H:80/./i",
      "http://h/a/../i",
      "http://h/%69",
    ]
  ) {
    assert.equal(artifactPin(url, pins), A, url);
  }
  // The other way round: the user spelled it oddly, the script plainly.
  assert.equal(artifactPin("http://h/i", { "HTTP://h/x/../i": A }), A);
  // A key without a query matches any query; one with a query only itself.
  assert.equal(artifactPin("http://h/i?v=1", pins), A);
  assert.equal(
    artifactPin("http://h/i?v=1", { "http://h/i?v=2": A }),
    undefined,
  );
  assert.equal(artifactPin("http://h/other", pins), undefined);
  // Two keys for one image: the same digest is fine, different ones are not.
  assert.equal(
    artifactPin("http://h/i?v=1", { "http://h/i": A, "http://h/i?v=1": A }),
    A,
  );
  assert.throws(
    () =>
      artifactPin("http://h/i?v=1", { "http://h/i": A, "http://h/i?v=1": B }),
    usage(/both pin http:\/\/h\/i\?v=1, with different digests/),
  );
});

Deno.test("checkPins: a pin that matches nothing, or that contradicts the kernel pin, is a usage error", () => {
  const p = plan("http://h/a/../vmlinuz", ["http://h/initrd.img?x=1"]);
  checkPins(p, {
    artifactSha256: { "http://h/vmlinuz": A, "http://h/initrd.img": B },
  });
  checkPins(p, {});
  assert.throws(
    () => checkPins(p, { artifactSha256: { "http://h/vmlinux": A } }),
    usage(/--artifact-sha256 http:\/\/h\/vmlinux matches no kernel or initrd/),
  );
  assert.throws(
    () =>
      checkPins(p, {
        artifactSha256: { "http://h/initrd.img?x=2": A },
      }),
    usage(/matches no kernel or initrd/),
  );
  assert.throws(
    () =>
      checkPins(p, {
        artifactSha256: { "http://h/vmlinuz": A },
        kernelSha256: B,
      }),
    usage(/--kernel-sha256 and the --artifact-sha256 .* disagree/),
  );
  checkPins(p, { artifactSha256: { "http://h/vmlinuz": A }, kernelSha256: A });
  assert.throws(
    () =>
      checkPins(p, {
        artifactSha256: { "http://h/initrd.img": A, "HTTP://h/initrd.img": B },
      }),
    usage(/different digests/),
  );
  // Credentials in a pin's URL are not printed.
  assert.throws(
    () => checkPins(p, { artifactSha256: { "http://u:pw@h/x?api_key=k": A } }),
    (err: unknown) => {
      assert.ok(err instanceof BootError);
      assert.ok(!/pw|=k\b/.test(err.message), err.message);
      return true;
    },
  );
});

Deno.test("normalizeUrl: credentials are part of the URL, a URL without a host keeps none, a non-URL has no normal form", () => {
  assert.equal(normalizeUrl("http://%75:p%41ss@h/i"), "http://u:pAss@h/i");
  assert.equal(normalizeUrl("http://u@h/i"), "http://u@h/i");
  assert.notEqual(normalizeUrl("http://u@h/i"), normalizeUrl("http://h/i"));
  assert.equal(normalizeUrl("file:///boot/vmlinuz"), "file:///boot/vmlinuz");
  assert.equal(normalizeUrl("urn:ipxe:k"), "urn:ipxe:k");
  assert.equal(normalizeUrl("vmlinuz"), undefined);
  // A pin or an image that is not a URL matches nothing: fail closed.
  assert.equal(artifactPin("http://h/i", { "vmlinuz": A }), undefined);
  assert.equal(artifactPin("vmlinuz", { "http://h/vmlinuz": A }), undefined);
  assert.throws(
    () =>
      checkPins(plan("http://h/vmlinuz"), { artifactSha256: { vmlinuz: A } }),
    usage(/--artifact-sha256 vmlinuz matches no kernel or initrd/),
  );
});
