/**
 * The kernel command line as the kernel reads it (`lib/cmdline.c: next_arg`,
 * `kernel/params.c: parse_args`), and edits that respect it.
 *
 * The kernel splits on whitespace outside double quotes; a `"` anywhere
 * toggles quoting, so `key="a b"` and `"key=a b"` are one argument each. The
 * parameter is the text before the first `=`, the value the text after it;
 * a value that starts with `"` loses that quote and a closing one at the end
 * of the argument, and an argument that starts with `"` loses a closing one.
 * A quote that is never closed runs to the end of the line. An argument `--`
 * ends the kernel's parameters: what follows is handed to init.
 *
 * Edits never cut inside an argument: a karg inside another karg's quoted
 * value (`coreos.inst.persistent-kargs="console=tty1 …"`) is part of that
 * value, not a karg of its own. Everything not deleted keeps its bytes.
 *
 * One simplification: the kernel's `isspace` also matches byte 0xA0, which is
 * part of some UTF-8 characters; here only ASCII whitespace separates.
 *
 * @module
 */

/** One argument of a command line, with where it sits in the line. */
export interface KernelArg {
  /** Offset of its first character (an opening quote included). */
  start: number;
  /** Offset just past its last character. */
  end: number;
  /** The parameter: the text before the first `=`, with the kernel's quote removal. */
  param: string;
  /** The text after the first `=`, with the kernel's quote removal; undefined without `=`. */
  value?: string;
  /** True when a quote opened in it is still open at the end of the line. */
  unterminated?: boolean;
}

const SPACE = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);

function skipSpaces(line: string, at: number): number {
  while (at < line.length && SPACE.has(line[at])) at++;
  return at;
}

/**
 * Splits a command line exactly like the kernel's `next_arg`, keeping each
 * argument's position. Every argument is returned, those after `--` too (see
 * {@linkcode initArgsStart}).
 *
 * @example
 * ```ts
 * parseKernelCmdline('a=1 p="x y" z').map((a) => [a.param, a.value]);
 * // [["a", "1"], ["p", "x y"], ["z", undefined]]
 * ```
 */
export function parseKernelCmdline(line: string): KernelArg[] {
  const out: KernelArg[] = [];
  let at = skipSpaces(line, 0);
  while (at < line.length) {
    const start = at;
    let inQuote = false;
    let quoted = false;
    if (line[at] === '"') {
      at++;
      inQuote = true;
      quoted = true;
    }
    const body = at;
    // Like the kernel, an "=" at the body's first position does not count.
    let equals = 0;
    let i = body;
    for (; i < line.length; i++) {
      const c = line[i];
      if (SPACE.has(c) && !inQuote) break;
      if (equals === 0 && c === "=") equals = i - body;
      if (c === '"') inQuote = !inQuote;
    }
    let paramEnd = equals === 0 ? i : body + equals;
    let valueStart = body + equals + 1;
    let valueEnd = i;
    if (equals !== 0 && line[valueStart] === '"') {
      valueStart++;
      if (line[i - 1] === '"') valueEnd = i - 1;
    }
    if (quoted && i > body && line[i - 1] === '"') {
      if (equals === 0) paramEnd = Math.min(paramEnd, i - 1);
      else valueEnd = Math.min(valueEnd, i - 1);
    }
    const arg: KernelArg = {
      start,
      end: i,
      param: line.slice(body, paramEnd),
    };
    if (equals !== 0) {
      arg.value = line.slice(valueStart, Math.max(valueStart, valueEnd));
    }
    if (inQuote) arg.unterminated = true;
    out.push(arg);
    at = skipSpaces(line, i);
  }
  return out;
}

/** Index in `args` of the `--` that ends the kernel's parameters, or `args.length`. */
export function initArgsStart(args: KernelArg[]): number {
  const i = args.findIndex((a) => a.value === undefined && a.param === "--");
  return i < 0 ? args.length : i;
}

/** `param` or `param=value`, the argument as the kernel hands it over. */
export function argText(arg: Pick<KernelArg, "param" | "value">): string {
  return arg.value === undefined ? arg.param : `${arg.param}=${arg.value}`;
}

