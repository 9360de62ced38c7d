/**
 * `Retry-After` (RFC 9110 §10.2.3), read strictly: delay-seconds (digits
 * only) or an HTTP-date in one of its three forms. Anything else (a negative
 * or fractional number, a list, a date the runtime's lenient parser would
 * guess at) is no value at all, and the caller's own backoff applies. How
 * long a value is honoured is the retry policy's (`busy.ts` caps it).
 *
 * @example
 * ```ts
 * parseRetryAfter("120"); // 120000
 * parseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", Date.UTC(1994, 10, 6, 8, 49, 30)); // 7000
 * parseRetryAfter("-1"); // undefined
 * ```
 *
 * @module
 */

const MONTHS = [
  "jan",
  "feb",
  "mar",
  "apr",
  "may",
  "jun",
  "jul",
  "aug",
  "sep",
  "oct",
  "nov",
  "dec",
];
const DAY = "(?:mon|tue|wed|thu|fri|sat|sun)";
const LONG_DAY = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)";
const MONTH = `(${MONTHS.join("|")})`;
const TIME = "(\\d{2}):(\\d{2}):(\\d{2})";
/** `Sun, 06 Nov 1994 08:49:37 GMT` (the preferred form). */
const IMF_FIXDATE = new RegExp(
  `^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`,
  "i",
);
/** `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete RFC 850). */
const RFC850_DATE = new RegExp(
  `^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`,
  "i",
);
/** `Sun Nov  6 08:49:37 1994` (obsolete asctime). */
const ASCTIME_DATE = new RegExp(
  `^${DAY} ${MONTH} ( \\d|\\d{2}) ${TIME} (\\d{4})$`,
  "i",
);

/** Day, month name, year, hours, minutes, seconds of an HTTP-date in any of its forms. */
function dateParts(
  text: string,
  now: number,
): [string, string, number, string, string, string] | undefined {
  const fix = IMF_FIXDATE.exec(text);
  if (fix) return [fix[1], fix[2], Number(fix[3]), fix[4], fix[5], fix[6]];
  const rfc850 = RFC850_DATE.exec(text);
  if (rfc850) {
    const thisYear = new Date(now).getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(rfc850[3]);
    if (year > thisYear + 50) year -= 100;
    return [rfc850[1], rfc850[2], year, rfc850[4], rfc850[5], rfc850[6]];
  }
  const asc = ASCTIME_DATE.exec(text);
  if (asc) {
    return [asc[2].trim(), asc[1], Number(asc[6]), asc[3], asc[4], asc[5]];
  }
  return undefined;
}

/**
 * Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime) into epoch
 * milliseconds, or undefined when `value` is none of them or names no real
 * time (31 February, 25:00). A two-digit RFC 850 year more than 50 years
 * ahead of `now` is in the past century (RFC 9110 §5.6.7).
 */
export function parseHttpDate(
  value: string,
  now = Date.now(),
): number | undefined {
  const parts = dateParts(value.trim(), now);
  if (!parts) return undefined;
  const [day, month, year, hours, minutes, seconds] = parts;
  const monthIndex = MONTHS.indexOf(month.toLowerCase());
  const at = Date.UTC(
    year,
    monthIndex,
    Number(day),
    Number(hours),
    Number(minutes),
    Number(seconds),
  );
  const check = new Date(at);
  // Date.UTC rolls 31 February over into March: such a date names no time.
  if (
    check.getUTCDate() !== Number(day) ||
    check.getUTCMonth() !== monthIndex ||
    check.getUTCHours() !== Number(hours) ||
    check.getUTCMinutes() !== Number(minutes) ||
    check.getUTCSeconds() !== Number(seconds)
  ) {
    return undefined;
  }
  return at;
}

/**
 * Parses `Retry-After` into milliseconds from `now`: delay-seconds (digits
 * only; a value too large to count is {@linkcode Number.MAX_SAFE_INTEGER})
 * or an HTTP-date (a date in the past is 0). Undefined when there is no
 * header or it is not one of those (negative, fractional, a list, garbage).
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    return Math.min(Number(text) * 1000, Number.MAX_SAFE_INTEGER);
  }
  const at = parseHttpDate(text, now);
  return at === undefined ? undefined : Math.max(0, at - now);
}
