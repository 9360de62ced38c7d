/**
 * The kernel command line as the kernel splits it (lib/resolve/kargs.ts), the karg
 * edits built on it (lib/plan.ts `editCmdline`) and the console choice
 * (lib/resolve/consoles.ts), on the exact assisted-service template.
 */
import assert from "node:assert/strict";
import { type Config, parseConfig } from "../../lib/config/mod.ts";
import {
  chooseConsoles,
  consoleArgs,
  isConsoleMode,
} from "../../lib/resolve/consoles.ts";
import {
  argText,
  initArgsStart,
  kargPattern,
  kargProblem,
  parseKernelCmdline,
  rewriteCmdline,
} from "../../lib/resolve/kargs.ts";
import type { ScriptClient } from "../../lib/resolve/infraenv.ts";
import { editCmdline, type KexecPlan } from "../../lib/plan.ts";
import { resolvePlan } from "../../lib/resolve/resolve_plan.ts";
import { captureLog } from "../test_util.ts";
import { renderBootScript } from "../../dev/mock_infraenv.ts";

const ROOTFS =
  "https://api.openshift.com/api/assisted-images/boot-artifacts/rootfs?arch=x86_64&version=4.18";
const HEAD =
  `initrd=initrd coreos.live.rootfs_url=${ROOTFS} random.trust_cpu=on ` +
  "rd.luks.options=discard ignition.firstboot ignition.platform.id=metal";
const PERSISTENT =
  'coreos.inst.persistent-kargs="console=tty1 console=ttyS1,115200n8"';
/** The kernel line of assisted-service's `ipxeBootScriptFormat`, as iPXE hands it over. */
const TEMPLATE = `${HEAD} console=tty1 console=ttyS1,115200n8 ${PERSISTENT}`;

/** [param, value] pairs, the way the kernel reads `line`. */
function kernelView(line: string): [string, string | undefined][] {
  return parseKernelCmdline(line).map((a) => [a.param, a.value]);
}

Deno.test("kargs: the template is the mock's, byte for byte", () => {
  const script = renderBootScript({
    initrd: "http://i/initrd",
    kernel: "http://k/kernel",
    rootfs: ROOTFS,
  });
  assert.equal(script.split("\n")[2], `kernel http://k/kernel ${TEMPLATE}`);
});

Deno.test("kargs: split like the kernel's next_arg", () => {
  assert.deepEqual(kernelView(TEMPLATE).slice(-3), [
    ["console", "tty1"],
    ["console", "ttyS1,115200n8"],
    ["coreos.inst.persistent-kargs", "console=tty1 console=ttyS1,115200n8"],
  ]);
  assert.equal(parseKernelCmdline(TEMPLATE).length, 9);
  const cases: [string, [string, string | undefined][]][] = [
    ['a=1 p="x y" z', [["a", "1"], ["p", "x y"], ["z", undefined]]],
    // A leading quote groups the whole argument and loses its closing quote.
    ['"key=a b"', [["key", "a b"]]],
    ['"a b"', [["a b", undefined]]],
    // A value's leading quote goes, its closing one only at the very end.
    ['key="a b"c', [["key", 'a b"c']]],
    // A quote that starts mid-value groups, and stays.
    ['k=a"b c" d', [["k", 'a"b c"'], ["d", undefined]]],
    // Empty values.
    ['a= b="" c="', [["a", ""], ["b", ""], ["c", ""]]],
    ['""', [["", undefined]]],
    // "=" in the value; an "=" first in the argument does not count.
    ["a=b=c =x =x=y", [["a", "b=c"], ["=x", undefined], ["=x", "y"]]],
    // Every ASCII whitespace separates, runs of it too.
    ["a\tb\nc \v\f\r d", [["a", undefined], ["b", undefined], [
      "c",
      undefined,
    ], ["d", undefined]]],
    ["   ", []],
    // An unbalanced quote runs to the end of the line.
    ['a b="c d e', [["a", undefined], ["b", "c d e"]]],
  ];
  for (const [line, want] of cases) {
    assert.deepEqual(kernelView(line), want, line);
  }
  const open = parseKernelCmdline('a b="c d');
  assert.equal(open[1].unterminated, true);
  assert.equal(open[0].unterminated, undefined);
  assert.deepEqual(
    parseKernelCmdline("  a  bc ").map((a) => [a.start, a.end]),
    [[2, 3], [5, 7]],
  );
});

