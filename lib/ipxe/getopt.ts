/**
 * iPXE command option parsing (`core/getopt.c`, `core/parseopt.c`): options
 * only before the first non-option, `--` ends them, `--name=x`, `--name x`,
 * `-n x`, `-nx`, grouped short flags, last repeat wins, unknown options fail.
 *
 * @module
 */

/** One option a command accepts. */
export interface OptionSpec {
  /** Long name (`name` for `--name`). */
  long: string;
  /** Short letter (`n` for `-n`). */
  short?: string;
  /** The option takes an argument. */
  arg?: boolean;
}

/** What a command accepts. */
export interface CommandSpec {
  /** Accepted options. */
  options?: OptionSpec[];
  /** Minimum number of non-option arguments. */
  min: number;
  /** Maximum number of non-option arguments (Infinity for any). */
  max: number;
  /** Usage text shown on error, without the command name. */
  usage: string;
}

/** Parsed command line. */
export interface ParsedArgs {
  /** Option values by long name (`true` for flags). */
  opts: Map<string, string | true>;
  /** Non-option arguments, in order. */
  args: string[];
}

/** Thrown for an invalid command line; the message is one line. */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Parses `argv` (argv[0] is the command name) against `spec`. */
export function parseOptions(argv: string[], spec: CommandSpec): ParsedArgs {
  const command = argv[0];
  const options = spec.options ?? [];
  const opts = new Map<string, string | true>();
  const usage = () => `usage: ${command} ${spec.usage}`.trimEnd();
  let i = 1;
  while (i < argv.length) {
    const arg = argv[i];
    if (arg === "--") {
      i++;
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      const opt = options.find((o) => o.long === name);
      if (!opt) {
        throw new UsageError(`unrecognised option "${arg}" (${usage()})`);
      }
      if (opt.arg) {
        if (eq >= 0) {
          opts.set(opt.long, arg.slice(eq + 1));
        } else {
          if (i + 1 >= argv.length) {
            throw new UsageError(
              `option "${arg}" requires an argument (${usage()})`,
            );
          }
          opts.set(opt.long, argv[++i]);
        }
      } else {
        if (eq >= 0) {
          throw new UsageError(
            `option "--${name}" takes no argument (${usage()})`,
          );
        }
        opts.set(opt.long, true);
      }
      i++;
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      let j = 1;
      while (j < arg.length) {
        const letter = arg[j];
        const opt = options.find((o) => o.short === letter);
        if (!opt) {
          throw new UsageError(`unrecognised option "-${letter}" (${usage()})`);
        }
        if (opt.arg) {
          if (j + 1 < arg.length) {
            opts.set(opt.long, arg.slice(j + 1));
          } else {
            if (i + 1 >= argv.length) {
              throw new UsageError(
                `option "-${letter}" requires an argument (${usage()})`,
              );
            }
            opts.set(opt.long, argv[++i]);
          }
          break;
        }
        opts.set(opt.long, true);
        j++;
      }
      i++;
      continue;
    }
    break;
  }
  const args = argv.slice(i);
  if (args.length < spec.min || args.length > spec.max) {
    throw new UsageError(usage());
  }
  return { opts, args };
}
