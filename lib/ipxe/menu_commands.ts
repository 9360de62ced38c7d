/**
 * The menu commands (`hci/commands/menu_cmd.c`), never interactive: `choose`
 * takes the item a user would get by pressing Enter at once, or the one
 * iPXE picks when its `--timeout` expires, and fails when there is none.
 *
 * @module
 */

import { parseOptions } from "./getopt.ts";
import { type CommandTable, optionCommand, setValue } from "./command_parts.ts";
import { type Command, CommandFailure } from "./interpreter.ts";

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
  return setValue(engine, {
    command: "choose",
    name: args[0],
    value: choice.label,
  });
};

/** The menu commands by name. */
export const MENU_COMMANDS: CommandTable = [
  [
    ["menu"],
    optionCommand(
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
  ],
  [
    ["item"],
    optionCommand(
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
  ],
  [["choose"], chooseCommand],
];
