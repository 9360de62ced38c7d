/**
 * What the iPXE commands are built from: a command table, a command that
 * parses its options first, the `--timeout` value, and storing a setting the
 * way `set` does.
 *
 * @module
 */

import { parseInteger } from "./bytes.ts";
import { type CommandSpec, parseOptions } from "./getopt.ts";
import { type Command, CommandFailure, type Engine } from "./interpreter.ts";
import { SettingParseError } from "./setting_types.ts";

/** Commands by name: each entry's names all run its command. */
export type CommandTable = readonly (readonly [string[], Command])[];

/** A command that parses its options by `spec`, then runs `body`. */
export function optionCommand(
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

/** The milliseconds of a `--timeout` option, if given; a value that is no integer fails the command. */
export function timeoutOf(
  opts: Map<string, string | true>,
): number | undefined {
  const t = opts.get("timeout");
  if (typeof t !== "string") return undefined;
  const ms = parseInteger(t);
  if (ms === undefined) {
    throw new CommandFailure(`"${t}": invalid timeout value`);
  }
  return ms;
}

/** A setting to store, and the command that stores it (for its errors). */
export interface SettingStore {
  /** The command's name (`set`, `clear`, `choose`). */
  command: string;
  /** The setting's name, with an optional block and `:type`. */
  name: string;
  /** Its value as text, or undefined to unset it. */
  value: string | undefined;
}

/** Stores a setting the way `set` does; a value its type cannot hold fails the command. */
export function setValue(engine: Engine, store: SettingStore): number {
  try {
    engine.settings.storeFormatted(store.name, store.value);
  } catch (e) {
    if (!(e instanceof SettingParseError)) throw e;
    throw new CommandFailure(
      `${store.command}: Could not store "${store.name}": ${
        (e as Error).message
      }`,
      1,
      { cause: e },
    );
  }
  return 0;
}
