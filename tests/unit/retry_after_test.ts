/**
 * HTTP-dates as `Retry-After` and `Last-Modified` carry them: every month of
 * every form, the RFC 850 century boundary, and surrounding blanks.
 */

import assert from "node:assert/strict";
import { parseHttpDate, parseRetryAfter } from "../../lib/http/retry_after.ts";

const MONTHS = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];

Deno.test("parseHttpDate: every month, in each of the three forms", () => {
  MONTHS.forEach((month, index) => {
    const expected = Date.UTC(2026, index, 9, 10, 11, 12);
    const weekday = new Date(expected).toUTCString().slice(0, 3);
    const long = new Date(expected).toLocaleDateString("en-US", {
      weekday: "long",
      timeZone: "UTC",
    });
    const now = Date.UTC(2026, 0, 1);
    for (
      const text of [
        `${weekday}, 09 ${month} 2026 10:11:12 GMT`,
        `${long}, 09-${month}-26 10:11:12 GMT`,
        `${weekday} ${month}  9 10:11:12 2026`,
        `${weekday} ${month.toUpperCase()} 09 10:11:12 2026`,
      ]
    ) {
      assert.equal(parseHttpDate(text, now), expected, text);
    }
  });
});

Deno.test("parseHttpDate: a two-digit year exactly 50 years ahead is still ahead", () => {
  const in2026 = Date.UTC(2026, 5, 1);
  const year = (text: string) =>
    new Date(parseHttpDate(text, in2026)!).getUTCFullYear();
  assert.equal(year("Friday, 01-Jan-76 00:00:00 GMT"), 2076);
  assert.equal(year("Tuesday, 01-Jan-77 00:00:00 GMT"), 1977);
  assert.equal(year("Thursday, 01-Jan-26 00:00:00 GMT"), 2026);
});

Deno.test("parseHttpDate and parseRetryAfter: blanks around the value are not part of it", () => {
  const at = Date.UTC(1994, 10, 6, 8, 49, 37);
  assert.equal(parseHttpDate("  Sun, 06 Nov 1994 08:49:37 GMT\t", 0), at);
  assert.equal(parseHttpDate(" Sun Nov  6 08:49:37 1994 ", 0), at);
  assert.equal(parseRetryAfter(" 12 ", 0), 12_000);
  assert.equal(parseRetryAfter("\tSun, 06 Nov 1994 08:49:47 GMT ", at), 10_000);
});
