/**
 * Reading an iPXE script: the magic line (`image/script.c: script_probe`),
 * lines with CR stripping, `\` continuations and labels (`process_script`),
 * and splitting a command line into tokens and commands (`core/exec.c`).
 * All text is binary strings (see `bytes.ts`).
 *
 * @module
 */

import { isSpace } from "./bytes.ts";

/** True when the text starts with `#!ipxe` or `#!gpxe` followed by whitespace. */
export function hasScriptMagic(text: string): boolean {
  const head = text.slice(0, 6);
  return (head === "#!ipxe" || head === "#!gpxe") && isSpace(text[6]);
}

/** One logical line of a script. */
export interface ScriptLine {
  /** Byte offset of the line's first physical line. */
  offset: number;
  /** Offset just after this logical line (start of the next one). */
  next: number;
  /** Label (`:name` at the start of the line), or undefined. */
  label?: string;
  /** The command text (after the label, if any). */
  command: string;
  /** The file ended inside a `\` continuation (iPXE returns -EINVAL). */
  unterminated: boolean;
}

/**
 * Reads the logical line starting at `offset` (iPXE `process_script`): one
 * trailing CR per physical line is removed, a trailing `\` joins the next line
 * directly, leading whitespace is skipped, and `:label` is split off.
 */
export function readLine(text: string, offset: number): ScriptLine {
  let line = "";
  let pos = offset;
  let unterminated = false;
  for (;;) {
    let eol = text.indexOf("\n", pos);
    if (eol < 0) eol = text.length;
    line += text.slice(pos, eol);
    pos = eol + 1;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.endsWith("\\")) {
      line = line.slice(0, -1);
      if (pos >= text.length) {
        unterminated = true;
        break;
      }
      continue;
    }
    break;
  }
  // iPXE works on C strings: a NUL byte ends the line.
  const nul = line.indexOf("\0");
  if (nul >= 0) line = line.slice(0, nul);
  let i = 0;
  while (isSpace(line[i])) i++;
  if (line[i] === ":") {
    let j = i + 1;
    while (j < line.length && !isSpace(line[j])) j++;
    const label = line.slice(i + 1, j);
    return {
      offset,
      next: pos,
      label,
      command: line.slice(j + 1),
      unterminated,
    };
  }
  return { offset, next: pos, command: line.slice(i), unterminated };
}

/** Splits a command line into whitespace-separated raw tokens (iPXE `split_command`). */
export function splitTokens(command: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < command.length) {
    while (i < command.length && isSpace(command[i])) i++;
    if (i >= command.length) break;
    let j = i;
    while (j < command.length && !isSpace(command[j])) j++;
    tokens.push(command.slice(i, j));
    i = j;
  }
  return tokens;
}

/** How the next command of a line is chosen (`||`, `&&`, `;`). */
export type Separator = "||" | "&&" | ";";

/** One command of a line: raw (unexpanded) tokens and what follows it. */
export interface CommandSegment {
  /** Raw tokens, before `${…}` expansion; empty for an empty command. */
  tokens: string[];
  /** The separator after this command, or undefined at the end of the line or at a comment. */
  next?: Separator;
}

/**
 * Cuts a token list into commands at whole-token `||`, `&&` and `;`, stopping
 * at the first token that starts with `#` (iPXE `command_terminator`).
 */
export function splitCommands(tokens: string[]): CommandSegment[] {
  const out: CommandSegment[] = [];
  let current: string[] = [];
  for (const token of tokens) {
    if (token.startsWith("#")) {
      out.push({ tokens: current });
      return out;
    }
    if (token === "||" || token === "&&" || token === ";") {
      out.push({ tokens: current, next: token });
      current = [];
      continue;
    }
    current.push(token);
  }
  out.push({ tokens: current });
  return out;
}

/** 1-based line number of a byte offset. */
export function lineNumberAt(text: string, offset: number): number {
  let n = 1;
  for (
    let i = text.indexOf("\n");
    i >= 0 && i < offset;
    i = text.indexOf("\n", i + 1)
  ) n++;
  return n;
}
