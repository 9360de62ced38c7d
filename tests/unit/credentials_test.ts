/**
 * What counts as a credential in an URL: the edges of the query (a fragment,
 * a path parameter, a query-only reference, a name without a value), user
 * info with only a password, and names with a stray percent sign.
 */

import assert from "node:assert/strict";
import {
  hasCredential,
  isCredentialParam,
  paramName,
} from "../../lib/credentials.ts";

Deno.test("hasCredential: only the query before the fragment counts, as servers split it", () => {
  // A fragment is never sent: a `?token=` inside it is no credential.
  assert.equal(hasCredential("https://h/k#x?token=v"), false);
  assert.equal(hasCredential("https://h/k#?api_key=v&x=1"), false);
  // A `;name=` in the path, with no query, is a path parameter, not a query one.
  assert.equal(hasCredential("https://h/a;token=v"), false);
  assert.equal(hasCredential("https://h/a;token=v?x=1"), false);
  // A name with no value, last in the URL, with and without a fragment.
  assert.equal(hasCredential("https://h/k?token"), true);
  assert.equal(hasCredential("https://h/k?x=1&api_key"), true);
  assert.equal(hasCredential("https://h/k?x=1&api_key#top"), true);
  // A query-only reference (relative to the script's URL).
  assert.equal(hasCredential("?image_token=v"), true);
  assert.equal(hasCredential("?arch=x86_64"), false);
});

Deno.test("hasCredential: user info is a credential even with an empty user name", () => {
  assert.equal(hasCredential("https://:secret@h/k"), true);
  assert.equal(hasCredential("https://user@h/k"), true);
  assert.equal(hasCredential("https://h/k"), false);
  // Something that is no URL at all and carries no query: no credential.
  assert.equal(hasCredential("not a url"), false);
  assert.equal(hasCredential(""), false);
});

Deno.test("paramName: a stray percent sign keeps the escapes that can be decoded", () => {
  assert.equal(paramName("api%5Fkey"), "api_key");
  assert.equal(paramName("API+KEY"), "api key");
  // decodeURIComponent refuses the whole name; each valid escape still decodes.
  assert.equal(paramName("api%5Fkey%"), "api_key%");
  assert.equal(paramName("%41%zz"), "a%zz");
  assert.equal(paramName("%4"), "%4");
  assert.ok(isCredentialParam("%54OKEN"));
  assert.ok(!isCredentialParam("token%"));
});

Deno.test("isCredentialParam: every parameter docs/security.md names is a credential, in any case; lookalikes are not", () => {
  const documented = [
    "api_key",
    "image_token",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-Credential",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "sig",
    "signature",
  ];
  for (const name of documented) {
    assert.ok(isCredentialParam(name), name);
    assert.ok(isCredentialParam(name.toUpperCase()), name);
    assert.ok(hasCredential(`https://h/k?arch=x86_64&${name}=v`), name);
  }
  for (const name of ["", "key", "tokens", "signatures", "x-amz-date"]) {
    assert.equal(isCredentialParam(name), false, name);
  }
  // A fragment starting the reference hides all of it, as one later does.
  assert.equal(hasCredential("#?api_key=v"), false);
});
