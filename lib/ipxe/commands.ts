/**
 * The iPXE commands, as a stock build has them (`hci/commands/*.c`), in plan
 * mode: network commands succeed (the network is up), interactive commands
 * never block, commands that would leave the loader (`poweroff`, `shell`, a
 * SAN `sanboot`…) fail with a message naming them; `sanboot` of the local
 * disk, and `exit` from the outermost script, end the run with a local boot.
 *
 * @module
 */

import { parseInteger } from "./bytes.ts";
import { type CommandSpec, type OptionSpec, parseOptions } from "./getopt.ts";
import {
  type Command,
  CommandFailure,
  type Engine,
  type Image,
} from "./interpreter.ts";
import {
  denumerate,
  numerate,
  parseSettingName,
  SettingParseError,
  type SettingType,
} from "./settings.ts";

/**
 * The longest `sleep` a script may ask for, in seconds (an hour): an
 * unattended boot that waits longer is stuck, and a longer wait would also
 * overflow a timer. A longer one fails, like an invalid value.
 */
export const MAX_SLEEP_SECONDS = 3600;

const IMAGE_OPTIONS: OptionSpec[] = [
  { long: "name", short: "n", arg: true },
  { long: "timeout", short: "t", arg: true },
  { long: "autofree", short: "a" },
  { long: "quiet", short: "q" },
];
const EXEC_OPTIONS: OptionSpec[] = [...IMAGE_OPTIONS, {
  long: "replace",
  short: "r",
}];

function timeoutOf(opts: Map<string, string | true>): number | undefined {
  const t = opts.get("timeout");
  if (typeof t !== "string") return undefined;
  const ms = parseInteger(t);
  if (ms === undefined) {
    throw new CommandFailure(`"${t}": invalid timeout value`);
  }
  return ms;
}

/** iPXE `imgsingle_exec` for the image commands. */
function imageCommand(
  spec: CommandSpec,
  acquire: (
    engine: Engine,
    nameOrUri: string,
    timeoutMs?: number,
  ) => Promise<Image> | Image,
  action: (
    engine: Engine,
    image: Image,
    opts: Map<string, string | true>,
    timeoutMs?: number,
  ) => Promise<number> | number,
  preaction?: (image: Image) => void,
): Command {
  return async (argv, engine) => {
    try {
      return await imageCommandBody(argv, engine);
    } catch (e) {
      if (e instanceof CommandFailure) {
        throw new CommandFailure(`${argv[0]} ${e.message}`, e.status, {
          cause: e.cause,
        });
      }
      throw e;
    }
  };
  async function imageCommandBody(
    argv: string[],
    engine: Engine,
  ): Promise<number> {
    const { opts, args } = parseOptions(argv, spec);
    const timeoutMs = timeoutOf(opts);
    let image: Image | undefined;
    let cmdline: string | null = null;
    if (args.length > 0) {
      if (args.length > 1) cmdline = args.slice(1).join(" ");
      image = await acquire(engine, args[0], timeoutMs);
    } else {
      image = engine.selectedImage();
      if (!image) {
        engine.print("No image selected");
        return 0;
      }
    }
    preaction?.(image);
    const name = opts.get("name");
    if (typeof name === "string") image.name = name;
    if (cmdline !== null) image.cmdline = cmdline;
    if (opts.get("autofree")) image.autofree = true;
    return await action(engine, image, opts, timeoutMs);
  }
}

/** Register a URL without downloading it (plan mode `imgdownload`). */
function registerNew(kind: Image["kind"]) {
  return (engine: Engine, uri: string): Image => {
    const image = engine.newImage(uri, kind);
    engine.register(image);
    return image;
  };
}

/** iPXE `imgacquire`: an image with that name, else a new one. */
function findOrRegister(kind: Image["kind"]) {
  return (engine: Engine, nameOrUri: string): Image =>
    engine.findImage(nameOrUri) ?? registerNew(kind)(engine, nameOrUri);
}

