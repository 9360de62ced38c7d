/**
 * The generated reference pages are current (docs/options.md from the option
 * table that `--help` prints, docs/exit_codes.md from `ExitCode`), and every
 * name docs/options.md gives (flag, environment variable, config file key,
 * kernel parameter) is one the configuration parser accepts.
 */

import assert from "node:assert/strict";
import { pages } from "../../dev/gen_docs.ts";
import { helpText, OPTIONS, parseConfig } from "../../lib/config/mod.ts";
import { BootError, ExitCode } from "../../lib/errors.ts";
import { configureLog } from "../../lib/log.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("docs: the generated pages are current (run `deno task docs` when this fails)", async () => {
  for (const page of await pages()) {
    const onDisk = await Deno.readTextFile(`${ROOT}${page.path}`);
    assert.equal(onDisk, page.text, `${page.path} is stale`);
  }
});

Deno.test("docs: the pages carry every option of --help and every exit code", async () => {
  const [options, exitCodes] = (await pages()).map((p) => p.text);
  const helpFlags = [
    ...helpText().matchAll(/^ {2}(?:-\w, | {4})(--[a-z0-9-]+)/gm),
  ]
    .map((m) => m[1]);
  assert.equal(helpFlags.length, Object.keys(OPTIONS).length);
  const docFlags = [...options.matchAll(/^- `(?:-\w, )?(--[a-z0-9-]+)/gm)]
    .map((m) => m[1]);
  assert.deepEqual(docFlags, helpFlags);
  for (const [name, code] of Object.entries(ExitCode)) {
    assert.ok(exitCodes.includes(`- **${code}** (\`${name}\`): `), name);
  }
  assert.match(
    exitCodes,
    /\*\*7\*\* \(`Refused`\): Refused to start: not root/,
  );
});

Deno.test("docs: every flag, variable and kernel parameter of docs/options.md is accepted", async () => {
  const text = (await pages())[0].text;
  const items = text.split("\n- ").slice(1).map((i) =>
    i.replace(/\n\s*/g, " ")
  );
  assert.equal(items.length, Object.keys(OPTIONS).length);
  const warnings: string[] = [];
  configureLog({ sink: (l) => warnings.push(l) });
  try {
    for (const item of items) {
      const flag = /^`(?:-\w, )?--([a-z0-9-]+)/.exec(item)![1];
      if (item.includes("Flag only.")) {
        assert.notEqual(
          parseConfig([`--${flag}`], { env: {}, cmdline: "" }).kind,
          "run",
        );
        continue;
      }
      const boolean = !/^`[^`]* [A-Z]/.test(item);
      const env = /`(ASSISTED_[A-Z0-9_]+)=/.exec(item)![1];
      const key = /`(assisted\.[a-z0-9_-]+)[`=]/.exec(item)![1];
      const value = boolean ? "1" : "docs-test-value";
      // A config file is strict: an unknown key is an error, not ignored.
      const file = `${env}=${value}\n`;
      const known = (
        sources: Parameters<typeof parseConfig>[1],
        argv: string[],
      ) => {
        try {
          parseConfig(argv, sources);
        } catch (err) {
          assert.ok(err instanceof BootError, String(err));
          assert.equal(err.exitCode, ExitCode.Usage);
          assert.doesNotMatch(err.message, /unknown|Unknown option/, item);
        }
      };
      known({ env: {}, cmdline: "", readTextFile: () => file }, [
        "--config",
        "/c",
      ]);
      known({ env: { [env]: value }, cmdline: "" }, []);
      known({ env: {}, cmdline: boolean ? key : `${key}=${value}` }, []);
      known(
        { env: {}, cmdline: "" },
        boolean ? [`--${flag}`] : [`--${flag}`, value],
      );
    }
    assert.deepEqual(
      warnings.filter((w) => /unknown/.test(w)),
      [],
      "no documented kernel parameter is unknown to the parser",
    );
    // The check above can fail: a name the parser does not know is reported.
    assert.throws(
      () =>
        parseConfig(["--config", "/c"], {
          env: {},
          cmdline: "assisted.no_such_option=1",
          readTextFile: () => "ASSISTED_NO_SUCH_OPTION=1\n",
        }),
      /unknown setting ASSISTED_NO_SUCH_OPTION/,
    );
    assert.ok(
      warnings.some((w) => /unknown.*assisted\.no_such_option/.test(w)),
    );
  } finally {
    configureLog({
      sink: (l) => Deno.stderr.writeSync(new TextEncoder().encode(l + "\n")),
    });
  }
});
