"""Whole-disk images: build time per format, and a firmware boot to cloud-init's final stage.

For each role (default: compute and plain), as root on a host set up by .ci/setup-host.sh:
  1. `build-images --role R --format disk --force`: the root filesystem (DIB, warm cache) and
     then the whole-disk image assembled from it; both times and sizes;
  2. the disk booted as a server boots it (vms/diskboot.py: OVMF with fresh NVRAM, e1000e, the
     seed on a SATA CD; TCG), timed from QEMU's start to the guest's runcmd report.
Prints the figures and rewrites the `bench:disk` section of docs/benchmarks.md. Run it with no
lab up: a DIB build beside TCG guests starves them.

    python bench/bench_disk.py [--roles compute,plain] [--no-force]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section
from builder.images.contract import find_disk_image
from vms.diskboot import boot_disk, missing_tools


def seconds(role: str, output: str) -> tuple[str, str]:
    """build-images' own figures: the root filesystem's build and the disk's assembly, in
    seconds ("cached" for a step it skipped)."""
    name = re.escape(role)
    built = re.search(rf"^{name}: built in (\d+) s,", output, re.M)
    assembled = re.search(rf"^{name}: whole-disk image assembled in (\d+) s,", output, re.M)
    return (built[1] if built else "cached", assembled[1] if assembled else "cached")


def build(role: str, force: bool) -> tuple[str, int]:
    env = {**os.environ, "COLUMNS": "400"}  # one line per message: rich wraps at 80 otherwise
    args = ["build-images", "--role", role, "--format", "disk"] + (["--force"] if force else [])
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    return done.stdout + done.stderr, done.returncode


def mib(path: Path) -> float:
    return path.stat().st_size / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default="compute,plain")
    parser.add_argument("--release", default="trixie")
    parser.add_argument(
        "--no-force", action="store_true", help="measure only what is stale (a no-op if none)"
    )
    parser.add_argument("--section", default="disk")
    args = parser.parse_args()
    if missing := missing_tools():
        raise SystemExit(f"bench_disk: missing {', '.join(missing)} (apt-get install ovmf)")
    rows = []
    for role in args.roles.split(","):
        print(f"{role}: building (--format disk{'' if args.no_force else ' --force'})", flush=True)
        output, rc = build(role, force=not args.no_force)
        if rc != 0:
            raise SystemExit(f"build-images --role {role} failed (exit {rc}):\n{output[-3000:]}")
        rootfs_s, disk_s = seconds(role, output)
        disk = find_disk_image(args.release, role)
        assert disk.disk_path is not None
        print(f"{role}: booting {disk.disk_path.name} under OVMF (TCG)", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-disk-") as work:
            boot = boot_disk(disk.disk_path, Path(work), timeout=1200)
        if not boot.reported:
            tail = "\n".join(boot.serial.splitlines()[-30:])
            raise SystemExit(f"{role}: the disk never reported after {boot.seconds:.0f} s:\n{tail}")
        row = {
            "role": role,
            "rootfs_s": rootfs_s,
            "rootfs_mib": f"{mib(disk.rootfs_path):.0f}",
            "disk_s": disk_s,
            "disk_mib": f"{mib(disk.disk_path):.0f}",
            "virtual_gib": f"{(disk.disk.size if disk.disk else 0) / (1 << 30):.1f}",
            "boot_s": f"{boot.seconds:.0f}",
        }
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    lines = [
        "## Whole-disk images: build per format, and a firmware boot (bench/bench_disk.py)",
        "",
        "Per role: `build-images --role R --format disk"
        + ("`" if args.no_force else " --force` (warm .deb cache and Debian base)")
        + ": the root filesystem (DIB) and the GPT whole-disk image assembled from it (ESP with "
        "Debian's signed shim and grub, the root filesystem by UUID; no device-mapper). Then the "
        "disk boots as a server does: OVMF with fresh NVRAM, an e1000e NIC, the seed on a SATA "
        "CD, under TCG; seconds from QEMU's start to the guest's runcmd report (cloud-init's "
        "final stage). No lab ran meanwhile.",
        "",
        "| role | rootfs build (s) | rootfs qcow2 (MiB) | disk assembly (s) | disk qcow2 (MiB) "
        "| disk virtual size (GiB) | firmware boot to final stage (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['role']} | {r['rootfs_s']} | {r['rootfs_mib']} | {r['disk_s']} | {r['disk_mib']} "
        f"| {r['virtual_gib']} | {r['boot_s']} |"
        for r in rows
    ]
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