Deno.test("kargs: `--` ends the kernel's parameters", () => {
  const args = parseKernelCmdline('a b -- c "--" d');
  assert.equal(initArgsStart(args), 2);
  assert.equal(initArgsStart(parseKernelCmdline('a "--" b')), 1);
  assert.equal(initArgsStart(parseKernelCmdline("a --=x b")), 3);
  assert.deepEqual(args.map(argText), ["a", "b", "--", "c", "--", "d"]);
});

Deno.test("kargs: one argument or a clear reason", () => {
  assert.equal(kargProblem("console=ttyS0"), undefined);
  assert.equal(kargProblem('p="a b"'), undefined);
  assert.equal(kargProblem("a=b=c"), undefined);
  assert.match(kargProblem('p="a b')!, /unbalanced double quote/);
  assert.match(kargProblem("a b")!, /2 arguments/);
  assert.match(kargProblem("  ")!, /empty/);
});

Deno.test("editCmdline: --delete-karg console deletes the two consoles, not the quoted value's halves", () => {
  const out = editCmdline(TEMPLATE, {
    remove: ["console"],
    append: ["console=ttyS0,115200n8"],
  });
  assert.equal(out, `${HEAD} ${PERSISTENT} console=ttyS0,115200n8`);
  assert.deepEqual(kernelView(out).slice(-2), [
    ["coreos.inst.persistent-kargs", "console=tty1 console=ttyS1,115200n8"],
    ["console", "ttyS0,115200n8"],
  ]);
});

Deno.test("editCmdline: every documented edit on the exact template", () => {
  const cases: [string[], string[], string][] = [
    // delete KEY=VALUE: the exact one
    [
      ["console=tty1"],
      [],
      `${HEAD} console=ttyS1,115200n8 ${PERSISTENT}`,
    ],
    [["console=ttyS1,115200n8"], [], `${HEAD} console=tty1 ${PERSISTENT}`],
    // not a value it does not have
    [["console=ttyS0"], [], TEMPLATE],
    // delete KEY: every argument with that key, nothing with a longer key
    [["rd.luks.options"], [], TEMPLATE.replace(" rd.luks.options=discard", "")],
    [["rd.luks"], [], TEMPLATE],
    [["ignition.firstboot"], [], TEMPLATE.replace(" ignition.firstboot", "")],
    [["initrd"], [], TEMPLATE.replace("initrd=initrd ", "")],
    // the quoted karg, whole: by key, by quoted value, by unquoted value
    [
      ["coreos.inst.persistent-kargs"],
      [],
      TEMPLATE.replace(
        ` ${PERSISTENT}`,
        "",
      ),
    ],
    [[PERSISTENT], [], TEMPLATE.replace(` ${PERSISTENT}`, "")],
    [
      ["coreos.inst.persistent-kargs=console=tty1 console=ttyS1,115200n8"],
      [],
      TEMPLATE.replace(` ${PERSISTENT}`, ""),
    ],
    [
      ['"coreos.inst.persistent-kargs=console=tty1 console=ttyS1,115200n8"'],
      [],
      TEMPLATE.replace(` ${PERSISTENT}`, ""),
    ],
    [
      ['coreos.inst.persistent-kargs="console=tty1"'],
      [],
      TEMPLATE,
    ],
    // appends: after everything, each one argument
    [[], ["console=ttyS0"], `${TEMPLATE} console=ttyS0`],
    [[], ['quoted="a b"', "x"], `${TEMPLATE} quoted="a b" x`],
    // a karg inside the quoted value is not one
    [["console=tty1 console=ttyS1,115200n8"], [], TEMPLATE],
  ];
  for (const [remove, append, want] of cases) {
    assert.equal(
      editCmdline(TEMPLATE, { remove, append }),
      want,
      `remove ${JSON.stringify(remove)} append ${JSON.stringify(append)}`,
    );
  }
});

