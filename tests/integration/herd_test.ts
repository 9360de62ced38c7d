/**
 * A boot storm: N bootloaders (`main.ts --no-kexec`) started at once against
 * a mock image service with K download slots that answers every other
 * request `503` with `Retry-After` (`slotLimit` in `dev/faults.ts`). All of
 * them must end verified, and each one's busy answers stay bounded.
 *
 * The bound: every wait after a busy answer lasts at least
 * max(1 s, Retry-After) (`busy.ts`), so one request gets at most
 * 1 + T / max(1 s, Retry-After) busy answers in a herd lasting T; a
 * bootloader has at most {@linkcode IN_FLIGHT} gated requests at once (the
 * preflight's HEADs, then the kernel and initrd downloads), hence at most
 * IN_FLIGHT × (1 + T / 1 s) busy answers. Without the floor and the backoff
 * (retrying at once) a bootloader sends hundreds in the same time.
 */

import assert from "node:assert/strict";
import { slotLimit } from "../../dev/faults.ts";
import { fakeKernel, startMock } from "../../dev/mock_infraenv.ts";
import { sha256Hex } from "../../lib/stage/sha256.ts";
import { withTemp } from "../test_util.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
/** Bootloaders started at once. */
const N = 12;
/** Download slots of the image service. */
const K = 2;
/** Bytes per second each slot sends. */
const SLOT_RATE = 1024 * 1024;
/** Kernel size: a quarter of a second in a slot. */
const KERNEL_BYTES = 256 * 1024;
/** Requests of one bootloader that can be waiting at once (HEADs, downloads). */
const IN_FLIGHT = 4;

Deno.test("herd: N bootloaders against K slots all end verified, each with a bounded number of busy answers", async () => {
  await withTemp(async (dir) => {
    const kernel = fakeKernel(KERNEL_BYTES);
    const gate = slotLimit({
      slots: K,
      retryAfterSeconds: 1,
      bytesPerSecond: SLOT_RATE,
      match: (req) =>
        new URL(req.url).pathname.includes("/api/assisted-images/"),
    });
    const mock = await startMock({ kernel, faults: gate });
    try {
      await Deno.writeTextFile(`${dir}/token`, mock.refreshToken, {
        mode: 0o600,
      });
      const started = performance.now();
      const runs = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              "--no-check",
              MAIN,
              "--api-url",
              mock.apiUrl,
              "--sso-url",
              mock.ssoUrl,
              "--infra-env-id",
              mock.infraEnvId,
              "--refresh-token-file",
              `${dir}/token`,
              "--no-kexec",
              "--no-host-settings",
              "--progress",
              "none",
              "--work-dir",
              `${dir}/work${i}`,
              "--retries",
              "0",
              "--busy-timeout",
              "120",
            ],
            env: {
              NO_COLOR: "1",
              ASSISTED_KERNEL_CMDLINE_FILE: "/dev/null",
              ASSISTED_CONFIG: "/dev/null",
            },
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).output()),
      );
      const seconds = (performance.now() - started) / 1000;
      const dec = new TextDecoder();
      const busyLines = runs.map((r) =>
        dec.decode(r.stderr).split("\n").filter((l) => /server busy/.test(l))
          .length
      );
      runs.forEach((r, i) => {
        assert.equal(r.code, 0, `bootloader ${i}: ${dec.decode(r.stderr)}`);
        const out = JSON.parse(dec.decode(r.stdout));
        assert.equal(
          out.kernel.sha256,
          sha256Hex(kernel),
          `bootloader ${i}: kernel hash`,
        );
      });
      // Every busy answer is one line (each wait is said once).
      assert.equal(
        busyLines.reduce((a, b) => a + b, 0),
        gate.rejected,
        "one line per busy answer",
      );
      const bound = IN_FLIGHT * (1 + Math.ceil(seconds / 1));
      for (const [i, n] of busyLines.entries()) {
        assert.ok(n <= bound, `bootloader ${i}: ${n} busy answers > ${bound}`);
      }
      const ideal = (N * KERNEL_BYTES) / (K * SLOT_RATE);
      console.log(
        `herd: ${N} bootloaders, ${K} slots of ${
          SLOT_RATE / 1024
        } KiB/s, kernel ${KERNEL_BYTES / 1024} KiB: ${
          seconds.toFixed(1)
        } s (ideal ${ideal.toFixed(1)} s for the kernels), ` +
          `${gate.rejected} busy answers (max ${
            Math.max(...busyLines)
          } per bootloader, bound ${bound})`,
      );
    } finally {
      await mock.close();
    }
  });
});
