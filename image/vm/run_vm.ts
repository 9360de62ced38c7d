/**
 * `make run-vm`: boots the bootloader initramfs (or a disk image) in QEMU against
 * the mock InfraEnv on 127.0.0.1, with the serial console on this terminal.
 *
 * The mock serves a real Debian kernel and the marker initrd as the "discovery
 * image"; the guest reaches it, and nothing else, at http://10.0.2.100
 * (user-mode networking with `restrict=on` + `guestfwd`). Quit QEMU with
 * Ctrl-A X; the mock and QEMU are stopped on exit.
 *
 * ```sh
 * deno run -A image/vm/run_vm.ts --kernel build/vm/vmlinuz --marker-initrd build/vm/marker.initrd \
 *   --initrd build/initrd/assisted-bootloader.initrd [--append ARG]... [--accel kvm|tcg]
 * deno run -A image/vm/run_vm.ts --kernel build/vm/vmlinuz --marker-initrd build/vm/marker.initrd --image disk.raw
 * deno run -A image/vm/run_vm.ts --arch aarch64 --kernel build/vm/aarch64/boot-Image \
 *   --served-kernel build/vm/aarch64/vmlinuz.gz --marker-initrd build/vm/aarch64/marker.initrd \
 *   --initrd build/initrd/aarch64/assisted-bootloader.initrd
 * ```
 *
 * `--kernel` is what QEMU boots and, unless `--served-kernel` names another
 * file, also what the mock serves for the bootloader to kexec.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { startMock } from "../../dev/mock_infraenv.ts";
import {
  type Accel,
  findQemu,
  guestArch,
  probeAccel,
  QEMU_SYSTEM,
  qemuArgs,
  type VmOptions,
} from "../../dev/qemu.ts";

/** Address and port the guest uses for the mock. */
export const GUEST_MOCK_ADDRESS = "10.0.2.100";

const USAGE =
  `usage: run_vm.ts [--arch x86_64|aarch64] --kernel VMLINUZ [--served-kernel KERNEL] --marker-initrd INITRD (--initrd INITRD | --image DISK.raw)
  [--append ARG]... [--accel kvm|tcg] [--accel-cache FILE] [--memory MiB (default 512, 2048 with --image)] [--on-failure shell|retry|poweroff|reboot (default shell)]
  [--bootloader BINARY (with --image: served at http://${"10.0.2.100"}/assisted-bootloader for the image's unit)]`;

async function sha256Hex(path: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    await Deno.readFile(path),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      arch: { type: "string", default: Deno.build.arch },
      kernel: { type: "string" },
      "served-kernel": { type: "string" },
      initrd: { type: "string" },
      image: { type: "string" },
      "marker-initrd": { type: "string" },
      bootloader: { type: "string" },
      append: { type: "string", multiple: true, default: [] },
      accel: { type: "string" },
      "accel-cache": { type: "string" },
      memory: { type: "string" },
      "on-failure": { type: "string", default: "shell" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const kernel = values.kernel;
  const marker = values["marker-initrd"];
  if (!kernel || !marker || (!values.initrd && !values.image)) {
    console.error(`run-vm: missing arguments\n${USAGE}`);
    return 2;
  }
  if (values.accel && values.accel !== "kvm" && values.accel !== "tcg") {
    console.error(`run-vm: --accel must be kvm or tcg, not ${values.accel}`);
    return 2;
  }
  const arch = guestArch(values.arch);
  if (!arch) {
    console.error(
      `run-vm: --arch must be x86_64 or aarch64 (arm64), not ${values.arch}`,
    );
    return 2;
  }
  if (arch === "aarch64" && values.image) {
    console.error(
      "run-vm: --image boots through firmware, which is wired up for x86_64 only (an arm64 disk needs UEFI)",
    );
    return 2;
  }
  const served = values["served-kernel"] ?? kernel;
  for (const file of [kernel, served, marker, values.initrd ?? values.image!]) {
    try {
      Deno.statSync(file);
    } catch {
      console.error(`run-vm: ${file} does not exist (run make initrd)`);
      return 2;
    }
  }
  const system = QEMU_SYSTEM[arch];
  const qemu = findQemu(system.binary);
  if (!qemu) {
    console.error(
      `run-vm: ${system.binary} is not installed (Debian package: ${system.package})`,
    );
    return 2;
  }

  const stamp = new Date().toISOString().replace(/[-:.]/g, "").slice(0, 15);
  const bootloader = values.bootloader;
  const mock = await startMock({
    files: bootloader ? { "/assisted-bootloader": bootloader } : undefined,
    authMode: "none",
    sameOrigin: true,
    publicBaseUrl: `http://${GUEST_MOCK_ADDRESS}`,
    // The service names arm64 artifacts arch=arm64.
    arch: arch === "aarch64" ? "arm64" : arch,
    kernel: served,
    initrd: marker,
    extraKargs: [
      `console=${system.console}`,
      "panic=-1",
      `assisted_marker=run-vm-${stamp}`,
    ],
  });
  let child: Deno.ChildProcess | undefined;
  const stop = () => {
    try {
      child?.kill("SIGTERM");
    } catch {
      // already gone
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    const accel: Accel = (values.accel as Accel | undefined) ??
      await probeAccel(kernel, { cacheFile: values["accel-cache"], arch });
    const port = Number(new URL(mock.baseUrl).port);
    const options: VmOptions = {
      arch,
      accel,
      // Fedora CoreOS wants 2 GiB; the bootloader initramfs fits in 512 MiB.
      memoryMiB: Number(values.memory ?? (values.image ? 2048 : 512)),
      forwards: [{
        guestAddress: GUEST_MOCK_ADDRESS,
        guestPort: 80,
        hostPort: port,
      }],
    };
    if (values.image) {
      options.disk = values.image;
    } else {
      options.kernel = kernel;
      options.initrd = values.initrd;
      options.append = [
        `console=${system.console}`,
        "panic=-1",
        `assisted.ipxe_url=${mock.ipxeScriptUrl}`,
        `assisted.on_failure=${values["on-failure"]}`,
        ...values.append,
      ].join(" ");
    }
    console.error(
      `run-vm: mock InfraEnv on ${mock.baseUrl}, seen by the guest as http://${GUEST_MOCK_ADDRESS}`,
    );
    console.error(`run-vm: iPXE script ${mock.ipxeScriptUrl}`);
    if (values.image) {
      const sha = bootloader
        ? await sha256Hex(bootloader)
        : "<sha256 of the binary>";
      console.error(
        `run-vm: ${
          bootloader
            ? `serving ${bootloader}`
            : "no --bootloader given: nothing"
        } at http://${GUEST_MOCK_ADDRESS}/assisted-bootloader; the image must have been built with\n` +
          `  make BOOTLOADER_URL=http://${GUEST_MOCK_ADDRESS}/assisted-bootloader BOOTLOADER_SHA256=${sha} ` +
          `IPXE_URL='${mock.ipxeScriptUrl}'`,
      );
    }
    console.error(
      `run-vm: booting ${
        values.image ?? values.initrd
      } with ${accel.toUpperCase()} (quit: Ctrl-A X)`,
    );
    child = new Deno.Command(qemu, {
      args: qemuArgs(options, "stdio"),
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    console.error(`run-vm: QEMU exited with code ${status.code}`);
    return status.code;
  } finally {
    stop();
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    await mock.close();
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(
      `run-vm: ${err instanceof Error ? err.message : String(err)}`,
    );
    Deno.exit(1);
  }
}
