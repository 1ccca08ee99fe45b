"""What one guest kernel argument costs or buys under TCG: the same Python work, booted twice.

Run as root with the role's image built (needs qemu-system-x86_64; the lab may be up, but an
idle host gives steadier figures):
    python bench/bench_tcg_guest.py [--role controller] [--rounds 2] [--section NAME]
        [--variant ARGS ...]
Each variant is extra kernel arguments ("" is the image's own command line). For every round and
variant, the role's image boots directly (kernel and initrd beside it, the root file system
read-only under `-snapshot`: nothing is written back) with `python3` as init, which starts the
interpreter 20 times (`python3 -c pass`), then imports `IMPORT` in three processes one after
another, and powers the guest off. Printed per run: the guest's own seconds for each step and
the host CPU seconds the whole QEMU process used, boot included. Variants alternate within a
round, so a host that slows down mid-run weighs on each alike.

Why: under TCG a guest's code is translated to host code once per translation key, and for code
in a position-independent executable the key includes the virtual address it runs at. Address
space randomisation loads the interpreter at a new address in every process, so every Python
process translates it again (QEMU 7.2, Debian 12's); `norandmaps` keeps one address for all.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section, yardstick
from builder.paths import cache_root

IMPORT = {"controller": "nova.cmd.api", "compute": "nova.cmd.compute", "block": "cinder.cmd.volume"}

# Runs as the guest's init: no shell, /proc and /sys moved in by the initramfs. The hostname is
# set because oslo.config refuses "(none)" as a host option's default.
GUEST = """
import socket, subprocess, time
socket.sethostname("bench")
def timed(argv, n):
    began = time.monotonic()
    for _ in range(n):
        subprocess.run(argv, check=True)
    return time.monotonic() - began
starts = timed(["/usr/bin/python3", "-c", "pass"], 20)
imports = [timed(["/usr/bin/python3", "-c", "import MODULE"], 1) for _ in range(3)]
aslr = open("/proc/sys/kernel/randomize_va_space").read().strip()
print("BENCH " + " ".join(["aslr=" + aslr, "starts=%.2f" % starts]
      + ["import%d=%.2f" % (i + 1, s) for i, s in enumerate(imports)]), flush=True)
"""
RESULT = re.compile(r"BENCH (.*)")


def image_of(role: str) -> tuple[Path, dict[str, str]]:
    folder = cache_root() / "images" / "trixie" / role
    meta = folder / "image.json"
    if not meta.exists():
        raise SystemExit(f"error: {meta} is missing\nfix: build-images --role {role}")
    return folder, json.loads(meta.read_text())


def boot(folder: Path, meta: dict[str, str], extra: str, module: str) -> dict[str, float]:
    """One guest run: its BENCH figures and the host CPU seconds QEMU used."""
    code = GUEST.replace("MODULE", module).encode().hex()
    # The kernel splits its command line on spaces and hands what follows `--` to init: the
    # program travels as one word.
    cmdline = (
        f"{meta['cmdline']} panic=1 quiet tsc=reliable {extra} "
        f"init=/usr/bin/python3 -- -c exec(bytes.fromhex('{code}'))"
    )
    argv = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "qemu64",
        "-smp", "1", "-m", "3072", "-snapshot", "-no-reboot", "-nodefaults",
        "-display", "none", "-serial", "stdio",
        "-drive", f"file={folder / meta['rootfs']},if=virtio,format=qcow2,readonly=off",
        "-kernel", str(folder / meta["kernel"]), "-initrd", str(folder / meta["initrd"]),
        "-append", cmdline,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    with tempfile.TemporaryFile() as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
        out.seek(0)
        text = out.read().decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = RESULT.search(text)
    if not found:
        tail = "\n".join(text.splitlines()[-5:])
        raise SystemExit(f"error: the guest printed no figures (extra args {extra!r}):\n{tail}")
    figures = {k: float(v) for k, v in (item.split("=") for item in found.group(1).split())}
    figures["host_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    figures["wall"] = time.monotonic() - began
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="controller", choices=sorted(IMPORT))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", help='extra kernel args ("" for none)')
    parser.add_argument("--section", default=None, help="docs/benchmarks.md section")
    args = parser.parse_args()
    variants = args.variant or ["", "norandmaps"]
    folder, meta = image_of(args.role)
    stick = yardstick()
    print(f"host yardstick: {stick:.2f} s", flush=True)
    runs: list[tuple[str, dict[str, float]]] = []
    for round_ in range(args.rounds):
        for extra in variants:
            figures = boot(folder, meta, extra, IMPORT[args.role])
            runs.append((extra, figures))
            shown = " ".join(f"{k}={v:g}" for k, v in figures.items())
            print(f"round {round_ + 1} [{extra or 'as built'}]: {shown}", flush=True)
    rows = [
        f"| `{extra or '(as built)'}` | {f['aslr']:g} | {f['starts']:.1f} | {f['import1']:.1f} | "
        f"{f['import2']:.1f} | {f['import3']:.1f} | {f['host_cpu']:.1f} | {f['wall']:.0f} |"
        for extra, f in runs
    ]
    body = (
        "## One guest kernel argument under TCG: the same Python work"
        " (bench/bench_tcg_guest.py)\n\n"
        f"The {args.role} image ({meta['key'][:12]}) booted directly under TCG (`-cpu qemu64 "
        f"-smp 1`, the root read-only), `python3` as init: 20 interpreter starts, then "
        f"`import {IMPORT[args.role]}` in three processes in turn. Guest seconds per step; host "
        f"CPU is the whole QEMU process, boot included. Host yardstick {stick:.2f} s.\n\n"
        "| extra kernel arguments | randomize_va_space | 20 x `python3 -c pass` (s) | "
        "import, 1st (s) | 2nd (s) | 3rd (s) | host CPU (s) | wall (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    if args.section:
        write_section(args.section, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
