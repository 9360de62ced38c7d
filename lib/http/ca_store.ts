/**
 * The system trust store, read by the bootloader itself.
 *
 * Deno verifies TLS against the Mozilla roots built into it; the operating
 * system's store (where an administrator puts a private CA) counts only when
 * the caller sets `DENO_TLS_CA_STORE=system`, and a compiled binary does not
 * read that variable the same way. So the bootloader reads the system bundle
 * itself and hands its certificates to `Deno.createHttpClient`, whose
 * `caCerts` are trusted in addition to the built-in roots: the same trust in
 * `deno run`, in the compiled binary, under the unit and in the initramfs.
 *
 * Where the store is, like OpenSSL and Go look for it: `SSL_CERT_FILE` (a
 * bundle) instead of the well-known bundles, `SSL_CERT_DIR` (directories of
 * PEM files, `:`-separated) in addition; otherwise the first bundle of
 * {@linkcode SYSTEM_CA_FILES} that exists.
 *
 * @module
 */

import { log } from "../log.ts";

/** Well-known system CA bundles, the first one found is read. */
export const SYSTEM_CA_FILES: readonly string[] = [
  // Debian, Ubuntu, Arch, Gentoo, Alpine (ca-certificates)
  "/etc/ssl/certs/ca-certificates.crt",
  // Fedora, RHEL, CentOS, Fedora CoreOS (a link into ca-trust/extracted)
  "/etc/pki/tls/certs/ca-bundle.crt",
  // openSUSE
  "/etc/ssl/ca-bundle.pem",
  // RHEL, Fedora (the file the link above points to)
  "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
  // Alpine, BSDs
  "/etc/ssl/cert.pem",
];

const PEM_CERTIFICATE =
  /-----BEGIN CERTIFICATE-----\r?\n[\s\S]*?-----END CERTIFICATE-----/g;

/** The PEM certificates of `text`, one string each (other blocks are ignored). */
export function splitPem(text: string): string[] {
  return [...text.matchAll(PEM_CERTIFICATE)].map((m) => m[0] + "\n");
}

/** What {@linkcode readSystemStore} found. */
export interface SystemStore {
  /** The files and directories read. */
  sources: string[];
  /** Their PEM certificates, one string each. */
  certificates: string[];
}

/** Options for {@linkcode readSystemStore} (tests inject the environment and the file system). */
export interface SystemStoreOptions {
  /** Environment (default: `SSL_CERT_FILE` and `SSL_CERT_DIR` of `Deno.env`). */
  env?: { SSL_CERT_FILE?: string; SSL_CERT_DIR?: string };
  /** Bundles looked for when `SSL_CERT_FILE` is not set (default {@linkcode SYSTEM_CA_FILES}). */
  files?: readonly string[];
  /** Reads a text file (default `Deno.readTextFileSync`). */
  readTextFile?: (path: string) => string;
  /** Names of the entries of a directory (default `Deno.readDirSync`). */
  readDir?: (path: string) => string[];
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

function listDir(path: string): string[] {
  return [...Deno.readDirSync(path)].filter((e) => !e.isDirectory).map((e) =>
    e.name
  );
}

/**
 * Reads the system trust store: `SSL_CERT_FILE` or the first existing bundle
 * of {@linkcode SYSTEM_CA_FILES}, plus every file of the `SSL_CERT_DIR`
 * directories. A missing store is not an error (Deno's built-in roots
 * remain); a `SSL_CERT_FILE` or `SSL_CERT_DIR` that cannot be read is
 * warned about.
 */
export function readSystemStore(options: SystemStoreOptions = {}): SystemStore {
  const env = options.env ??
    {
      SSL_CERT_FILE: envVar("SSL_CERT_FILE"),
      SSL_CERT_DIR: envVar("SSL_CERT_DIR"),
    };
  const readTextFile = options.readTextFile ?? Deno.readTextFileSync;
  const readDir = options.readDir ?? listDir;
  const store: SystemStore = { sources: [], certificates: [] };
  const tryRead = (path: string): string | undefined => {
    try {
      return readTextFile(path);
    } catch {
      return undefined;
    }
  };
  if (env.SSL_CERT_FILE) {
    const text = tryRead(env.SSL_CERT_FILE);
    if (text === undefined) {
      log.warn(`SSL_CERT_FILE=${env.SSL_CERT_FILE} cannot be read: ignored`);
    } else {
      store.sources.push(env.SSL_CERT_FILE);
      store.certificates.push(...splitPem(text));
    }
  } else {
    for (const file of options.files ?? SYSTEM_CA_FILES) {
      const text = tryRead(file);
      if (text === undefined) continue;
      store.sources.push(file);
      store.certificates.push(...splitPem(text));
      break;
    }
  }
  for (const dir of (env.SSL_CERT_DIR ?? "").split(":")) {
    if (dir === "") continue;
    let names: string[];
    try {
      names = readDir(dir).sort();
    } catch {
      log.warn(`SSL_CERT_DIR entry ${dir} cannot be read: ignored`);
      continue;
    }
    store.sources.push(dir);
    for (const name of names) {
      store.certificates.push(...splitPem(tryRead(`${dir}/${name}`) ?? ""));
    }
  }
  return store;
}

/**
 * Splits `certificates` into those the TLS stack accepts as roots and the
 * number it rejects. `check` throws when a set cannot be used (default: make
 * and close a `Deno.createHttpClient` with them); one bad certificate makes
 * the whole set fail, so a failing set is checked one certificate at a time.
 */
export function usableCertificates(
  certificates: string[],
  check: (certs: string[]) => void = checkWithDeno,
): { usable: string[]; rejected: number } {
  if (certificates.length === 0) return { usable: [], rejected: 0 };
  try {
    check(certificates);
    return { usable: certificates, rejected: 0 };
  } catch {
    const usable = certificates.filter((cert) => {
      try {
        check([cert]);
        return true;
      } catch {
        return false;
      }
    });
    return { usable, rejected: certificates.length - usable.length };
  }
}

function checkWithDeno(certs: string[]): void {
  Deno.createHttpClient({ caCerts: certs }).close();
}

/**
 * The usable certificates of the system store ({@linkcode readSystemStore}):
 * those the TLS stack cannot parse are left out with a warning; what was read
 * is logged at debug level.
 */
export function systemCertificates(options: SystemStoreOptions = {}): string[] {
  const store = readSystemStore(options);
  const { usable, rejected } = usableCertificates(store.certificates);
  const where = store.sources.join(", ");
  if (rejected > 0) {
    log.warn(
      `${rejected} certificate(s) of the system store (${where}) cannot be parsed: left out`,
    );
  }
  if (store.sources.length > 0) {
    log.debug(
      `trusting ${usable.length} CA certificate(s) of the system store (${where}) besides the built-in roots`,
    );
  }
  return usable;
}
