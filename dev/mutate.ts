/**
 * `deno task mutate`: mutation testing of the trust path with StrykerJS.
 *
 * For each module, Stryker instruments a copy of the tree (build/stryker-tmp)
 * with all its mutants behind a switch, then runs the module's fast test files
 * (`deno test --no-check --fail-fast`) once per mutant with that mutant
 * switched on: a failing run kills it, a passing run lets it survive, a hang
 * is a timeout (detected). Stryker runs under Node from build/stryker (installed
 * on first use from the npm registry, like Deno in `make setup`); the tests run
 * under Deno, whose `process` global carries the mutant switch into the test
 * process and every `deno run main.ts` child it starts.
 *
 * ```sh
 * deno task mutate                              # every module of MODULES
 * deno task mutate --module lib/stage/pins.ts   # one (repeatable)
 * deno task mutate --report --write-docs        # re-score stored runs, update docs/mutation.md
 * ```
 *
 * Each module's latest run is kept in dev/mutation_results/ (committed: the
 * docs are rendered from it); survivors listed with a
 * reason in dev/mutation_accepted.json count as equivalent-accepted.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type AcceptedMutant,
  describeMutant,
  type ModuleRun,
  mutantsOf,
  parseAccepted,
  renderMarkdown,
  renderText,
  type StrykerReport,
} from "./mutation_report.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const STRYKER_VERSION = "9.6.1";
const STRYKER_DIR = `${ROOT}build/stryker`;
const STRYKER_BIN =
  `${STRYKER_DIR}/node_modules/@stryker-mutator/core/bin/stryker.js`;
const OUT = `${ROOT}build/mutation`;
/** Each module's latest run, kept in the repository: the docs are rendered from them. */
const RESULTS = `${ROOT}dev/mutation_results`;
const ACCEPTED = `${ROOT}dev/mutation_accepted.json`;
const DOCS = `${ROOT}docs/mutation.md`;
const START = "<!-- mutation-results:start -->";
const END = "<!-- mutation-results:end -->";

/** The config's modules share their tests: the option layers are read as one. */
const CONFIG_TESTS = [
  "tests/unit/config_test.ts",
  "tests/unit/config_layers_test.ts",
  "tests/unit/env_file_test.ts",
  "tests/unit/host_settings_test.ts",
  "tests/integration/docs_test.ts",
];

/**
 * The trust path and, per module, the fast test files that exercise it. A
 * module's own `tests/unit/<name>_test.ts` and `tests/integration/<name>_test.ts`
 * are run first when they exist. The slow files (faults_test, image_test,
 * ipxe_fuzz_test) are left out: a mutant only they catch shows as a survivor.
 */
