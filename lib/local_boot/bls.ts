/**
 * Boot Loader Specification entries as GRUB's `blscfg` reads them (the boot
 * menu of Fedora, RHEL, Fedora CoreOS and RHCOS): parsing an entry, ordering
 * the entries, choosing the default (`grubenv`'s `saved_entry`), and turning
 * an entry into the kernel, initrds and command line GRUB would boot,
 * variables (`$kernelopts`, `$ignition_firstboot`…) expanded as GRUB would.
 *
 * Pure: the files are read by the caller (`lib/local_boot/find.ts`).
 *
 * @module
 */

/** One entry (`loader/entries/<id>.conf`), the keys GRUB uses. */
export interface BlsEntry {
  /** The file name without `.conf`: GRUB's menu entry id. */
  id: string;
  /** `title`. */
  title?: string;
  /** `version`. */
  version?: string;
  /** `linux`: the kernel's path on the partition. */
  linux?: string;
  /** Every `initrd` value, in order (each may name several files). */
  initrds: string[];
  /** The first `options` value (the one GRUB uses). */
  options?: string;
}

/**
 * Parses an entry like `blscfg`: leading blanks skipped, `#` lines ignored,
 * the key ends at the first space (else tab), blanks after it skipped; a
 * line without a value ends the file.
 */
export function parseBlsEntry(id: string, text: string): BlsEntry {
  const entry: BlsEntry = { id, initrds: [] };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "").replace(/^[ \t]+/, "");
    if (line.startsWith("#")) continue;
    let sep = line.indexOf(" ");
    if (sep < 0) sep = line.indexOf("\t");
    if (sep < 0 || sep === line.length - 1) break;
    const key = line.slice(0, sep);
    const value = line.slice(sep + 1).replace(/^[ \t]+/, "");
    switch (key) {
      case "title":
      case "version":
      case "linux":
      case "options":
        entry[key] ??= value;
        break;
      case "initrd":
        entry.initrds.push(value);
        break;
    }
  }
  return entry;
}

/**
 * RPM's version comparison as GRUB's `blscfg` has it: alphanumeric segments,
 * numbers by value and newer than letters, `~` older and `+` newer than
 * anything. Returns 1 when `a` is newer, -1 when `b` is, 0 when equal.
 */
export function vercmp(a: string, b: string): number {
  if (a === b) return 0;
  const alnum = (c: string | undefined) =>
    c !== undefined && /[0-9A-Za-z]/.test(c);
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    while (i < a.length && !alnum(a[i]) && a[i] !== "~" && a[i] !== "+") i++;
    while (j < b.length && !alnum(b[j]) && b[j] !== "~" && b[j] !== "+") j++;
    if (a[i] === "~" || b[j] === "~") {
      if (a[i] !== "~") return 1;
      if (b[j] !== "~") return -1;
      i++;
      j++;
      continue;
    }
    if (a[i] === "+" || b[j] === "+") {
      if (i >= a.length) return -1;
      if (j >= b.length) return 1;
      if (a[i] !== "+") return 1;
      if (b[j] !== "+") return -1;
      i++;
      j++;
      continue;
    }
    if (i >= a.length || j >= b.length) break;
    const numeric = /[0-9]/.test(a[i]);
    const segment = numeric ? /^[0-9]*/ : /^[A-Za-z]*/;
    let one = segment.exec(a.slice(i))![0];
    let two = segment.exec(b.slice(j))![0];
    i += one.length;
    j += two.length;
    if (two === "") return numeric ? 1 : -1;
    if (numeric) {
      one = one.replace(/^0+/, "");
      two = two.replace(/^0+/, "");
      if (one.length !== two.length) return one.length > two.length ? 1 : -1;
    }
    if (one !== two) return one > two ? 1 : -1;
  }
  if (i >= a.length && j >= b.length) return 0;
  return i >= a.length ? -1 : 1;
}

/** name-version-release of an entry id, split at its last two `-` (GRUB's `split_package_string`). */
function splitNvr(id: string): [string, string, string] {
  const r = id.lastIndexOf("-");
  if (r < 0) return [id, "", ""];
  const release = id.slice(r + 1);
  const rest = id.slice(0, r);
  const v = rest.lastIndexOf("-");
  if (v < 0) return [rest, release, ""];
  return [rest.slice(0, v), rest.slice(v + 1), release];
}

