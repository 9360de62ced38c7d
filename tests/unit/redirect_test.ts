/**
 * One redirect hop under the policy (pure): http or https only, never https
 * → http unless `--insecure`, never a request body sent again, a malformed
 * Location is a refusal that is never retried.
 */
import assert from "node:assert/strict";
import {
  isHeaderToken,
  isTransient,
  PolicyError,
  redirectTarget,
} from "../../lib/http/request.ts";

function refused(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof PolicyError, String(err));
    assert.ok(!isTransient(err), "a refusal is never retried");
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("redirectTarget: relative and absolute http(s) targets are followed", () => {
  assert.equal(redirectTarget("http://h/a/b", "c").href, "http://h/a/c");
  assert.equal(redirectTarget("http://h/a", "//o/x").href, "http://o/x");
  assert.equal(redirectTarget("http://h/a", "https://o/x").href, "https://o/x");
  assert.equal(redirectTarget("https://h/a", "/b").href, "https://h/b");
  assert.equal(
    redirectTarget("https://h/a", "http://o/x", { insecure: true }).href,
    "http://o/x",
  );
});

Deno.test("redirectTarget: another scheme, a downgrade, a malformed Location or a resent body are refused", () => {
  for (
    const location of [
      "file:///etc/passwd",
      "FILE:///proc/self/environ",
      "data:text/plain,#!ipxe",
      "ftp://h/x",
      "blob:http://h/x",
      "javascript:alert(1)",
    ]
  ) {
    assert.throws(
      () => redirectTarget("http://h/a", location, { status: 302 }),
      refused(
        /^http:\/\/h\/a: HTTP 302 redirects to .*, refused \(redirects lead to http or https only\)$/,
      ),
      location,
    );
  }
  assert.throws(
    () => redirectTarget("https://h/a", "http://h/a"),
    refused(
      /redirects from https to plain http \(http:\/\/h\/a\), refused \(--insecure allows it\)/,
    ),
  );
  // A scheme-relative target keeps https.
  assert.equal(redirectTarget("https://h/a", "//o/x").href, "https://o/x");
  for (
    const location of ["http://[::1", "http://exa mple/", "https://:443/x"]
  ) {
    assert.throws(
      () => redirectTarget("http://h/a", location, { status: 301 }),
      refused(/^http:\/\/h\/a: HTTP 301 with a malformed Location "/),
      location,
    );
  }
  assert.throws(
    () =>
      redirectTarget("https://sso/token", "https://elsewhere/token", {
        status: 307,
        resendsBody: true,
      }),
    refused(
      /HTTP 307 would send the request body again to https:\/\/elsewhere\/token, not followed/,
    ),
  );
  // Credentials in the hops never reach the message.
  assert.throws(
    () => redirectTarget("http://u:pw@h/a?api_key=k", "file:///x"),
    (err: unknown) => {
      assert.ok(err instanceof PolicyError);
      assert.ok(!/pw|api_key=k/.test(err.message), err.message);
      return true;
    },
  );
});

Deno.test("isHeaderToken: printable ASCII without spaces only", () => {
  assert.ok(isHeaderToken("eyJhbGciOiJSUzI1NiJ9.eyJ-_~+/=.sig"));
  for (
    const bad of [
      "",
      "a b",
      "a\tb",
      "a\x00",
      "a\x7f",
      "tök",
      "тoken",
      "a\u2028",
    ]
  ) {
    assert.ok(!isHeaderToken(bad), JSON.stringify(bad));
  }
});

Deno.test("redirectTarget: a huge Location is cut to 200 characters in the message", () => {
  const long = "x".repeat(5000);
  for (
    const location of [`http://[${long}`, `ftp://h/${long}`]
  ) {
    assert.throws(
      () => redirectTarget("http://h/a", location),
      (err: unknown) => {
        assert.ok(err instanceof PolicyError, String(err));
        assert.ok(err.message.length < 400, `${err.message.length} characters`);
        return true;
      },
    );
  }
});