/** `imgacquire` for executed images: a new URL is downloaded now to tell a script from a kernel. */
async function findOrDownload(
  engine: Engine,
  nameOrUri: string,
  timeoutMs?: number,
): Promise<Image> {
  const found = engine.findImage(nameOrUri);
  if (found) return found;
  const image = engine.newImage(nameOrUri, "unknown");
  await engine.probe(image, timeoutMs);
  engine.register(image);
  return image;
}

async function execAction(
  engine: Engine,
  image: Image,
  opts: Map<string, string | true>,
  timeoutMs?: number,
): Promise<number> {
  if (opts.get("replace")) {
    if (image.kind === "unknown") await engine.probe(image, timeoutMs);
    engine.replaceCurrent(image);
    return 0;
  }
  return await engine.execImage(image, timeoutMs);
}

function selectAction(engine: Engine, image: Image): number {
  engine.select(image);
  return 0;
}

const noAction = () => 0;

/** Image names given to `imgfree`/`imgstat`/digests must exist (iPXE `imgmulti_exec`). */
function namedImages(
  engine: Engine,
  argv: string[],
  names: string[],
  each: (image: Image) => void,
): number {
  for (const name of names) {
    const image = engine.findImage(name);
    if (!image) {
      throw new CommandFailure(`${argv[0]}: "${name}": no such image`);
    }
    each(image);
  }
  return 0;
}

function simple(
  spec: CommandSpec,
  body: (
    args: string[],
    engine: Engine,
    opts: Map<string, string | true>,
  ) => Promise<number> | number,
): Command {
  return (argv, engine) => {
    const { opts, args } = parseOptions(argv, spec);
    return body(args, engine, opts);
  };
}

/** A command that cannot work in this loader and says why. */
function refuse(reason: string): Command {
  return (argv) => {
    throw new CommandFailure(`${argv[0]}: ${reason}`);
  };
}

/**
 * `sanboot` without a root path boots a local drive (`--drive`, 0x80 by
 * default): the machine goes back to its own disk, a local boot. With a
 * root path (iSCSI, AoE, HTTP…) it would boot a SAN target: not supported.
 */
const sanboot: Command = (argv, engine) => {
  const { opts, args } = parseOptions(argv, {
    options: [
      { long: "drive", short: "d", arg: true },
      { long: "no-describe", short: "n" },
      { long: "keep", short: "k" },
      { long: "filename", short: "f", arg: true },
      { long: "extra", short: "e", arg: true },
      { long: "label", short: "l", arg: true },
      { long: "uuid", short: "u", arg: true },
    ],
    min: 0,
    max: Infinity,
    usage: "[--drive <drive>] [--no-describe] [--keep] [<root path>...]",
  });
  if (args.length > 0) {
    throw new CommandFailure(
      `${argv[0]}: booting from a SAN target is not supported`,
    );
  }
  const drive = opts.get("drive");
  return engine.bootLocal(
    `sanboot: boot from the local disk${
      typeof drive === "string" ? ` (drive ${drive})` : ""
    }`,
  );
};

/** A network or console command that has nothing to do here: succeeds whatever its arguments. */
const succeed: Command = () => 0;

function digest(argv: string[], engine: Engine): number {
  const { args } = parseOptions(argv, {
    min: 1,
    max: Infinity,
    usage: "<image> [<image>...]",
  });
  return namedImages(
    engine,
    argv,
    args,
    (image) => engine.print(`(not downloaded yet)  ${image.name}`),
  );
}

function setValue(
  engine: Engine,
  argv0: string,
  name: string,
  value: string | undefined,
): number {
  try {
    engine.settings.storeFormatted(name, value);
  } catch (e) {
    if (!(e instanceof SettingParseError)) throw e;
    throw new CommandFailure(
      `${argv0}: Could not store "${name}": ${(e as Error).message}`,
      1,
      { cause: e },
    );
  }
  return 0;
}

