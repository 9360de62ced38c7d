import assert from "node:assert/strict";
import {
  basename,
  dirname,
  imageNameFromUri,
  parseUri,
  resolvePath,
  resolveUri,
} from "../../lib/ipxe/uri.ts";

Deno.test("resolveUri follows the iPXE uri_test.c table", () => {
  const base = "http://boot.ipxe.org/demo/boot.php?vendor=10ec&device=8139";
  assert.equal(
    resolveUri(base, "initrd.img"),
    "http://boot.ipxe.org/demo/initrd.img",
  );
  assert.equal(
    resolveUri(`${base}#test`, "/demo/vmlinuz"),
    "http://boot.ipxe.org/demo/vmlinuz",
  );
  assert.equal(
    resolveUri(
      "http://10.253.253.1/test.pl?mac=02-00-69-33-00-01",
      "?mac=00-1f-16-bc-fe-2f",
    ),
    "http://10.253.253.1/test.pl?mac=00-1f-16-bc-fe-2f",
  );
  assert.equal(
    resolveUri("/var/lib/tftpboot/pxe/pxelinux.0", "./../ipxe/undionly.kpxe"),
    "/var/lib/tftpboot/ipxe/undionly.kpxe",
  );
  assert.equal(
    resolveUri("/var/lib/tftpboot/ipxe.pxe", "../../../../../../../foo"),
    "/foo",
  );
});

Deno.test("resolveUri: empty, dot, absolute and query-only references", () => {
  assert.equal(resolveUri("http://h/a/b?q=1", ""), "http://h/a/b?q=1");
  assert.equal(resolveUri("http://h/a/b?q=1", "."), "http://h/a/");
  assert.equal(resolveUri("http://h/a/b", "https://o/x"), "https://o/x");
  assert.equal(resolveUri("http://h/a/b", "tftp://o/x"), "tftp://o/x");
  assert.equal(
    resolveUri("http://h:8080/boot.ipxe", "ipxe?uuid=&mac=1"),
    "http://h:8080/ipxe?uuid=&mac=1",
  );
  assert.equal(resolveUri("http://h", "x"), "http://h/x");
  assert.equal(resolveUri(undefined, "x/y"), "x/y");
  assert.equal(
    resolveUri("file:///srv/boot.ipxe", "vmlinuz"),
    "file:///srv/vmlinuz",
  );
  assert.equal(
    resolveUri("http://u:p@h:81/a/b?q#f", "c"),
    "http://u:p@h:81/a/c",
  );
  assert.equal(resolveUri("http://h/a/b?q#f", "#g"), "http://h/a/b?q#g");
});

Deno.test("resolveUri emulates iPXE's deviations from RFC 3986", () => {
  // Only leading ./ and ../ are processed.
  assert.equal(resolveUri("http://h/a/b/c", "x/../y"), "http://h/a/b/x/../y");
  // //host/x without a scheme is a path on the base host.
  assert.equal(resolveUri("http://h/a/b", "//other/x"), "http://h//other/x");
  // A scheme holds only letters, - and _: "h2:x" is a relative path.
  assert.equal(resolveUri("http://h/a/b", "h2:x"), "http://h/a/h2:x");
  // The fragment is cut at the first raw #.
  assert.deepEqual(parseUri("http://h/a#b#c").fragment, "b#c");
  assert.equal(resolveUri("http://h/a/b", "c%23d"), "http://h/a/c%23d");
});

Deno.test("dirname, basename and image names", () => {
  assert.equal(dirname("/a/b"), "/a");
  assert.equal(dirname("/a"), "/");
  assert.equal(dirname("a"), ".");
  assert.equal(basename("/a/b"), "b");
  assert.equal(basename("/a/"), "");
  assert.equal(resolvePath("/a/b", ".."), "/");
  assert.equal(
    imageNameFromUri("http://h/x/pxe-initrd?arch=x86_64&version=4.18"),
    "pxe-initrd",
  );
  assert.equal(
    imageNameFromUri("nfs://10.0.0.1/Ubuntu/casper/vmlinuz"),
    "vmlinuz",
  );
});
