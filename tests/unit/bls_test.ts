import assert from "node:assert/strict";
import {
  bootSpec,
  defaultEntry,
  expandVal,
  grubVariables,
  grubWords,
  loaderCmdline,
  parseBlsEntry,
  parseGrubenv,
  sortEntries,
  vercmp,
} from "../../lib/local_boot/bls.ts";

/** An entry as ostree writes it for Fedora CoreOS (`loader.1/entries/ostree-1-fedora-coreos.conf`). */
const FCOS_ENTRY = `title Fedora CoreOS 40.20240519.3.0 (ostree:0)
version 1
options mitigations=auto,nosmt ignition.platform.id=metal $ignition_firstboot ostree=/ostree/boot.1/fedora-coreos/1a2b/0 root=UUID=910678ff-f77e-4a7d-8d53-86f2ac47a823 rw rootflags=prjquota boot=UUID=96d15588-3596-4b3c-adca-a2ff7279ea63
linux /ostree/fedora-coreos-1a2b/vmlinuz-6.8.9-300.fc40.x86_64
initrd /ostree/fedora-coreos-1a2b/initramfs-6.8.9-300.fc40.x86_64.img
aboot /ostree/deploy/fedora-coreos/deploy/3c4d.0/usr/lib/ostree-boot/aboot.img
`;

const vars = (pairs: Record<string, string>) => new Map(Object.entries(pairs));

Deno.test("bls: an entry parses like blscfg (first options, every initrd, a bare key ends the file)", () => {
  const e = parseBlsEntry("ostree-1-fedora-coreos", FCOS_ENTRY);
  assert.equal(e.title, "Fedora CoreOS 40.20240519.3.0 (ostree:0)");
  assert.equal(e.version, "1");
  assert.equal(
    e.linux,
    "/ostree/fedora-coreos-1a2b/vmlinuz-6.8.9-300.fc40.x86_64",
  );
  assert.deepEqual(e.initrds, [
    "/ostree/fedora-coreos-1a2b/initramfs-6.8.9-300.fc40.x86_64.img",
  ]);
  assert.match(e.options!, /^mitigations=auto,nosmt .* \$ignition_firstboot /);
  const odd = parseBlsEntry(
    "x",
    "  # a comment\r\n\tlinux\t/k\r\nversion\t 2 with a space\noptions a=1\noptions b=2\ninitrd /i1 /i2\ninitrd /i3\nbare\nlinux /other\n",
  );
  assert.equal(odd.linux, "/k");
  // The key ends at the first space (a tab before it is part of the key).
  assert.equal(odd.version, undefined);
  assert.equal(odd.options, "a=1");
  assert.deepEqual(odd.initrds, ["/i1 /i2", "/i3"]);
});

Deno.test("bls: vercmp is RPM's (numbers by value, numbers newer than letters, ~ older, + newer)", () => {
  const cases: [string, string, number][] = [
    ["1", "1", 0],
    ["10", "9", 1],
    ["1.010", "1.9", 1],
    ["001", "1", 0],
    ["1.0", "1", 1],
    ["1a", "1", 1],
    ["1", "a", 1],
    ["a", "b", -1],
    ["1.0~rc1", "1.0", -1],
    ["1.0+p1", "1.0", 1],
    ["6.8.9-300.fc40", "6.8.10-100.fc40", -1],
    ["1_0", "1.0", 0],
  ];
  for (const [a, b, want] of cases) {
    assert.equal(vercmp(a, b), want, `${a} vs ${b}`);
    assert.equal(vercmp(b, a), -want || 0, `${b} vs ${a}`);
  }
});

Deno.test("bls: entries in GRUB's order: highest ostree-N first whatever their version key; no linux, no entry", () => {
  const entry = (id: string, version: string) =>
    parseBlsEntry(
      id,
      `${version ? `version ${version}\n` : ""}linux /k-${id}\n`,
    );
  const sorted = sortEntries([
    entry("ostree-2-rhcos", "1"),
    entry("ostree-10-rhcos", "0"),
    entry("ostree-1-rhcos", "9"),
    parseBlsEntry("efi-only", "efi /EFI/Linux/x.efi\n"),
  ]);
  assert.deepEqual(sorted.map((e) => e.id), [
    "ostree-10-rhcos",
    "ostree-2-rhcos",
    "ostree-1-rhcos",
  ]);
  // Fedora's kernel-install names: machine-id-version, newest kernel first, rescue last.
  const fedora = sortEntries([
    entry("de83-5.6.6-300.fc32.x86_64", ""),
    entry("de83-0-rescue", ""),
    entry("de83-5.6.13-300.fc32.x86_64", ""),
  ]);
  assert.deepEqual(fedora.map((e) => e.id), [
    "de83-5.6.13-300.fc32.x86_64",
    "de83-5.6.6-300.fc32.x86_64",
    "de83-0-rescue",
  ]);
});