const incCommand: Command = (argv, engine) => {
  const { args } = parseOptions(argv, {
    min: 1,
    max: 2,
    usage: "<setting> [<increment>]",
  });
  let increment = 1;
  if (args.length > 1) {
    const n = parseInteger(args[1]);
    if (n === undefined) {
      throw new CommandFailure(`inc: "${args[1]}": invalid integer value`);
    }
    increment = n;
  }
  const parsed = parseSettingName(args[0]);
  if (parsed.badType !== undefined) {
    throw new CommandFailure(`inc: unknown setting type "${parsed.badType}"`);
  }
  const stored = engine.settings.fetch(parsed.block, parsed.name);
  const type: SettingType = parsed.type ?? stored?.type ?? "int32";
  const value = stored ? numerate({ raw: stored.raw, type }) ?? 0n : 0n;
  const raw = denumerate(type, value + BigInt(increment));
  if (raw === undefined) {
    throw new CommandFailure(
      `inc: Could not store "${parsed.name}": not a number`,
    );
  }
  engine.settings.storeRaw(parsed.block, parsed.name, { raw, type });
  return 0;
};

const chooseCommand: Command = (argv, engine) => {
  const { opts, args } = parseOptions(argv, {
    options: [
      { long: "menu", short: "m", arg: true },
      { long: "default", short: "d", arg: true },
      { long: "timeout", short: "t", arg: true },
      { long: "keep", short: "k" },
      { long: "select", short: "s" },
    ],
    min: 1,
    max: 1,
    usage:
      "[--menu <menu>] [--default <label>] [--timeout <timeout>] [--keep] <setting>",
  });
  const menuName = opts.get("menu");
  const menu = engine.menus.get(typeof menuName === "string" ? menuName : "");
  if (!menu) throw new CommandFailure(`choose: no such menu`);
  const selectable = menu.items.filter((item) => !item.gap);
  // Non-interactive: the item a user would get by pressing Enter at once
  // (--default, else an `item --default`), or, with --timeout, what iPXE
  // picks when the timeout expires.
  const wanted = opts.get("default");
  const named = typeof wanted === "string" && wanted !== ""
    ? selectable.find((item) => item.label === wanted)
    : selectable.find((item) => item.isDefault);
  const choice = named ??
    (opts.has("timeout")
      ? selectable.find((i) => i.isDefault) ?? selectable[0]
      : undefined);
  if (choice === undefined) {
    throw new CommandFailure(
      typeof wanted === "string" && wanted !== ""
        ? `choose: no item "${wanted}" in the menu (non-interactive boot)`
        : "choose: no --default item and nobody to choose (non-interactive boot)",
    );
  }
  if (!opts.get("keep")) {
    engine.menus.delete(typeof menuName === "string" ? menuName : "");
  }
  return setValue(engine, "choose", args[0], choice.label);
};

