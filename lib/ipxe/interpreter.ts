/**
 * The iPXE script engine: script execution (`image/script.c`), command lines
 * (`core/exec.c: system`), the shell stop states, the registered-image list and
 * image execution (`core/image.c: image_exec`) in plan mode.
 *
 * Plan mode: `kernel`/`initrd` images are registered without being
 * downloaded; only executed URLs are fetched, to tell a script from a kernel.
 * Booting a kernel ends the run with a {@linkcode KexecPlan}; handing the
 * machine back to the firmware (`sanboot` of the local disk, or `exit` from
 * the outermost script) ends it with a {@linkcode LocalBootPlan}.
 *
 * @module
 */

import type {
  BootPlan,
  CpioWrap,
  KexecPlan,
  LocalBootPlan,
  PlannedInitrd,
} from "../plan.ts";
import { fromBinary, strtoul, toBinary } from "./bytes.ts";
import { IpxeError } from "./error.ts";
import { UsageError } from "./getopt.ts";
import {
  denumerate,
  SettingParseError,
  type StoredSetting,
} from "./setting_types.ts";
import { ExpansionLimitError, Settings } from "./settings.ts";
import {
  hasScriptMagic,
  lineNumberAt,
  readLine,
  splitCommands,
  splitTokens,
} from "./tokenize.ts";
import { imageNameFromUri, isLocalUri, parseUri, resolveUri } from "./uri.ts";

/** Fetches a script-or-image URL that is being executed. */
export type ScriptFetcher = (
  url: string,
  options: { maxBytes: number; timeoutMs?: number },
) => Promise<{ url: string; body: Uint8Array }>;

/** Options of an interpreter run. */
export interface EngineOptions {
  /** Fetches a script-or-image URL that is executed (`chain`/`boot`/`imgexec` of a URL). */
  fetch: ScriptFetcher;
  /** Preset settings: `net0/mac` → `52:54:00:12:34:56`, `menu` → `stable`, …; they override built-ins. */
  settings?: Record<string, string>;
  /** `${buildarch}`: default `x86_64` (`arm64` on aarch64). */
  buildarch?: string;
  /** `${platform}`: default `pcbios` on x86_64, `efi` on arm64. */
  platform?: string;
  /** Clock of `${unixtime}`, in milliseconds since the Epoch (default `Date.now`). */
  now?: () => number;
  /** Called by `sleep N` with N*1000; default: no waiting. */
  sleep?: (ms: number) => Promise<void>;
  /** Receives `echo` output and command diagnostics; default: nothing. */
  print?: (line: string) => void;
  /** Cap on executed commands (default 100000). */
  maxSteps?: number;
  /** Cap on nested chained scripts (default 16). */
  maxChainDepth?: number;
  /** Largest script accepted (default 1 MiB). */
  maxScriptBytes?: number;
  /** Cap on fetches of executed URLs, the first script excluded (default 1000). */
  maxFetches?: number;
}

/** A registered (or executing) image. */
export interface Image {
  /** Image name (binary string); undefined until registered when the URI has no path. */
  name?: string;
  /** Absolute URL (binary string). */
  url: string;
  /** Command line, or null for none. */
  cmdline: string | null;
  /** What the image is: not fetched yet, a kernel (assumed or probed), or a fetched script. */
  kind: "unknown" | "kernel" | "script";
  /** Script text (binary string) when kind is "script". */
  body?: string;
  /** `--autofree`: unregister after execution. */
  autofree: boolean;
  /** Set by `chain --replace` on the running script: what to execute instead. */
  replacement?: Image;
}

/**
 * A command failed; the message is one line, the status is the command's
 * non-zero return value, the cause (a fetch the server refused…) is kept.
 */
export class CommandFailure extends Error {
  /** Non-zero status. */
  readonly status: number;
  /** Creates the failure. */
  constructor(message: string, status = 1, options?: ErrorOptions) {
    super(message, options);
    this.name = "CommandFailure";
    this.status = status || 1;
  }
}

/** Internal: a kernel was booted, or the local disk; unwinds every script. */
class Booted {
  constructor(readonly plan: BootPlan) {}
}

/** A command implementation: returns a status (0 = success) or throws {@linkcode CommandFailure}. */
export type Command = (
  argv: string[],
  engine: Engine,
) => Promise<number> | number;

