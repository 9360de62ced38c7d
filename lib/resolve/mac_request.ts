/**
 * A script request for one MAC (`…/downloads/files?file_name=ipxe-script&mac=…`)
 * and the answer assisted-service's `canServeHostIPXEScript` gives when more
 * than one host of the InfraEnv has that MAC in its inventory: 500 "IPXE
 * booting skipped. Unexpected number of hosts". The script client then asks
 * again without the MAC, as iPXE given the plain script URL would. (Its 404
 * for an installed host, "boot the local disk", is read in `infraenv.ts`.)
 *
 * @module
 */

/** True when `url` is an assisted script request for one MAC (the one that can answer "boot from disk"). */
export function isMacScriptRequest(url: string): boolean {
  try {
    const u = new URL(url);
    return u.pathname.endsWith("/downloads/files") &&
      u.searchParams.get("file_name") === "ipxe-script" &&
      u.searchParams.has("mac");
  } catch {
    return false;
  }
}

/** The `reason` of an assisted-service error body (`{"kind":"Error","reason":…}`), or undefined. */
function serviceReason(body: string): string | undefined {
  try {
    const json = JSON.parse(body);
    return json && typeof json === "object" && typeof json.reason === "string"
      ? json.reason
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * True for the service's answer to a MAC that more than one host of the
 * InfraEnv has in its inventory: HTTP 500, reason "IPXE booting skipped.
 * Unexpected number of hosts N with mac M" (`canServeHostIPXEScript`). Its
 * other 500s (a failed database lookup, "IPXE booting skipped. InfraEnv …:
 * Host with mac …: <error>"; a script it could not render), a proxy's error
 * page, or this text in anything but the service's error shape are not.
 */
export function isAmbiguousMacAnswer(status: number, body: string): boolean {
  const reason = status === 500 ? serviceReason(body) : undefined;
  return reason !== undefined &&
    /^IPXE booting skipped\. Unexpected number of hosts \d+ with mac /.test(
      reason,
    );
}

/** `url` without its `mac` query parameter(s); every other byte stays (a signed URL stays signed). */
export function withoutMac(url: string): string {
  const hash = url.indexOf("#");
  const fragment = hash < 0 ? "" : url.slice(hash);
  const rest = hash < 0 ? url : url.slice(0, hash);
  const q = rest.indexOf("?");
  if (q < 0) return url;
  const name = (part: string) => {
    const raw = part.split("=")[0].replaceAll("+", " ");
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  };
  const kept = rest.slice(q + 1).split("&").filter((p) => name(p) !== "mac");
  return rest.slice(0, q) + (kept.length ? `?${kept.join("&")}` : "") +
    fragment;
}