export const MODULES: Record<string, string[]> = {
  "lib/stage/download.ts": [
    "tests/unit/download_test.ts",
    "tests/integration/download_test.ts",
    "tests/integration/download_keep_part_test.ts",
    "tests/integration/stage_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/stage/resume.ts": [
    "tests/unit/resume_test.ts",
    "tests/integration/download_test.ts",
    "tests/integration/download_keep_part_test.ts",
  ],
  "lib/http/entity.ts": [
    "tests/unit/resume_test.ts",
    "tests/integration/download_test.ts",
    "tests/integration/cache_test.ts",
  ],
  "lib/http/idle.ts": [
    "tests/unit/idle_test.ts",
    "tests/integration/download_test.ts",
    "tests/unit/infraenv_client_test.ts",
    "tests/integration/infraenv_test.ts",
  ],
  "lib/stage/body_reader.ts": [
    "tests/unit/body_reader_test.ts",
    "tests/integration/download_test.ts",
  ],
  "lib/stage/cache.ts": [
    "tests/unit/cache_test.ts",
    "tests/integration/cache_test.ts",
    "tests/integration/stage_test.ts",
  ],
  "lib/stage/work_dir.ts": [
    "tests/unit/work_dir_test.ts",
    "tests/unit/kexec_test.ts",
    "tests/integration/stage_test.ts",
  ],
  "lib/path_trust.ts": [
    "tests/unit/path_trust_test.ts",
    "tests/unit/work_dir_test.ts",
    "tests/unit/request_test.ts",
    "tests/unit/infraenv_client_test.ts",
    "tests/integration/file_options_test.ts",
  ],
  "lib/programs.ts": [
    "tests/unit/programs_test.ts",
    "tests/unit/kexec_test.ts",
    "tests/unit/kexec_fallback_test.ts",
    "tests/unit/curl_transport_test.ts",
  ],
  "lib/stage/initrd.ts": [
    "tests/unit/initrd_test.ts",
    "tests/integration/stage_test.ts",
  ],
  "lib/kexec/libc.ts": [
    "tests/unit/kexec_test.ts",
    "tests/unit/kexec_fallback_test.ts",
    "tests/integration/arm64_kexec_test.ts",
  ],
  "lib/kexec/errors.ts": [
    "tests/unit/kexec_test.ts",
    "tests/unit/kexec_fallback_test.ts",
  ],
  "lib/kexec/load.ts": [
    "tests/unit/kexec_test.ts",
    "tests/unit/kexec_fallback_test.ts",
    "tests/integration/arm64_kexec_test.ts",
  ],
  "lib/kexec/tools.ts": [
    "tests/unit/kexec_fallback_test.ts",
  ],
  "lib/kexec/handoff.ts": [
    "tests/unit/kexec_test.ts",
  ],
  "lib/kexec/can_kexec.ts": [
    "tests/unit/kexec_test.ts",
  ],
  "lib/http/request.ts": [
    "tests/unit/request_test.ts",
    "tests/integration/http_test.ts",
    "tests/unit/redirect_test.ts",
    "tests/unit/http_transport_test.ts",
    "tests/integration/trust_test.ts",
    "tests/integration/infraenv_test.ts",
    "tests/integration/download_test.ts",
  ],
  "lib/http/retry.ts": [
    "tests/unit/busy_test.ts",
    "tests/integration/http_test.ts",
    "tests/unit/http_transport_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/http/fetch_transport.ts": [
    "tests/unit/http_transport_test.ts",
    "tests/integration/http_test.ts",
    "tests/integration/ca_trust_test.ts",
  ],
  "lib/http/curl_transport.ts": [
    "tests/unit/curl_transport_test.ts",
    "tests/unit/http_transport_test.ts",
    "tests/integration/insecure_test.ts",
    "tests/integration/proxy_test.ts",
  ],
  "lib/http/busy.ts": [
    "tests/unit/busy_test.ts",
    "tests/integration/http_test.ts",
  ],
  "lib/http/retry_after.ts": [
    "tests/unit/retry_after_test.ts",
    "tests/unit/busy_test.ts",
  ],
  "lib/stage/sha256_stream.ts": [
    "tests/unit/sha256_stream_test.ts",
    "tests/unit/sha256_worker_failure_test.ts",
    "tests/integration/download_test.ts",
  ],
  "lib/stage/write_pipeline.ts": [
    "tests/unit/sha256_stream_test.ts",
    "tests/integration/download_test.ts",
    "tests/integration/download_keep_part_test.ts",
  ],
  "lib/credentials.ts": [
    "tests/unit/credentials_test.ts",
    "tests/unit/log_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/stage/pins.ts": [
    "tests/unit/pins_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/resolve/infraenv.ts": [
    "tests/unit/infraenv_client_test.ts",
    "tests/integration/infraenv_test.ts",
    "tests/integration/trust_test.ts",
    "tests/integration/cli_test.ts",
  ],
  "lib/resolve/sso.ts": [
    "tests/unit/infraenv_client_test.ts",
    "tests/integration/infraenv_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/resolve/service_requests.ts": [
    "tests/unit/infraenv_client_test.ts",
    "tests/integration/infraenv_test.ts",
    "tests/integration/trust_test.ts",
  ],
  "lib/config/mod.ts": CONFIG_TESTS,
  "lib/config/layers.ts": CONFIG_TESTS,
  "lib/config/validate.ts": [
    "tests/unit/validate_test.ts",
    ...CONFIG_TESTS,
    "tests/integration/cli_test.ts",
  ],
  "lib/config/options.ts": CONFIG_TESTS,
  "lib/config/env_file.ts": CONFIG_TESTS,
  "lib/config/option_table.ts": CONFIG_TESTS,
  "lib/resolve/kargs.ts": [
    "tests/unit/kargs_test.ts",
    "tests/unit/host_settings_test.ts",
    "tests/integration/cli_test.ts",
  ],
  "ignition/mod.ts": [
    "tests/unit/ignition_files_test.ts",
    "tests/integration/ignition_test.ts",
    "tests/integration/ignition_config_test.ts",
    "tests/integration/ignition_network_test.ts",
    "tests/integration/unit_security_test.ts",
  ],
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The test files run against `module`'s mutants: its own test files (when not listed), then the listed ones. */
export async function testsFor(module: string): Promise<string[]> {
  const name = module.replace(/^.*\//, "").replace(/\.ts$/, "");
  const listed = MODULES[module] ?? [];
  const own: string[] = [];
  for (const tier of ["unit", "integration"]) {
    const file = `tests/${tier}/${name}_test.ts`;
    if (!listed.includes(file) && await exists(`${ROOT}${file}`)) {
      own.push(file);
    }
  }
  // The module's own files first: with --fail-fast a mutant they kill costs
  // no run of the slower files.
  return [...own, ...listed];
}

async function run(cmd: string, args: string[], cwd = ROOT): Promise<boolean> {
  const child = new Deno.Command(cmd, { args, cwd, stdin: "null" }).spawn();
  return (await child.status).success;
}

async function ensureStryker(): Promise<void> {
  if (await exists(STRYKER_BIN)) return;
  console.error(
    `installing @stryker-mutator/core@${STRYKER_VERSION} into build/stryker`,
  );
  await Deno.mkdir(STRYKER_DIR, { recursive: true });
  const ok = await run("npm", [
    "install",
    "--silent",
    "--no-save",
    "--no-package-lock",
    "--no-audit",
    "--no-fund",
    "--prefix",
    STRYKER_DIR,
    `@stryker-mutator/core@${STRYKER_VERSION}`,
  ], STRYKER_DIR);
  if (!ok) throw new Error("npm could not install StrykerJS (is npm on PATH?)");
}

async function machine(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
    .match(/^model name\s*:\s*(.*)$/m)?.[1] ?? Deno.build.arch;
  return `${navigator.hardwareConcurrency} CPUs (${cpu}), Linux ${Deno.osRelease()}, Deno ${Deno.version.deno}, StrykerJS ${STRYKER_VERSION}`;
}

function slug(module: string): string {
  return module.replace(/[/.]/g, "_");
}

async function mutateModule(
  module: string,
  concurrency: number,
): Promise<ModuleRun> {
  const tests = await testsFor(module);
  const dir = `${OUT}/${slug(module)}`;
  await Deno.mkdir(dir, { recursive: true });
  const deno = Deno.execPath();
  // The tests' temporary directories go in one of the run's own, removed
  // afterwards: a timed-out test is killed before it removes its own, and a
  // mutant that disables a size limit writes until then.
  const tmp = await Deno.makeTempDir({ prefix: "assisted_mutate_" });
  await Deno.chmod(tmp, 0o1777); // like /tmp: the other-user tests make theirs here too
  const config = {
    mutate: [module],
    testRunner: "command",
    commandRunner: {
      // `exec`: the test process replaces the shell, so the kill of a
      // timed-out run reaches it (a shell's child outlived the kill).
      command:
        `TMPDIR=${tmp} exec ${deno} test -A --no-check --sanitize-resources --sanitize-ops --fail-fast ${
          tests.join(" ")
        }`,
    },
    coverageAnalysis: "off",
    concurrency,
    ignorePatterns: ["build", ".tools", ".cache", ".git"],
    tempDirName: "build/stryker-tmp",
    reporters: ["json", "progress"],
    jsonReporter: { fileName: `${dir}/stryker.json` },
    plugins: [],
    cleanTempDir: "always",
  };
  await Deno.writeTextFile(
    `${dir}/stryker.config.json`,
    JSON.stringify(config, null, 2),
  );
  console.error(`${module}: ${tests.join(", ")}`);
  const started = performance.now();
  try {
    if (
      !await run("node", [STRYKER_BIN, "run", `${dir}/stryker.config.json`])
    ) {
      throw new Error(`stryker failed on ${module} (see its output above)`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  const report = JSON.parse(
    await Deno.readTextFile(`${dir}/stryker.json`),
  ) as StrykerReport;
  const result: ModuleRun = {
    module,
    tests,
    date: new Date().toISOString(),
    seconds: (performance.now() - started) / 1000,
    machine: await machine(),
    mutants: mutantsOf(report, module),
  };
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(
    `${RESULTS}/${slug(module)}.json`,
    storedText(result),
  );
  return result;
}

/**
 * A run as kept in the repository: one mutant per line, and a detected
 * mutant without its code (only the survivors are ever read back in full).
 */
function storedText(run: ModuleRun): string {
  const mutants = run.mutants.map((m) =>
    JSON.stringify(
      m.status === "Killed" || m.status === "Timeout"
        ? { ...m, original: "", replacement: "" }
        : m,
    )
  );
  const head = JSON.stringify({ ...run, mutants: [] });
  return `${head.slice(0, -3)}[\n${mutants.join(",\n")}\n]}\n`;
}

async function storedRuns(): Promise<ModuleRun[]> {
  const runs: ModuleRun[] = [];
  for (const module of Object.keys(MODULES)) {
    const path = `${RESULTS}/${slug(module)}.json`;
    if (await exists(path)) {
      runs.push(JSON.parse(await Deno.readTextFile(path)) as ModuleRun);
    }
  }
  return runs;
}

async function writeDocs(
  runs: ModuleRun[],
  accepted: AcceptedMutant[],
): Promise<void> {
  const text = await Deno.readTextFile(DOCS);
  const start = text.indexOf(START), end = text.indexOf(END);
  if (start < 0 || end < start) {
    throw new Error(`${DOCS} lacks the result markers`);
  }
  const body = renderMarkdown(runs, accepted);
  await Deno.writeTextFile(
    DOCS,
    `${text.slice(0, start + START.length)}\n\n${body}\n\n${text.slice(end)}`,
  );
  await run(Deno.execPath(), ["fmt", "--quiet", DOCS]);
}

/** Appends stored survivors to the accepted list, with their module and mutation. */
async function accept(
  list: AcceptedMutant[],
  ids: string[],
  reason: string,
): Promise<number> {
  if (reason.trim() === "") {
    console.error("--accept needs a --reason");
    return 2;
  }
  const known = new Map(
    (await storedRuns()).flatMap((r) => r.mutants).map((m) => [m.id, m]),
  );
  for (const id of ids) {
    const m = known.get(id);
    if (!m) {
      console.error(`no stored mutant ${id} (run its module first)`);
      return 2;
    }
    if (list.some((a) => a.id === id)) continue;
    list.push({ id, module: m.file, mutant: describeMutant(m), reason });
  }
  await Deno.writeTextFile(ACCEPTED, JSON.stringify(list, null, 2) + "\n");
  await run(Deno.execPath(), ["fmt", "--quiet", ACCEPTED]);
  return 0;
}

const USAGE =
  "usage: deno task mutate [--module FILE]... [--concurrency N] [--report] [--write-docs]\n" +
  "       deno task mutate --accept ID [--accept ID]... --reason TEXT   (adds stored survivors to the accepted list)";

function parseFlags() {
  return parseArgs({
    options: {
      module: { type: "string", multiple: true },
      concurrency: { type: "string", default: "1" },
      report: { type: "boolean", default: false },
      "write-docs": { type: "boolean", default: false },
      accept: { type: "string", multiple: true },
      reason: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
}

async function main(): Promise<number> {
  let values: ReturnType<typeof parseFlags>["values"];
  try {
    values = parseFlags().values;
  } catch (err) {
    console.error(`mutate: ${err instanceof Error ? err.message : err}`);
    console.error(USAGE);
    return 2;
  }
  if (values.help) {
    console.log(`${USAGE}\nmodules: ${Object.keys(MODULES).join(" ")}`);
    return 0;
  }
  const accepted = parseAccepted(await Deno.readTextFile(ACCEPTED));
  if (values.accept) {
    return await accept(accepted, values.accept, values.reason ?? "");
  }
  const modules = values.module ?? Object.keys(MODULES);
  for (const module of modules) {
    if (!(module in MODULES)) {
      console.error(`not a module of the mutation run: ${module}`);
      return 2;
    }
  }
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    console.error(
      `--concurrency wants a whole number >= 1, not ${values.concurrency}`,
    );
    return 2;
  }
  let runs: ModuleRun[];
  if (values.report) {
    runs = (await storedRuns()).filter((r) => modules.includes(r.module));
  } else {
    await ensureStryker();
    runs = [];
    for (const module of modules) {
      runs.push(await mutateModule(module, concurrency));
    }
  }
  console.log(renderText(runs, accepted));
  if (values["write-docs"]) await writeDocs(await storedRuns(), accepted);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