/** Builds the command table. */
export function createCommands(buildarch: string): Map<string, Command> {
  const table = new Map<string, Command>();
  const add = (names: string[], command: Command) => {
    for (const name of names) table.set(name, command);
  };

  // Image commands.
  const imageUsage =
    "[--name <name>] [--timeout <timeout>] [--autofree] <uri|image> [<arguments>...]";
  add(
    ["imgfetch", "initrd", "module"],
    imageCommand(
      { options: IMAGE_OPTIONS, min: 1, max: Infinity, usage: imageUsage },
      registerNew("unknown"),
      noAction,
    ),
  );
  add(
    ["kernel", "imgselect", "imgload"],
    imageCommand(
      { options: IMAGE_OPTIONS, min: 1, max: Infinity, usage: imageUsage },
      findOrRegister("kernel"),
      selectAction,
    ),
  );
  add(
    ["chain", "boot", "imgexec"],
    imageCommand(
      {
        options: EXEC_OPTIONS,
        min: 0,
        max: Infinity,
        usage: `[--replace] ${imageUsage}`,
      },
      findOrDownload,
      execAction,
    ),
  );
  add(
    ["imgargs"],
    imageCommand(
      {
        options: IMAGE_OPTIONS,
        min: 1,
        max: Infinity,
        usage: "<image> [<arguments>...]",
      },
      findOrRegister("unknown"),
      noAction,
      (image) => {
        image.cmdline = null;
      },
    ),
  );
  add(
    ["imgfree"],
    simple({ min: 0, max: Infinity, usage: "[<image>...]" }, (args, engine) => {
      if (args.length === 0) {
        engine.images.splice(0);
        return 0;
      }
      return namedImages(
        engine,
        ["imgfree"],
        args,
        (image) => engine.unregister(image),
      );
    }),
  );
  add(
    ["imgstat"],
    simple({ min: 0, max: Infinity, usage: "[<image>...]" }, (args, engine) => {
      const show = (image: Image) =>
        engine.print(
          `${image.name} : ${image.url}${
            engine.isSelected(image) ? " [SELECTED]" : ""
          }${image.cmdline !== null ? ` "${image.cmdline}"` : ""}`,
        );
      if (args.length === 0) {
        engine.images.forEach(show);
        return 0;
      }
      return namedImages(engine, ["imgstat"], args, show);
    }),
  );
  add(["md5sum", "sha1sum", "sha256sum"], digest);

  // Flow control and settings.
  add(
    ["echo"],
    simple({
      options: [{ long: "n", short: "n" }],
      min: 0,
      max: Infinity,
      usage: "[-n] [...]",
    }, (args, engine, opts) => {
      engine.print(args.join(" "), !opts.get("n"));
      return 0;
    }),
  );
  add(
    ["set"],
    simple(
      { min: 1, max: Infinity, usage: "<setting> <value>" },
      (args, engine) =>
        setValue(engine, "set", args[0], args.slice(1).join(" ")),
    ),
  );
  add(
    ["clear"],
    simple(
      { min: 1, max: 1, usage: "<setting>" },
      (args, engine) => setValue(engine, "clear", args[0], undefined),
    ),
  );
  add(
    ["read"],
    simple({ min: 1, max: 1, usage: "<setting>" }, () => {
      throw new CommandFailure(
        "read: no console input in a non-interactive boot",
      );
    }),
  );
  add(["inc"], incCommand);
  add(
    ["show"],
    simple({ min: 1, max: 1, usage: "<setting>" }, (args, engine) => {
      const value = engine.settings.fetchFormatted(args[0]);
      if (value === undefined) {
        throw new CommandFailure(`show: Could not find "${args[0]}"`);
      }
      engine.print(`${args[0]} = ${value}`);
      return 0;
    }),
  );
  add(
    ["isset"],
    simple({ min: 1, max: 1, usage: "<value>" }, (args) => {
      if (args[0] === "") throw new CommandFailure("isset: the value is empty");
      return 0;
    }),
  );
  add(
    ["iseq"],
    simple({ min: 2, max: 2, usage: "<value1> <value2>" }, (args) => {
      if (args[0] !== args[1]) {
        throw new CommandFailure(`iseq: "${args[0]}" is not "${args[1]}"`);
      }
      return 0;
    }),
  );
  add(
    ["goto"],
    simple({ min: 1, max: 1, usage: "<label>" }, (args, engine) => {
      try {
        engine.gotoLabel(args[0]);
      } catch (e) {
        if (e instanceof CommandFailure) {
          throw new CommandFailure(`goto: ${e.message}`, e.status, {
            cause: e.cause,
          });
        }
        throw e;
      }
      return 0;
    }),
  );
  add(
    ["exit"],
    simple({ min: 0, max: 1, usage: "[<status>]" }, (args, engine) => {
      let code = 0;
      if (args.length > 0) {
        const n = parseInteger(args[0]);
        if (n === undefined) {
          throw new CommandFailure(`exit: "${args[0]}": invalid integer value`);
        }
        code = n | 0;
      }
      engine.exitScript(code);
      if (code !== 0) {
        engine.recordFailure(`exit: the script exited with status ${code}`);
      }
      return code;
    }),
  );
  add(
    ["sleep"],
    simple({ min: 1, max: 1, usage: "<seconds>" }, async (args, engine) => {
      const n = parseInteger(args[0]);
      if (n === undefined) {
        throw new CommandFailure(`sleep: "${args[0]}": invalid integer value`);
      }
      if (n > MAX_SLEEP_SECONDS) {
        throw new CommandFailure(
          `sleep: ${n} s is longer than the ${MAX_SLEEP_SECONDS} s a script may sleep`,
        );
      }
      await engine.sleep(n * 1000);
      return 0;
    }),
  );
  add(
    ["prompt"],
    simple(
      {
        options: [{ long: "key", short: "k", arg: true }, {
          long: "timeout",
          short: "t",
          arg: true,
        }],
        min: 0,
        max: Infinity,
        usage: "[--key <key>] [--timeout <timeout>] [<text>]",
      },
      (args, engine, opts) => {
        timeoutOf(opts);
        if (args.length > 0) engine.print(args.join(" "));
        throw new CommandFailure(
          "prompt: timed out (no console input in a non-interactive boot)",
        );
      },
    ),
  );

  // Menus.
  add(
    ["menu"],
    simple(
      {
        options: [{ long: "name", short: "n", arg: true }, {
          long: "delete",
          short: "d",
        }],
        min: 0,
        max: Infinity,
        usage: "[--name <name>] [--delete] [<title>]",
      },
      (args, engine, opts) => {
        const name = opts.get("name");
        const key = typeof name === "string" ? name : "";
        if (opts.get("delete")) {
          if (!engine.menus.delete(key)) {
            throw new CommandFailure(`menu: no such menu "${key}"`);
          }
          return 0;
        }
        engine.menus.set(key, { title: args.join(" "), items: [] });
        return 0;
      },
    ),
  );
  add(
    ["item"],
    simple(
      {
        options: [
          { long: "menu", short: "m", arg: true },
          { long: "key", short: "k", arg: true },
          { long: "default", short: "d" },
          { long: "gap", short: "g" },
        ],
        min: 0,
        max: Infinity,
        usage:
          "[--menu <menu>] [--key <key>] [--default] [<label>|--gap [<text>]]",
      },
      (args, engine, opts) => {
        const name = opts.get("menu");
        const menu = engine.menus.get(typeof name === "string" ? name : "");
        if (!menu) throw new CommandFailure("item: no such menu");
        const gap = opts.get("gap") === true;
        if (!gap && args.length === 0) {
          throw new CommandFailure("item: usage: item [<label> [<text>]]");
        }
        menu.items.push({
          label: gap ? "" : args[0],
          text: (gap ? args : args.slice(1)).join(" "),
          gap,
          isDefault: opts.get("default") === true,
        });
        return 0;
      },
    ),
  );
  add(["choose"], chooseCommand);

  // Network, console and housekeeping commands: the network is already up.
  add(
    [
      "dhcp",
      "ifopen",
      "ifclose",
      "ifconf",
      "ifstat",
      "route",
      "ipstat",
      "nstat",
      "ntp",
      "vcreate",
      "vdestroy",
      "sync",
      "console",
      "colour",
      "cpair",
      "params",
      "param",
    ],
    succeed,
  );
  if (buildarch === "x86_64" || buildarch === "i386") {
    add(
      ["cpuid"],
      simple(
        {
          options: [{ long: "ext", short: "e" }, { long: "ecx", short: "c" }],
          min: 1,
          max: 1,
          usage: "[--ext] [--ecx] <bit>",
        },
        (args, _engine, opts) => {
          // Only the long-mode bit (extended function, bit 29) is known in plan mode.
          if (
            opts.get("ext") && !opts.get("ecx") &&
            parseInteger(args[0]) === 29 && buildarch === "x86_64"
          ) return 0;
          throw new CommandFailure(
            `cpuid: CPU feature ${args[0]} is not reported in plan mode`,
          );
        },
      ),
    );
  }

  // Commands that leave the loader.
  add(["poweroff"], refuse("the script asked to power off"));
  add(["reboot"], refuse("the script asked to reboot"));
  add(["shell"], refuse("the script asked for an interactive shell"));
  add(["login"], refuse("the script asked for an interactive login"));
  add(
    ["config"],
    refuse("the script asked for the interactive settings editor"),
  );
  add(["autoboot"], refuse("the script asked for a new DHCP autoboot"));
  add(["sanboot"], sanboot);
  add(
    ["sanhook", "sanunhook"],
    refuse("SAN devices are not supported"),
  );
  return table;
}
