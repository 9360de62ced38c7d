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
import {
  type CommandTable,
  optionCommand,
  setValue,
  timeoutOf,
} from "./command_parts.ts";
import { parseOptions } from "./getopt.ts";
import { IMAGE_COMMANDS } from "./image_commands.ts";
import { type Command, CommandFailure } from "./interpreter.ts";
import { MENU_COMMANDS } from "./menu_commands.ts";
import { denumerate, numerate, type SettingType } from "./setting_types.ts";
import { parseSettingName } from "./settings.ts";

/**
 * The longest `sleep` a script may ask for, in seconds (an hour): an
 * unattended boot that waits longer is stuck, and a longer wait would also
 * overflow a timer. A longer one fails, like an invalid value.
 */
export const MAX_SLEEP_SECONDS = 3600;

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

/** Flow control and settings. */
const FLOW_COMMANDS: CommandTable = [
  [
    ["echo"],
    optionCommand({
      options: [{ long: "n", short: "n" }],
      min: 0,
      max: Infinity,
      usage: "[-n] [...]",
    }, (args, engine, opts) => {
      engine.print(args.join(" "), !opts.get("n"));
      return 0;
    }),
  ],
  [
    ["set"],
    optionCommand(
      { min: 1, max: Infinity, usage: "<setting> <value>" },
      (args, engine) =>
        setValue(engine, {
          command: "set",
          name: args[0],
          value: args.slice(1).join(" "),
        }),
    ),
  ],
  [
    ["clear"],
    optionCommand(
      { min: 1, max: 1, usage: "<setting>" },
      (args, engine) =>
        setValue(engine, {
          command: "clear",
          name: args[0],
          value: undefined,
        }),
    ),
  ],
  [
    ["read"],
    optionCommand({ min: 1, max: 1, usage: "<setting>" }, () => {
      throw new CommandFailure(
        "read: no console input in a non-interactive boot",
      );
    }),
  ],
  [["inc"], incCommand],
  [
    ["show"],
    optionCommand({ min: 1, max: 1, usage: "<setting>" }, (args, engine) => {
      const value = engine.settings.fetchFormatted(args[0]);
      if (value === undefined) {
        throw new CommandFailure(`show: Could not find "${args[0]}"`);
      }
      engine.print(`${args[0]} = ${value}`);
      return 0;
    }),
  ],
  [
    ["isset"],
    optionCommand({ min: 1, max: 1, usage: "<value>" }, (args) => {
      if (args[0] === "") throw new CommandFailure("isset: the value is empty");
      return 0;
    }),
  ],
  [
    ["iseq"],
    optionCommand({ min: 2, max: 2, usage: "<value1> <value2>" }, (args) => {
      if (args[0] !== args[1]) {
        throw new CommandFailure(`iseq: "${args[0]}" is not "${args[1]}"`);
      }
      return 0;
    }),
  ],
  [
    ["goto"],
    optionCommand({ min: 1, max: 1, usage: "<label>" }, (args, engine) => {
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
  ],
  [
    ["exit"],
    optionCommand({ min: 0, max: 1, usage: "[<status>]" }, (args, engine) => {
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
  ],
  [
    ["sleep"],
    optionCommand(
      { min: 1, max: 1, usage: "<seconds>" },
      async (args, engine) => {
        const n = parseInteger(args[0]);
        if (n === undefined) {
          throw new CommandFailure(
            `sleep: "${args[0]}": invalid integer value`,
          );
        }
        if (n > MAX_SLEEP_SECONDS) {
          throw new CommandFailure(
            `sleep: ${n} s is longer than the ${MAX_SLEEP_SECONDS} s a script may sleep`,
          );
        }
        await engine.sleep(n * 1000);
        return 0;
      },
    ),
  ],
  [
    ["prompt"],
    optionCommand(
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
  ],
];

/** Network, console and housekeeping commands: the network is already up. */
const MACHINE_COMMANDS: CommandTable = [
  [
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
  ],
];

/** `cpuid`, which iPXE builds for x86 only. */
function cpuid(buildarch: string): Command {
  return optionCommand(
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
  );
}

/** Commands that leave the loader. */
const LEAVING_COMMANDS: CommandTable = [
  [["poweroff"], refuse("the script asked to power off")],
  [["reboot"], refuse("the script asked to reboot")],
  [["shell"], refuse("the script asked for an interactive shell")],
  [["login"], refuse("the script asked for an interactive login")],
  [
    ["config"],
    refuse("the script asked for the interactive settings editor"),
  ],
  [["autoboot"], refuse("the script asked for a new DHCP autoboot")],
  [["sanboot"], sanboot],
  [
    ["sanhook", "sanunhook"],
    refuse("SAN devices are not supported"),
  ],
];

/** Builds the command table of a build for `buildarch`. */
export function createCommands(buildarch: string): Map<string, Command> {
  const table = new Map<string, Command>();
  const x86 = buildarch === "x86_64" || buildarch === "i386";
  for (
    const [names, command] of [
      ...IMAGE_COMMANDS,
      ...FLOW_COMMANDS,
      ...MENU_COMMANDS,
      ...MACHINE_COMMANDS,
      ...(x86 ? [[["cpuid"], cpuid(buildarch)] as const] : []),
      ...LEAVING_COMMANDS,
    ]
  ) {
    for (const name of names) table.set(name, command);
  }
  return table;
}