Deno.test("bls: the default is saved_entry (id, title or index) when it names an entry, else the first", () => {
  const sorted = sortEntries([
    parseBlsEntry("ostree-2-rhcos", "title New\nlinux /new\n"),
    parseBlsEntry("ostree-1-rhcos", "title Old\nlinux /old\n"),
  ]);
  assert.equal(defaultEntry(sorted)!.id, "ostree-2-rhcos");
  assert.equal(defaultEntry(sorted, { saved: "" })!.id, "ostree-2-rhcos");
  assert.equal(
    defaultEntry(sorted, { saved: "ostree-1-rhcos" })!.id,
    "ostree-1-rhcos",
  );
  assert.equal(defaultEntry(sorted, { saved: "Old" })!.id, "ostree-1-rhcos");
  assert.equal(defaultEntry(sorted, { saved: "1" })!.id, "ostree-1-rhcos");
  assert.equal(defaultEntry(sorted, { saved: "7" })!.id, "ostree-2-rhcos");
  assert.equal(defaultEntry(sorted, { saved: "gone" })!.id, "ostree-2-rhcos");
  assert.equal(defaultEntry([]), undefined);
});

Deno.test("bls: grubenv is name=value lines in a #-padded block", () => {
  const env = parseGrubenv(
    "# GRUB Environment Block\nsaved_entry=ostree-1-rhcos\nkernelopts=root=/dev/vda2 ro a\\\\b\nboot_success=1\n" +
      "#".repeat(900),
  );
  assert.equal(env.get("saved_entry"), "ostree-1-rhcos");
  assert.equal(env.get("kernelopts"), "root=/dev/vda2 ro a\\b");
  assert.equal(env.get("boot_success"), "1");
  assert.equal(env.size, 3);
});

Deno.test("bls: GRUB's lexer: blanks, quotes, escapes, and variables (unquoted ones split)", () => {
  const v = vars({ two: "a b", empty: "", x: "X" });
  assert.deepEqual(grubWords("  one\ttwo  ", v), ["one", "two"]);
  assert.deepEqual(grubWords(`'single $x' "double $x \\" \\\\" \\$x`, v), [
    "single $x",
    'double X " \\',
    "$x",
  ]);
  assert.deepEqual(grubWords("p=$two q", v), ["p=a", "b", "q"]);
  assert.deepEqual(grubWords('p="$two" q', v), ["p=a b", "q"]);
  assert.deepEqual(grubWords("a $empty b ${x}y $unset", v), ["a", "b", "Xy"]);
  assert.deepEqual(grubWords('""', v), [""]);
});

Deno.test("bls: blscfg's expand_val adds a blank after a value, drops one after the name", () => {
  const v = vars({ kernelopts: "root=/dev/vda2 ro", empty: "" });
  assert.equal(expandVal("$kernelopts quiet", v), "root=/dev/vda2 ro quiet");
  assert.equal(expandVal("a $unset b", v), "a b");
  assert.equal(expandVal("a $empty b", v), "a  b");
  assert.equal(expandVal("a ${kernelopts} b", v), "a {kernelopts} b");
  assert.equal(expandVal("end $kernelopts", v), "end root=/dev/vda2 ro ");
});

Deno.test("bls: the loader command line quotes arguments with blanks and escapes quotes", () => {
  assert.equal(loaderCmdline(["a=1", "b"]), "a=1 b");
  assert.equal(
    loaderCmdline(["p=x y", `q="z"`, "r\\s"]),
    `"p=x y" q=\\"z\\" r\\\\s`,
  );
});

