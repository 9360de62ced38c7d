/**
 * The image commands (`hci/commands/image_cmd.c`, `digest_cmd.c`) in plan
 * mode: `kernel` and `initrd` register their URL without downloading it,
 * `chain` downloads a new URL at once to tell a script from a kernel, and
 * the digest commands name images that are not downloaded yet.
 *
 * @module
 */

import {
  type CommandTable,
  optionCommand,
  timeoutOf,
} from "./command_parts.ts";
import { type CommandSpec, type OptionSpec, parseOptions } from "./getopt.ts";
import {
  type Command,
  CommandFailure,
  type Engine,
  type Image,
} from "./interpreter.ts";

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
const IMAGE_USAGE =
  "[--name <name>] [--timeout <timeout>] [--autofree] <uri|image> [<arguments>...]";

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

/** The image commands by name. */
export const IMAGE_COMMANDS: CommandTable = [
  [
    ["imgfetch", "initrd", "module"],
    imageCommand(
      { options: IMAGE_OPTIONS, min: 1, max: Infinity, usage: IMAGE_USAGE },
      registerNew("unknown"),
      noAction,
    ),
  ],
  [
    ["kernel", "imgselect", "imgload"],
    imageCommand(
      { options: IMAGE_OPTIONS, min: 1, max: Infinity, usage: IMAGE_USAGE },
      findOrRegister("kernel"),
      selectAction,
    ),
  ],
  [
    ["chain", "boot", "imgexec"],
    imageCommand(
      {
        options: EXEC_OPTIONS,
        min: 0,
        max: Infinity,
        usage: `[--replace] ${IMAGE_USAGE}`,
      },
      findOrDownload,
      execAction,
    ),
  ],
  [
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
  ],
  [
    ["imgfree"],
    optionCommand(
      { min: 0, max: Infinity, usage: "[<image>...]" },
      (args, engine) => {
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
      },
    ),
  ],
  [
    ["imgstat"],
    optionCommand(
      { min: 0, max: Infinity, usage: "[<image>...]" },
      (args, engine) => {
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
      },
    ),
  ],
  [["md5sum", "sha1sum", "sha256sum"], digest],
];