interface Frame {
  image: Image;
  text: string;
  offset: number;
  lineOffset: number;
  /** Label -> offset of its first line, built on the first `goto`. */
  labels?: Map<string, number>;
}

/** A menu built by `menu`/`item`. */
export interface Menu {
  /** Title. */
  title: string;
  /** Items in order. */
  items: Array<
    { label: string; text: string; gap: boolean; isDefault: boolean }
  >;
}

/** Status iPXE-style commands return for generic errors (any non-zero value works). */
export const FAILED = 1;

/** Cap on the size of one command after `${…}` expansion. */
const MAX_COMMAND_BYTES = 4 << 20;

/** One interpreter run. */
export class Engine {
  /** Settings tree. */
  readonly settings: Settings;
  /** Registered images, in registration order. */
  readonly images: Image[] = [];
  /** Menus by name. */
  readonly menus = new Map<string, Menu>();
  /** Every script executed, in order (JS strings). */
  readonly scripts: string[] = [];
  /** Build architecture reported by `${buildarch}`. */
  readonly buildarch: string;
  readonly #options: EngineOptions;
  readonly #commands: Map<string, Command>;
  readonly #frames: Frame[] = [];
  readonly #maxSteps: number;
  readonly #maxDepth: number;
  /** Largest script accepted, in bytes. */
  readonly maxScriptBytes: number;
  readonly #maxFetches: number;
  #fetches = 0;
  #stopState = 0;
  #selected?: Image;
  #imageIndex = 0;
  #steps = 0;
  #pending = "";
  /** Where the outermost script ran `exit` (status 0), if it did. */
  #exitedAt?: string;
  /** Last failure, formatted with its location. */
  lastFailure?: string;
  /** What caused the last failure (the fetcher's error), if anything. */
  lastFailureCause?: unknown;