Deno.test("editCmdline: deletions keep every other byte", () => {
  const line = '  a=1  b\tc="x  y"   b=2 d  ';
  // A deleted argument takes the whitespace before it along.
  assert.equal(editCmdline(line, { remove: ["b"] }), '  a=1\tc="x  y" d  ');
  assert.equal(editCmdline(line, { remove: ["a"] }), '  b\tc="x  y"   b=2 d  ');
  assert.equal(
    editCmdline(line, { remove: ["d"] }),
    '  a=1  b\tc="x  y"   b=2  ',
  );
  assert.equal(
    editCmdline(line, { remove: ["b=2"] }),
    '  a=1  b\tc="x  y" d  ',
  );
  assert.equal(editCmdline(line, { remove: ["c=x  y"] }), "  a=1  b   b=2 d  ");
  assert.equal(editCmdline(line, { remove: ["zz"] }), line);
  assert.equal(editCmdline(line, {}), line);
  assert.equal(
    editCmdline(line, { remove: ["a", "b", "c", "d"] }),
    "    ",
    "the leading and trailing whitespace stay",
  );
});

Deno.test("editCmdline: KEY and KEY=VALUE are exact; empty values and '=' in values", () => {
  const line = "console=tty0 consoleblank=0 consolex quiet= quiet a=b=c a=b";
  assert.equal(
    editCmdline(line, { remove: ["console"] }),
    "consoleblank=0 consolex quiet= quiet a=b=c a=b",
  );
  assert.equal(
    editCmdline(line, { remove: ["quiet="] }),
    "console=tty0 consoleblank=0 consolex quiet a=b=c a=b",
  );
  assert.equal(
    editCmdline(line, { remove: ["quiet"] }),
    "console=tty0 consoleblank=0 consolex a=b=c a=b",
  );
  assert.equal(
    editCmdline(line, { remove: ["a=b=c"] }),
    "console=tty0 consoleblank=0 consolex quiet= quiet a=b",
  );
  assert.equal(
    editCmdline(line, { remove: ["a=b"] }),
    "console=tty0 consoleblank=0 consolex quiet= quiet a=b=c",
  );
});

Deno.test("editCmdline: hostile lines: unbalanced quotes, `--`, empty lines", () => {
  // The open quote swallows the rest: that is one argument, deleted whole.
  assert.equal(
    editCmdline('a b="c console=x d', { remove: ["console"] }),
    'a b="c console=x d',
  );
  assert.equal(editCmdline('a b="c console=x d', { remove: ["b"] }), "a");
  // An append never lands inside a quote left open.
  const appended = editCmdline('a b="c d ', { append: ["console=ttyS0"] });
  assert.equal(appended, 'a b="c d " console=ttyS0');
  assert.deepEqual(kernelView(appended), [
    ["a", undefined],
    ["b", "c d "],
    ["console", "ttyS0"],
  ]);
  // After `--` are init's arguments: not deleted, and appends go before it.
  assert.equal(
    editCmdline("a console=tty1 -- console=x b", {
      remove: ["console"],
      append: ["console=ttyS0"],
    }),
    "a console=ttyS0 -- console=x b",
  );
  assert.equal(editCmdline("-- x", { append: ["k"] }), "k -- x");
  assert.equal(editCmdline("", { append: ["b"] }), "b");
  assert.equal(editCmdline("   a", { append: ["b"] }), "   a b");
  assert.equal(editCmdline("a ", { append: ["b", "c"] }), "a b c ");
});

const HOST_FCOS =
  "BOOT_IMAGE=(hd0,gpt3)/ostree/fedora-coreos-abc/vmlinuz-6.8 rw mitigations=auto,nosmt " +
  "ignition.platform.id=metal ostree=/ostree/boot.1/fedora-coreos/abc/0 console=tty0 console=ttyS0,115200n8";

Deno.test("consoles: the host's console= arguments, at the kernel's level only", () => {
  assert.deepEqual(consoleArgs(HOST_FCOS), [
    "console=tty0",
    "console=ttyS0,115200n8",
  ]);
  assert.deepEqual(consoleArgs(TEMPLATE), [
    "console=tty1",
    "console=ttyS1,115200n8",
  ]);
  assert.deepEqual(
    consoleArgs(
      'quiet consoleblank=0 console= "console=ttyAMA0" x="console=tty9" -- console=tty8',
    ),
    ["console=ttyAMA0"],
  );
  assert.deepEqual(consoleArgs("root=/dev/vda quiet"), []);
  assert.ok(isConsoleMode("host-persistent") && !isConsoleMode("auto"));
});