Deno.test("bls: ignition_firstboot is empty without the stamp, and carries the stamp's network arguments", () => {
  const none = grubVariables(vars({ saved_entry: "x" }));
  assert.equal(none.vars.get("ignition_firstboot"), "");
  assert.equal(none.vars.get("saved_entry"), "x");
  const empty = grubVariables(new Map(), { firstbootStamp: "" });
  assert.equal(empty.vars.get("ignition_firstboot"), "ignition.firstboot ");
  // What coreos-installer writes with --copy-network / static network kargs.
  const net = grubVariables(new Map(), {
    firstbootStamp:
      "# Written by coreos-installer\nset ignition_network_kcmdline='ip=10.0.0.5::10.0.0.1:255.255.255.0:node0:ens3:none nameserver=10.0.0.1'\nif true; then\n",
  });
  assert.equal(
    net.vars.get("ignition_firstboot"),
    "ignition.firstboot ip=10.0.0.5::10.0.0.1:255.255.255.0:node0:ens3:none nameserver=10.0.0.1",
  );
  assert.deepEqual(net.ignored, ["if true; then"]);
  // A grubenv value never survives: the configuration sets it first.
  const forged = grubVariables(vars({ ignition_firstboot: "init=/bin/sh" }));
  assert.equal(forged.vars.get("ignition_firstboot"), "");
});

Deno.test("bls: a CoreOS entry boots as GRUB would: $ignition_firstboot expanded, BOOT_IMAGE first", () => {
  const entry = parseBlsEntry("ostree-1-fedora-coreos", FCOS_ENTRY);
  const first = bootSpec(
    entry,
    grubVariables(new Map(), {
      firstbootStamp: "set ignition_network_kcmdline='ip=dhcp rd.neednet=1'\n",
    }).vars,
  )!;
  assert.equal(
    first.kernel,
    "/ostree/fedora-coreos-1a2b/vmlinuz-6.8.9-300.fc40.x86_64",
  );
  assert.deepEqual(first.initrds, [
    "/ostree/fedora-coreos-1a2b/initramfs-6.8.9-300.fc40.x86_64.img",
  ]);
  assert.equal(
    first.cmdline,
    "BOOT_IMAGE=/ostree/fedora-coreos-1a2b/vmlinuz-6.8.9-300.fc40.x86_64 mitigations=auto,nosmt ignition.platform.id=metal ignition.firstboot ip=dhcp rd.neednet=1 ostree=/ostree/boot.1/fedora-coreos/1a2b/0 root=UUID=910678ff-f77e-4a7d-8d53-86f2ac47a823 rw rootflags=prjquota boot=UUID=96d15588-3596-4b3c-adca-a2ff7279ea63",
  );
  const later = bootSpec(entry, grubVariables(new Map()).vars)!;
  assert.ok(!later.cmdline.includes("ignition.firstboot"), later.cmdline);
  assert.match(later.cmdline, /ignition\.platform\.id=metal ostree=/);
});

Deno.test("bls: $kernelopts from grubenv, default_kernelopts without options, initrd lists and $tuned_initrd", () => {
  const env = vars({
    kernelopts: "root=/dev/mapper/rhel-root ro crashkernel=auto",
    tuned_initrd: "/tuned.img",
  });
  const spec = bootSpec(
    parseBlsEntry(
      "abc-4.18.0-80.el8.x86_64",
      "linux /vmlinuz-4.18.0-80.el8.x86_64\ninitrd /initramfs-4.18.0-80.el8.x86_64.img $tuned_initrd\noptions $kernelopts $tuned_params\n",
    ),
    env,
  )!;
  assert.deepEqual(spec.initrds, [
    "/initramfs-4.18.0-80.el8.x86_64.img",
    "/tuned.img",
  ]);
  assert.equal(
    spec.cmdline,
    "BOOT_IMAGE=/vmlinuz-4.18.0-80.el8.x86_64 root=/dev/mapper/rhel-root ro crashkernel=auto",
  );
  const fallback = bootSpec(
    parseBlsEntry("x", "linux /k extra=1\n"),
    vars({ default_kernelopts: "quiet" }),
  )!;
  assert.equal(fallback.cmdline, "BOOT_IMAGE=/k extra=1 quiet");
  assert.equal(
    bootSpec(parseBlsEntry("y", "title no kernel\n"), env),
    undefined,
  );
});