/** GRUB's order of two entries by their ids: 1 when `a` comes first (is newer). */
function compareEntries(a: BlsEntry, b: BlsEntry): number {
  const [n0, v0, r0] = splitNvr(a.id);
  const [n1, v1, r1] = splitNvr(b.id);
  return vercmp(n0, n1) || vercmp(v0, v1) || vercmp(r0, r1);
}

/**
 * The entries in GRUB's menu order (newest id first; ostree's default
 * deployment has the highest `ostree-<n>-…`). Entries without `linux` are
 * not Linux entries; of two ids that compare equal the first one stays.
 */
export function sortEntries(entries: BlsEntry[]): BlsEntry[] {
  const out: BlsEntry[] = [];
  for (const entry of entries) {
    if (entry.linux === undefined) continue;
    if (out.some((e) => compareEntries(entry, e) === 0)) continue;
    const at = out.findIndex((e) => compareEntries(entry, e) > 0);
    if (at < 0) out.push(entry);
    else out.splice(at, 0, entry);
  }
  return out;
}

/**
 * The entry GRUB boots by default: `default` (`saved_entry`) names it by
 * index, id or title; otherwise, or when it names nothing, the first.
 */
export function defaultEntry(
  sorted: BlsEntry[],
  options: { saved?: string } = {},
): BlsEntry | undefined {
  const saved = options.saved;
  if (saved !== undefined && saved !== "") {
    if (/^\d+$/.test(saved)) {
      const byIndex = sorted[Number(saved)];
      if (byIndex) return byIndex;
    } else {
      const named = sorted.find((e) => e.id === saved || e.title === saved);
      if (named) return named;
    }
  }
  return sorted[0];
}

/** Parses a GRUB environment block (`grubenv`: `name=value` lines, `\\` escapes). */
export function parseGrubenv(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const value = line.slice(eq + 1).replace(/\\(.)/g, (_, c) => c);
    vars.set(line.slice(0, eq), value);
  }
  return vars;
}

/**
 * Splits a line into words like GRUB's script lexer, expanding `$name` and
 * `${name}` from `vars` (an unset variable is empty): blanks separate words,
 * `'…'` is literal, `"…"` expands variables but keeps blanks, `\` quotes the
 * next character, and an unquoted variable's value is split at blanks.
 */
export function grubWords(line: string, vars: Map<string, string>): string[] {
  const words: string[] = [];
  let current = "";
  let started = false;
  const finish = () => {
    if (started) words.push(current);
    current = "";
    started = false;
  };
  const variable = (at: number): [string, number] => {
    if (line[at + 1] === "{") {
      const end = line.indexOf("}", at + 2);
      if (end < 0) return ["", line.length];
      return [vars.get(line.slice(at + 2, end)) ?? "", end + 1];
    }
    const m = /^[A-Za-z0-9_]+|^[?#@*]/.exec(line.slice(at + 1));
    if (!m) return ["$", at + 1];
    return [vars.get(m[0]) ?? "", at + 1 + m[0].length];
  };
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === " " || c === "\t" || c === "\n") {
      finish();
      i++;
    } else if (c === "\\") {
      if (i + 1 < line.length && line[i + 1] !== "\n") {
        current += line[i + 1];
        started = true;
      }
      i += 2;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      const stop = end < 0 ? line.length : end;
      current += line.slice(i + 1, stop);
      started = true;
      i = stop + 1;
    } else if (c === '"') {
      started = true;
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === "\\" && /["$\\]/.test(line[i + 1] ?? "")) {
          current += line[i + 1];
          i += 2;
        } else if (line[i] === "$") {
          const [value, next] = variable(i);
          current += value;
          i = next;
        } else {
          current += line[i];
          i++;
        }
      }
      i++;
    } else if (c === "$") {
      const [value, next] = variable(i);
      i = next;
      // Unquoted: the value's blanks separate words, and an empty value
      // adds no word of its own.
      const parts = value.split(/[ \t\n]+/);
      parts.forEach((part, n) => {
        if (n > 0) finish();
        if (part !== "") {
          current += part;
          started = true;
        }
      });
    } else {
      current += c;
      started = true;
      i++;
    }
  }
  finish();
  return words;
}

