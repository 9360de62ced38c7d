/**
 * SIGTERM (systemd stopping the unit) and SIGINT while downloading: one log
 * line, the files of the run gone (the half-downloaded kernel, the signed
 * pxe-initrd's content), exit 128 + the signal. A real child process
 * (`deno run main.ts`) against a slow server on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { fakeKernel, newcArchive } from "../../dev/mock_infraenv.ts";
import { ExitCode } from "../../lib/errors.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const enc = new TextEncoder();

/** A server whose kernel trickles (its first 64 KiB at once, then 1 KiB every 100 ms). */
function slowServer(): {
  origin: string;
  hanging: () => boolean;
  close: () => Promise<void>;
} {
  const kernel = fakeKernel(4 << 20) as Uint8Array<ArrayBuffer>;
  const initrd = newcArchive([
    { name: "etc/secret.ign", data: enc.encode('{"secret": "yes"}') },
  ]);
  const stop = new AbortController();
  let hanging = false;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: stop.signal,
    onListen: () => {},
  }, (req) => {
    const url = new URL(req.url);
    const origin = url.origin;
    if (url.pathname === "/boot.ipxe") {
      return new Response(
        `#!ipxe\nkernel ${origin}/kernel\ninitrd ${origin}/pxe-initrd?api_key=SIGNED\nboot\n`,
      );
    }
    if (url.pathname === "/pxe-initrd") return new Response(initrd.slice());
    if (url.pathname === "/hang") {
      // Never answers (until the server closes).
      hanging = true;
      return new Promise<Response>((resolve) =>
        stop.signal.addEventListener("abort", () => resolve(new Response("")))
      );
    }
    if (url.pathname !== "/kernel") return new Response("no", { status: 404 });
    let sent = 0;
    let timer: ReturnType<typeof setInterval> | undefined;
    const body = new ReadableStream<Uint8Array<ArrayBuffer>>({
      start(controller) {
        controller.enqueue(kernel.subarray(0, 64 << 10));
        sent = 64 << 10;
        timer = setInterval(() => {
          try {
            controller.enqueue(kernel.subarray(sent, sent + 1024));
            sent += 1024;
          } catch {
            clearInterval(timer);
          }
        }, 100);
      },
      cancel() {
        clearInterval(timer);
      },
    });
    return new Response(body, {
      headers: { "content-length": String(kernel.length) },
    });
  });
  const { port } = server.addr as Deno.NetAddr;
  return {
    origin: `http://127.0.0.1:${port}`,
    hanging: () => hanging,
    close: async () => {
      stop.abort();
      await server.finished;
    },
  };
}

/** The names in `dir`, sorted. */
function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

async function waitFor(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `main.ts --no-kexec` on `url` into `work`, started. */
function bootloader(
  url: string,
  work: string,
  extra: string[] = [],
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "--ipxe-url",
      url,
      "--no-kexec",
      "--no-host-settings",
      "--no-preflight",
      "--progress",
      "none",
      "--min-speed",
      "0",
      "--work-dir",
      work,
      ...extra,
    ],
    env: {
      NO_COLOR: "1",
      ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
      ASSISTED_CONFIG: "/dev/null",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

for (
  const [signal, code] of [
    ["SIGTERM", ExitCode.Terminated],
    ["SIGINT", ExitCode.Interrupted],
  ] as const
) {
  Deno.test(`stop: ${signal} while downloading removes the files of the run, logs one line and exits ${code}`, async () => {
    const server = slowServer();
    const work = await Deno.makeTempDir();
    try {
      const child = bootloader(`${server.origin}/boot.ipxe`, work);
      // Both files are there: the kernel half-way, the signed initrd whole.
      await waitFor(
        "the downloads to start",
        () => {
          const files = names(work);
          return files.includes("kernel.part") &&
            files.includes("initrd-part-0");
        },
      );
      child.kill(signal);
      const out = await child.output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, code, stderr);
      assert.equal(out.signal, null, "it exits, it is not killed");
      const lines = stderr.trim().split("\n");
      assert.match(lines.at(-1)!, new RegExp(`: error: Stopped by ${signal}$`));
      assert.equal(
        lines.filter((l) => l.includes("error")).length,
        1,
        `one error line: ${stderr}`,
      );
      assert.ok(!stderr.includes("    at "), stderr);
      assert.equal(new TextDecoder().decode(out.stdout), "");
      const left = names(work).filter((n) => n !== ".lock" && n !== "cache");
      assert.deepEqual(left, [], "no file of the run is left");
      const cache = names(work).includes("cache") ? names(`${work}/cache`) : [];
      assert.deepEqual(cache.filter((n) => n.endsWith(".part")), []);
    } finally {
      await server.close();
      await Deno.remove(work, { recursive: true });
    }
  });
}

Deno.test("stop: SIGTERM in a step that takes no abort (a script server that never answers) still ends the run within the grace time", async () => {
  const server = slowServer();
  const work = await Deno.makeTempDir();
  try {
    // The request alone would wait 600 s.
    const child = bootloader(`${server.origin}/hang`, work, [
      "--timeout",
      "600",
    ]);
    await waitFor("the script request", server.hanging);
    child.kill("SIGTERM");
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const out = await child.output();
    clearTimeout(guard);
    assert.equal(out.signal, null, "ended by the grace timer, not killed");
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, ExitCode.Terminated, stderr);
    assert.match(stderr.trim().split("\n").at(-1)!, /Stopped by SIGTERM$/);
  } finally {
    await server.close();
    await Deno.remove(work, { recursive: true });
  }
});