Deno.test("consoles: host mode replaces the top-level consoles in place, keeps persistent-kargs", () => {
  const choice = chooseConsoles(TEMPLATE, {
    mode: "host",
    hostCmdline: HOST_FCOS,
  });
  assert.equal(
    choice.cmdline,
    `${HEAD} console=tty0 console=ttyS0,115200n8 ${PERSISTENT}`,
  );
  assert.deepEqual(choice.consoles, ["console=tty0", "console=ttyS0,115200n8"]);
  assert.deepEqual(choice.before, ["console=tty1", "console=ttyS1,115200n8"]);
  // A cloud VM on ttyS0, an arm64 machine on ttyAMA0.
  assert.equal(
    chooseConsoles(TEMPLATE, { mode: "host", hostCmdline: "console=ttyS0" })
      .cmdline,
    `${HEAD} console=ttyS0 ${PERSISTENT}`,
  );
  assert.equal(
    chooseConsoles(`${TEMPLATE} extra=1 console=tty5`, {
      mode: "host",
      hostCmdline: "root=x console=ttyAMA0,115200",
    }).cmdline,
    `${HEAD} console=ttyAMA0,115200 ${PERSISTENT} extra=1`,
  );
});

Deno.test("consoles: host-persistent rewrites the installed system's consoles too", () => {
  const out = chooseConsoles(TEMPLATE, {
    mode: "host-persistent",
    hostCmdline: HOST_FCOS,
  }).cmdline;
  assert.equal(
    out,
    `${HEAD} console=tty0 console=ttyS0,115200n8 ` +
      'coreos.inst.persistent-kargs="console=tty0 console=ttyS0,115200n8"',
  );
  // Other kargs inside the value stay, in place.
  assert.equal(
    chooseConsoles('coreos.inst.persistent-kargs="a console=tty1 b"', {
      mode: "host-persistent",
      hostCmdline: "console=ttyS0",
    }).cmdline,
    'coreos.inst.persistent-kargs="a console=ttyS0 b" console=ttyS0',
  );
});

Deno.test("consoles: keep mode, a host without console=, the same consoles: the line is untouched", () => {
  const odd = `${HEAD}  console=tty1   console=ttyS1,115200n8 ${PERSISTENT}`;
  for (
    const [mode, host] of [
      ["keep", HOST_FCOS],
      ["host", "root=/dev/vda quiet"],
      ["host-persistent", "BOOT_IMAGE=/vmlinuz console="],
      ["host", "console=tty1 console=ttyS1,115200n8"],
    ] as const
  ) {
    const choice = chooseConsoles(odd, { mode, hostCmdline: host });
    assert.equal(choice.cmdline, odd, `${mode} with ${host}`);
  }
  assert.deepEqual(
    chooseConsoles(odd, { mode: "host", hostCmdline: "quiet" }).consoles,
    [],
  );
});

Deno.test("consoles: a plan without console= gets the host's appended", () => {
  assert.equal(
    chooseConsoles("a b -- init", { mode: "host", hostCmdline: HOST_FCOS })
      .cmdline,
    "a b console=tty0 console=ttyS0,115200n8 -- init",
  );
});

Deno.test("resolvePlan: host consoles first, then the user's edits; the host platform reaches the script", async () => {
  const script = renderBootScript({
    initrd: "http://i/initrd",
    kernel: "http://k/kernel",
    rootfs: ROOTFS,
    extraKargs: ["p=${platform}"],
  });
  const client: ScriptClient = {
    firstUrl: "http://s/script",
    fetch: (url) =>
      Promise.resolve({ url, body: new TextEncoder().encode(script) }),
  };
  const [plan, logged] = await captureLog(() =>
    resolvePlan(client, {
      settings: {},
      console: { mode: "host", hostCmdline: "console=ttyS0" },
      appendKargs: ["console=ttyS2"],
      deleteKargs: ["rd.luks.options"],
      platform: "efi",
    })
  );
  assert.equal(plan.action, "kexec");
  assert.equal(
    (plan as KexecPlan).cmdline,
    TEMPLATE.replace(" rd.luks.options=discard", "").replace(
      "console=tty1 console=ttyS1,115200n8 coreos",
      "console=ttyS0 coreos",
    ) + " p=efi console=ttyS2",
  );
  assert.ok(
    logged.some((l) =>
      l.endsWith(
        "consoles from this kernel's command line: console=ttyS0 (the script had console=tty1 console=ttyS1,115200n8)",
      )
    ),
    logged.join("\n"),
  );
});