/**
 * Why `karg` cannot be added or matched as one kernel argument (an
 * unbalanced quote, several arguments, nothing at all), or undefined when it
 * is one.
 */
export function kargProblem(karg: string): string | undefined {
  const args = parseKernelCmdline(karg);
  if (args.length === 0) return "it is empty";
  if (args.some((a) => a.unterminated)) {
    return "it has an unbalanced double quote";
  }
  if (args.length > 1) {
    return `the kernel would read ${args.length} arguments in it`;
  }
  return undefined;
}

/** A `--delete-karg` pattern: `KEY` (every argument with that key) or `KEY=VALUE` (that one). */
export interface KargPattern {
  /** The key. */
  param: string;
  /** The value, compared after the kernel's quote removal; undefined matches any. */
  value?: string;
}

/**
 * Reads `KEY` or `KEY=VALUE` as a {@linkcode KargPattern}: as the kernel
 * would read it when it is one argument (`p="a b"`), else as one argument
 * anyway, split at the first `=` (`p=a b`, the unquoted spelling).
 */
export function kargPattern(text: string): KargPattern {
  if (kargProblem(text) === undefined) {
    const [arg] = parseKernelCmdline(text);
    return { param: arg.param, value: arg.value };
  }
  const eq = text.indexOf("=");
  return eq < 0
    ? { param: text }
    : { param: text.slice(0, eq), value: text.slice(eq + 1) };
}

/** True when `arg` is what `pattern` names. */
export function matchesKarg(arg: KernelArg, pattern: KargPattern): boolean {
  return arg.param === pattern.param &&
    (pattern.value === undefined || arg.value === pattern.value);
}

/** Options for {@linkcode rewriteCmdline}. */
export interface RewriteOptions {
  /** Kernel arguments (before any `--`) to take out. */
  remove?: (arg: KernelArg) => boolean;
  /**
   * Arguments written where the first removed one was; appended (before any
   * `--`) when nothing was removed. Without it, removed arguments are just dropped.
   */
  replaceWith?: string[];
  /** Arguments appended to the kernel's parameters (before any `--`). */
  append?: string[];
}

/**
 * Removes, replaces and appends whole kernel arguments. Everything else keeps
 * its bytes: a removed argument takes the whitespace before it along (the
 * whitespace after it when it is the first), appended ones are joined with
 * one space and go before a `--`, and a quote left open at the end of the
 * line is closed first so that nothing appended lands inside it.
 */
export function rewriteCmdline(
  line: string,
  options: RewriteOptions,
): string {
  const args = parseKernelCmdline(line);
  const kernelCount = initArgsStart(args);
  const removed = new Set<number>();
  for (let i = 0; i < kernelCount; i++) {
    if (options.remove?.(args[i])) removed.add(i);
  }
  const replacement = options.replaceWith ?? [];
  const append = removed.size === 0
    ? [...replacement, ...options.append ?? []]
    : [...options.append ?? []];
  const firstRemoved = removed.size > 0 ? Math.min(...removed) : -1;

  // Each piece written carries the whitespace that preceded its argument in
  // the line, except the first, which follows the line's leading whitespace.
  let text = line.slice(0, args[0]?.start ?? line.length);
  let first = true;
  const put = (piece: string, i: number) => {
    const sep = i > 0 ? line.slice(args[i - 1].end, args[i].start) : " ";
    text += first ? piece : sep + piece;
    first = false;
  };
  for (let i = 0; i < args.length; i++) {
    if (i === kernelCount && append.length > 0) {
      put(append.join(" "), i);
      append.length = 0;
    }
    if (i === firstRemoved && replacement.length > 0) {
      put(replacement.join(" "), i);
    }
    if (removed.has(i)) continue;
    // A quote still open at the end would swallow what is appended.
    const close = args[i].unterminated && append.length > 0 ? '"' : "";
    put(line.slice(args[i].start, args[i].end) + close, i);
  }
  const tail = line.slice(args.at(-1)?.end ?? line.length);
  if (append.length === 0) return text + tail;
  return text + (first ? "" : " ") + append.join(" ") + tail;
}