/**
 * `blscfg`'s `expand_val`: each `$name` (letters, digits, `_`) becomes the
 * variable's value and a blank (nothing when unset, and one blank after it
 * is dropped), before the line is handed to GRUB's script lexer.
 */
export function expandVal(value: string, vars: Map<string, string>): string {
  // A `$` without a name (`${x}`, `$/`) is dropped, like the blank after it.
  return value.replace(/\$([A-Za-z0-9_]*) ?/g, (_, name: string) => {
    const v = name === "" ? undefined : vars.get(name);
    return v === undefined ? "" : `${v} `;
  });
}

/**
 * The command line GRUB's `linux` command builds from its arguments
 * (`grub_create_loader_cmdline`): joined by blanks, `\`, `'` and `"`
 * escaped with a `\`, an argument holding a blank put in double quotes.
 */
export function loaderCmdline(args: string[]): string {
  return args.map((arg) => {
    const escaped = arg.replace(/[\\'"]/g, (c) => `\\${c}`);
    return arg.includes(" ") ? `"${escaped}"` : escaped;
  }).join(" ");
}

/**
 * The variables GRUB has when CoreOS's menu runs: `grubenv`'s, then
 * `ignition_firstboot`, set by CoreOS's GRUB configuration from the
 * `/ignition.firstboot` stamp on the boot partition: empty without it; with
 * it, the stamp is run as GRUB script (it may `set ignition_network_kcmdline`,
 * static network arguments for the first boot) and the value is
 * `ignition.firstboot ${ignition_network_kcmdline}`. Returns the variables
 * and the stamp lines that are not a `set` (ignored, named for a warning).
 */
export function grubVariables(
  grubenv: Map<string, string>,
  options: { firstbootStamp?: string } = {},
): { vars: Map<string, string>; ignored: string[] } {
  const vars = new Map(grubenv);
  const ignored: string[] = [];
  vars.set("ignition_firstboot", "");
  const stamp = options.firstbootStamp;
  if (stamp !== undefined) {
    vars.set("ignition_network_kcmdline", "");
    for (const raw of stamp.split("\n")) {
      const words = grubWords(raw.replace(/\r$/, ""), vars);
      if (words.length === 0 || words[0].startsWith("#")) continue;
      const eq = words[1]?.indexOf("=") ?? -1;
      if (words[0] === "set" && words.length === 2 && eq > 0) {
        vars.set(words[1].slice(0, eq), words[1].slice(eq + 1));
      } else {
        ignored.push(raw.trim());
      }
    }
    vars.set(
      "ignition_firstboot",
      `ignition.firstboot ${vars.get("ignition_network_kcmdline") ?? ""}`,
    );
  }
  return { vars, ignored };
}

/** What an entry boots, as GRUB would load it. */
export interface BootSpec {
  /** Kernel path on the partition. */
  kernel: string;
  /** Initrd paths on the partition, in order. */
  initrds: string[];
  /** The kernel command line. */
  cmdline: string;
}

/**
 * The kernel, initrds and command line GRUB boots for `entry` with `vars`:
 * `options` (else the `default_kernelopts` variable) through `expand_val`
 * and the script lexer, `BOOT_IMAGE=<kernel>` first as GRUB's `linux`
 * writes it (without GRUB's device prefix); undefined without `linux`.
 */
export function bootSpec(
  entry: BlsEntry,
  vars: Map<string, string>,
): BootSpec | undefined {
  if (entry.linux === undefined) return undefined;
  // GRUB runs `linux <linux> <options>`: words after the path are arguments too.
  const [kernel, ...before] = grubWords(entry.linux, vars);
  if (kernel === undefined) return undefined;
  const options = entry.options ?? vars.get("default_kernelopts");
  const args = options === undefined
    ? []
    : grubWords(expandVal(options, vars), vars);
  return {
    kernel,
    initrds: entry.initrds.flatMap((value) => grubWords(value, vars)),
    cmdline: `BOOT_IMAGE=${loaderCmdline([kernel, ...before, ...args])}`,
  };
}