  /** Creates an engine with a command table. */
  constructor(options: EngineOptions, commands: Map<string, Command>) {
    this.#options = options;
    this.#commands = commands;
    this.#maxSteps = options.maxSteps ?? 100_000;
    this.#maxDepth = options.maxChainDepth ?? 16;
    this.maxScriptBytes = options.maxScriptBytes ?? 1 << 20;
    this.#maxFetches = options.maxFetches ?? 1000;
    this.buildarch = options.buildarch ??
      (Deno.build.arch === "aarch64" ? "arm64" : "x86_64");
    const platform = options.platform ??
      (this.buildarch === "arm64" ? "efi" : "pcbios");
    const str = (v: string): StoredSetting => ({ raw: v, type: "string" });
    this.settings = new Settings({
      builtin: (name) => {
        switch (name) {
          case "buildarch":
            return str(toBinary(this.buildarch));
          case "platform":
            return str(toBinary(platform));
          case "version":
            return str("2.0.0+");
          case "unixtime": {
            const seconds = Math.floor((options.now ?? Date.now)() / 1000);
            return {
              raw: denumerate("uint32", BigInt(seconds) & 0xffffffffn)!,
              type: "uint32",
            };
          }
          case "cwuri": {
            const uri = this.cwuri();
            return uri === undefined ? undefined : { raw: uri, type: "string" };
          }
          case "cwduri": {
            const uri = this.cwuri();
            return uri === undefined
              ? undefined
              : { raw: resolveUri(uri, "."), type: "string" };
          }
          default:
            return undefined;
        }
      },
    });
    for (const [key, value] of Object.entries(options.settings ?? {})) {
      try {
        this.settings.storeFormatted(toBinary(key), toBinary(value));
      } catch (e) {
        throw new IpxeError(`Setting "${key}": ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
  }

  /** Current working URI: the URL of the running script (binary string). */
  cwuri(): string | undefined {
    return this.#frames.at(-1)?.image.url;
  }

  /** Writes output (binary string) through `print`; `newline` false keeps it pending (`echo -n`). */
  print(text: string, newline = true): void {
    if (!newline) {
      this.#pending += text;
      return;
    }
    const line = this.#pending + text;
    this.#pending = "";
    this.#options.print?.(fromBinary(line));
  }

  /** Sleeps through the `sleep` option (no waiting by default). */
  async sleep(ms: number): Promise<void> {
    await this.#options.sleep?.(ms);
  }

  /** iPXE `shell_stop`. */
  shellStop(state: 1 | 2): void {
    this.#stopState = state;
  }

  #shellStopped(state: 1 | 2): boolean {
    const stopped = this.#stopState >= state;
    if (this.#stopState <= state) this.#stopState = 0;
    return stopped;
  }

  #where(): string {
    const frame = this.#frames.at(-1);
    if (!frame) return "script";
    const url = fromBinary(frame.image.url);
    return `Script ${url} line ${lineNumberAt(frame.text, frame.lineOffset)}`;
  }

  /** A fatal error at the current location (not catchable by `||`). */
  fatal(message: string): IpxeError {
    return new IpxeError(`${this.#where()}: ${message}`);
  }

  /** Records a failure message (binary or JS string) at the current location, and its cause. */
  recordFailure(message: string, cause?: unknown): void {
    this.lastFailure = `${this.#where()}: ${fromBinary(message)}`;
    this.lastFailureCause = cause;
  }

  /**
   * iPXE `exit`: stops the running script. From the outermost script, with
   * status 0, iPXE itself ends and the firmware goes on to its next boot
   * device: the run ends with a {@linkcode LocalBootPlan}.
   */
  exitScript(status: number): void {
    this.shellStop(2);
    if (this.#frames.length === 1 && status === 0) {
      this.#exitedAt = this.#where();
    }
  }

  /** Ends the run with a {@linkcode LocalBootPlan} (`sanboot` of the local disk). */
  bootLocal(reason: string): never {
    const plan: LocalBootPlan = {
      action: "local-boot",
      reason: `${this.#where()}: ${fromBinary(reason)}`,
    };
    throw new Booted(plan);
  }

  // ---- images ----

  /** First registered image with that name. */
  findImage(name: string): Image | undefined {
    return this.images.find((image) => image.name === name);
  }

  /** The selected image, if it is registered (iPXE `image_find_selected`). */
  selectedImage(): Image | undefined {
    return this.#selected && this.images.includes(this.#selected)
      ? this.#selected
      : undefined;
  }

  /** Marks an image as the selected one (iPXE `image_select`). */
  select(image: Image): void {
    this.#selected = image;
  }

  /** True when `image` is the selected one. */
  isSelected(image: Image): boolean {
    return this.#selected === image;
  }

  /** Appends an image to the list (moving it to the end if registered); a nameless image becomes `imgN`. */
  register(image: Image): void {
    this.unregister(image);
    if (image.name === undefined) image.name = `img${this.#imageIndex++}`;
    this.images.push(image);
  }

  /** Removes an image from the list. */
  unregister(image: Image): void {
    const i = this.images.indexOf(image);
    if (i >= 0) this.images.splice(i, 1);
  }

  /**
   * A new, unregistered image for a URI resolved against the current script.
   * Deviations: an empty URI fails instead of naming the running script, and
   * a `file:` URI is fatal unless the current script was itself read from a
   * file (a script fetched over the network never reaches local files).
   */
  newImage(uri: string, kind: Image["kind"]): Image {
    // iPXE would resolve "" to the running script itself; never what was meant.
    if (uri === "") {
      throw new CommandFailure(`"" is not a URI (an unset setting?)`);
    }
    const base = this.cwuri();
    const url = resolveUri(base, uri);
    if (isLocalUri(url) && (base === undefined || !isLocalUri(base))) {
      throw this.fatal(
        `${
          fromBinary(url)
        }: a script fetched over the network cannot name local files (file: URLs are allowed in a file: script only)`,
      );
    }
    return {
      name: imageNameFromUri(url),
      url,
      cmdline: null,
      kind,
      autofree: false,
    };
  }

  /** Fetches an image to learn whether it is a script or a kernel (plan mode "download"). */
  async probe(image: Image, timeoutMs?: number): Promise<void> {
    const url = fromBinary(image.url);
    const scheme = parseUri(url).scheme;
    if (scheme === undefined) {
      throw new CommandFailure(`${url}: not an absolute URL`);
    }
    if (++this.#fetches > this.#maxFetches) {
      throw this.fatal(
        `more than ${this.#maxFetches} scripts or images fetched (an endless chain or retry loop?)`,
      );
    }
    let result: { url: string; body: Uint8Array };
    try {
      result = await this.#options.fetch(url, {
        maxBytes: this.maxScriptBytes,
        timeoutMs,
      });
    } catch (e) {
      throw new CommandFailure(
        `${url}: ${e instanceof Error ? e.message : String(e)}`,
        1,
        { cause: e },
      );
    }
    const body = toBinary(result.body.subarray(0, this.maxScriptBytes + 1));
    image.url = toBinary(result.url);
    if (hasScriptMagic(body)) {
      if (body.length > this.maxScriptBytes) {
        throw new CommandFailure(
          `${url}: script is larger than ${this.maxScriptBytes} bytes`,
        );
      }
      image.kind = "script";
      image.body = body;
    } else {
      image.kind = "kernel";
    }
  }

  /**
   * iPXE `image_exec`: runs a script nested (unregistered while it runs,
   * re-registered at the end of the list afterwards unless `--autofree` or
   * replaced), or boots a kernel (which ends the run).
   */
  async execImage(image: Image, timeoutMs?: number): Promise<number> {
    if (image.kind === "unknown") await this.probe(image, timeoutMs);
    if (image.kind === "kernel") this.#boot(image);
    if (this.#frames.length >= this.#maxDepth) {
      throw this.fatal(
        `chaining ${
          fromBinary(image.url)
        } exceeds the cap of ${this.#maxDepth} nested scripts`,
      );
    }
    this.unregister(image);
    this.scripts.push(fromBinary(image.url));
    // A new outermost script (a `chain --replace`) has not exited yet.
    if (this.#frames.length === 0) this.#exitedAt = undefined;
    const frame: Frame = {
      image,
      text: image.body ?? "",
      offset: 0,
      lineOffset: 0,
    };
    this.#frames.push(frame);
    let rc: number;
    try {
      rc = await this.#processScript(frame);
    } finally {
      this.#frames.pop();
    }
    const replacement = image.replacement;
    image.replacement = undefined;
    if (!replacement && !image.autofree) this.register(image);
    if (replacement) return await this.execImage(replacement);
    return rc;
  }

  /** `chain --replace`: the running script is replaced by `image` when it stops. */
  replaceCurrent(image: Image): void {
    const frame = this.#frames.at(-1);
    if (!frame) throw new CommandFailure("no script is running");
    frame.image.replacement = image;
    this.shellStop(2);
  }

  #boot(kernel: Image): never {
    this.unregister(kernel);
    const initrds: PlannedInitrd[] = this.images.map((image) => {
      const out: PlannedInitrd = {
        url: fromBinary(image.url),
        name: fromBinary(image.name ?? ""),
      };
      const cpio = cpioWrap(image.cmdline);
      if (cpio) out.cpio = cpio;
      return out;
    });
    const plan: KexecPlan = {
      action: "kexec",
      kernel: {
        url: fromBinary(kernel.url),
        name: fromBinary(kernel.name ?? ""),
      },
      initrds,
      cmdline: fromBinary(kernel.cmdline ?? ""),
      scripts: [...this.scripts],
    };
    throw new Booted(plan);
  }

  // ---- scripts ----

  async #processScript(frame: Frame): Promise<number> {
    let rc = 0;
    frame.offset = 0;
    do {
      const line = readLine(frame.text, frame.offset);
      frame.offset = line.next;
      frame.lineOffset = line.offset;
      if (line.unterminated) {
        this.recordFailure("the script ends inside a \\ line continuation");
        return FAILED;
      }
      rc = await this.#system(line.command);
      if (this.#shellStopped(2) || rc !== 0) break;
    } while (frame.offset < frame.text.length);
    return rc;
  }

  /** `goto`: moves the current script to the first line labelled `label`. */
  gotoLabel(label: string): void {
    const frame = this.#frames.at(-1);
    if (!frame) throw new CommandFailure("not in a script");
    if (!frame.labels) {
      // Same scan as iPXE's (continuations included), done once per script.
      frame.labels = new Map();
      let offset = 0;
      do {
        const line = readLine(frame.text, offset);
        offset = line.next;
        if (line.unterminated) break;
        if (line.label !== undefined && !frame.labels.has(line.label)) {
          frame.labels.set(line.label, line.offset);
        }
      } while (offset < frame.text.length);
    }
    const target = frame.labels.get(label);
    if (target !== undefined) {
      frame.offset = target;
      this.shellStop(1);
      return;
    }
    throw new CommandFailure(`label "${label}" not found`);
  }

  async #system(command: string): Promise<number> {
    const segments = splitCommands(splitTokens(command));
    let rc = 0;
    let process = true;
    for (const segment of segments) {
      if (process) {
        if (++this.#steps > this.#maxSteps) {
          throw this.fatal(
            `more than ${this.#maxSteps} commands executed (an endless goto loop?)`,
          );
        }
        const argv: string[] = [];
        let total = 0;
        try {
          for (const token of segment.tokens) {
            const arg = this.settings.expand(token);
            total += arg.length + 1;
            if (total > MAX_COMMAND_BYTES) {
              throw new ExpansionLimitError(
                `the command grew past ${MAX_COMMAND_BYTES} bytes after expansion`,
              );
            }
            argv.push(arg);
          }
        } catch (e) {
          if (e instanceof ExpansionLimitError) throw this.fatal(e.message);
          throw e;
        }
        rc = await this.#execv(argv);
      }
      if (this.#shellStopped(1)) break;
      if (!segment.next) break;
      process = segment.next === "||"
        ? rc !== 0
        : segment.next === "&&"
        ? rc === 0
        : true;
    }
    return rc;
  }

  async #execv(argv: string[]): Promise<number> {
    if (argv.length === 0) return 0;
    const command = this.#commands.get(argv[0]);
    try {
      if (!command) throw new CommandFailure(`${argv[0]}: command not found`);
      return await command(argv, this);
    } catch (e) {
      if (e instanceof ExpansionLimitError) throw this.fatal(e.message);
      if (e instanceof CommandFailure) {
        this.print(e.message);
        this.recordFailure(e.message, e.cause);
        return e.status;
      }
      if (e instanceof UsageError || e instanceof SettingParseError) {
        const message = `${argv[0]}: ${e.message}`;
        this.print(message);
        this.recordFailure(message);
        return FAILED;
      }
      throw e;
    }
  }

  /**
   * Runs the first script and returns the plan, or throws
   * {@linkcode IpxeError} (carrying, as its cause, what made the last
   * command fail: a refused fetch keeps its own exit code).
   */
  async run(root: Image): Promise<BootPlan> {
    let rc: number;
    try {
      rc = await this.execImage(root);
    } catch (e) {
      if (e instanceof Booted) return e.plan;
      throw e;
    }
    const url = fromBinary(root.url);
    if (rc === 0 && this.#exitedAt !== undefined) {
      return {
        action: "local-boot",
        reason:
          `${this.#exitedAt}: exit: the script handed the machine back to the firmware's next boot device`,
      };
    }
    if (rc === 0) {
      throw new IpxeError(`Script ${url} ended without booting a kernel`);
    }
    throw new IpxeError(
      this.lastFailure ?? `Script ${url} failed with status ${rc}`,
      { cause: this.lastFailureCause },
    );
  }
}

/** The value after `key` in a command line, when `key` starts an argument (iPXE `image_argument`). */
function imageArgument(cmdline: string, key: string): string | undefined {
  let from = 0;
  for (;;) {
    const match = cmdline.indexOf(key, from);
    if (match < 0) return undefined;
    if (match === 0 || cmdline[match - 1] === " ") {
      return cmdline.slice(match + key.length);
    }
    from = match + key.length;
  }
}

/** How iPXE wraps an image with this command line in cpio (`core/cpio.c`), if at all. */
export function cpioWrap(cmdline: string | null): CpioWrap | undefined {
  if (!cmdline) return undefined;
  const path = cmdline.split(" ")[0];
  if (path === "") return undefined;
  let mode = 0o644;
  const modeArg = imageArgument(cmdline, "mode=");
  if (modeArg !== undefined) mode = Number(strtoul(modeArg, 8).value & 0o7777n);
  let mkdir = 0;
  const mkdirArg = imageArgument(cmdline, "mkdir=");
  if (mkdirArg !== undefined) {
    const n = strtoul(mkdirArg, 10).value;
    mkdir = n > 0x7fffffffn ? -1 : Number(n);
  }
  return { path: fromBinary(path), mode, mkdir };
}
