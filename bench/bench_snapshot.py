"""Golden snapshot round trip: `lab snapshot`, `lab down`, `lab up --from`, and their sizes.

Run as root against a running, verified lab (`lab verify` first, so the snapshot says so):
    python bench/bench_snapshot.py [--name golden] [--topology FILE]
Times each command's wall clock, reads when `lab up --from` found every API in the catalog
answering (its own "responds Ns after the command" line), lists the snapshot's files and sizes
and replaces the `bench:snapshot` section of docs/benchmarks.md. The lab is left up, restored.
Uses $STACKSEED_STATE_DIR and $STACKSEED_CACHE_DIR like the `lab` commands.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cluster import DEFAULT_TOPOLOGY, lab
from bench.report import write_section
from builder.loader import load
from builder.snapshot_manifest import snapshot_dir

RESPONDS = re.compile(r"responds (\d+)s after the command")


def timed(args: list[str], topology: Path) -> tuple[float, str]:
    started = time.monotonic()
    done = lab(args, topology, capture_output=True)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    print(f"lab {' '.join(args)}: exit {done.returncode}, {seconds:.0f} s", flush=True)
    if done.returncode:
        raise SystemExit(f"lab {' '.join(args)} failed:\n{output}")
    return seconds, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--name", default="golden")
    args = parser.parse_args()
    name = load(args.topology).lab.name

    take, _ = timed(["snapshot", args.name, "--replace"], args.topology)
    files = sorted(p for p in snapshot_dir(name, args.name).iterdir() if p.is_file())
    sizes = {p.name: (p.stat().st_size, p.stat().st_blocks * 512) for p in files}
    down, _ = timed(["down"], args.topology)
    restore, output = timed(["up", "--from", args.name], args.topology)
    answered = RESPONDS.search(" ".join(output.split()))

    on_disk = sum(used for _, used in sizes.values())
    lines = [
        "## Golden snapshot round trip (bench/bench_snapshot.py)",
        "",
        f"Default topology, verified lab, memory state saved (`lab snapshot {args.name}`).",
        "",
        "| step | wall time (s) |",
        "|---|---:|",
        f"| `lab snapshot` (lab paused, memory saved, disks copied, lab resumed) | {take:.0f} |",
        f"| `lab down` | {down:.0f} |",
        f"| `lab up --from` | {restore:.0f} |",
        "| every API in the catalog answering, by `lab up --from`'s own clock | "
        f"{answered.group(1) if answered else 'not reported'} |",
        "",
        f"Snapshot on disk: {on_disk / 2**30:.1f} GiB.",
        "",
        "| file | apparent size (MiB) | on disk (MiB) |",
        "|---|---:|---:|",
        *(f"| {n} | {a / 2**20:.0f} | {u / 2**20:.0f} |" for n, (a, u) in sizes.items()),
    ]
    print("\n".join(lines))
    write_section("snapshot", "\n".join(lines))


if __name__ == "__main__":
    main()