/** What each edit in docs/configuration.md's table does to the template, spelled as the docs spell it. */
const DOC_EDITS: Record<string, string> = {
  "--delete-karg console": `${HEAD} ${PERSISTENT}`,
  "--delete-karg console=tty1": `${HEAD} console=ttyS1,115200n8 ${PERSISTENT}`,
  "--delete-karg coreos.inst.persistent-kargs":
    `${HEAD} console=tty1 console=ttyS1,115200n8`,
  "--delete-karg 'coreos.inst.persistent-kargs=console=tty1 console=ttyS1,115200n8'":
    `${HEAD} console=tty1 console=ttyS1,115200n8`,
  "--delete-karg rd.luks.options": TEMPLATE.replace(
    " rd.luks.options=discard",
    "",
  ),
  "--append-karg console=ttyS0,115200n8": `${TEMPLATE} console=ttyS0,115200n8`,
  "--append-karg 'p=a b'": `${TEMPLATE} p="a b"`,
};

Deno.test("editCmdline: each edit docs/configuration.md shows, through the option parser", async () => {
  const doc = await Deno.readTextFile(
    new URL("../../docs/configuration.md", import.meta.url),
  );
  const shown = [...doc.matchAll(/^\| `(--(?:append|delete)-karg [^`]+)`/gm)]
    .map((m) => m[1]);
  assert.deepEqual(shown.toSorted(), Object.keys(DOC_EDITS).toSorted());
  for (const edit of shown) {
    const [flag, ...rest] = edit.split(" ");
    const value = rest.join(" ").replace(/^'(.*)'$/, "$1");
    const parsed = parseConfig(["--ipxe-url", "http://h/s", flag, value], {
      env: {},
      cmdline: "",
      readTextFile: (p) => {
        throw new Deno.errors.NotFound(p);
      },
    });
    assert.equal(parsed.kind, "run");
    const config = (parsed as { config: Config }).config;
    assert.equal(
      editCmdline(TEMPLATE, {
        remove: config.deleteKargs,
        append: config.appendKargs,
      }),
      DOC_EDITS[edit],
      edit,
    );
  }
});

Deno.test("kargs: an argument opened by a quote that never closes keeps its last character; argText joins a value back; an open quote anywhere is unbalanced", () => {
  assert.deepEqual(kernelView('x "a b c'), [["x", undefined], [
    "a b c",
    undefined,
  ]]);
  assert.deepEqual(kernelView('"k=a b'), [["k", "a b"]]);
  assert.equal(argText({ param: "a", value: "b=c" }), "a=b=c");
  assert.equal(argText({ param: "a", value: "" }), "a=");
  assert.equal(argText({ param: "a" }), "a");
  assert.match(kargProblem('a b="c')!, /unbalanced double quote/);
});

Deno.test("kargPattern: a pattern that is not one argument is split at its first '=' as it is written", () => {
  assert.deepEqual(kargPattern('p="a b"'), { param: "p", value: "a b" });
  assert.deepEqual(kargPattern("p"), { param: "p", value: undefined });
  assert.deepEqual(kargPattern("a b"), { param: "a b" });
  assert.deepEqual(kargPattern("=a b"), { param: "", value: "a b" });
  assert.deepEqual(kargPattern('p=a "b'), { param: "p", value: 'a "b' });
});

Deno.test("rewriteCmdline: appending alone; an open quote is closed only when something is appended after it", () => {
  assert.equal(rewriteCmdline("a  b", { append: ["c"] }), "a  b c");
  // Nothing to append: the arguments for init follow as they were.
  assert.equal(rewriteCmdline("a -- b", {}), "a -- b");
  assert.equal(rewriteCmdline("a -- b", { append: ["c"] }), "a c -- b");
  const dropA = { remove: (arg: { param: string }) => arg.param === "a" };
  assert.equal(rewriteCmdline('a b="c', dropA), 'b="c');
  assert.equal(
    rewriteCmdline('a b="c', { ...dropA, append: ["d"] }),
    'b="c" d',
  );
});
