"""Time to render and write every seed of a 1-, 3- and 20-node topology (cold and warm state)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import write_section
from builder.loader import parse
from builder.plan import make_plan
from builder.seed import write_all_seeds
from builder.state import LabState


def topology(nodes: int) -> str:
    lines = [
        "lab: {name: bench}",
        "networks:",
        "  - {name: mgmt, purpose: management, cidr: 10.0.0.0/22}",
        "  - {name: provider, purpose: provider, cidr: 203.0.113.0/24}",
        "nodes:",
        "  - {name: controller, role: controller, ip: 10.0.0.11}",
    ]
    for i in range(1, nodes):
        if i % 4 == 0:
            lines.append(
                f"  - {{name: block{i}, role: block, ip: 10.0.1.{i}, disks: "
                f"[{{size: 20GiB, purpose: cinder-volumes, serial: cv{i}}}]}}"
            )
        else:
            lines.append(f"  - {{name: compute{i}, role: compute, ip: 10.0.2.{i}}}")
    return "\n".join(lines) + "\n"


def measure(nodes: int, rounds: int = 3) -> tuple[float, float, int]:
    plan = make_plan(parse(topology(nodes), f"{nodes}-node"))
    cold, warm = [], []
    size = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            state = LabState(Path(tmp) / "bench")
            start = time.perf_counter()
            seeds = write_all_seeds(plan, state)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_all_seeds(plan, state)
            warm.append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in seeds.values())
    return min(cold), min(warm), size


def main() -> None:
    rows = [
        "| nodes | first run (s) | re-run, nothing changed (s) | seeds total (KiB) |",
        "|---:|---:|---:|---:|",
    ]
    for nodes in (1, 3, 20):
        cold, warm, size = measure(nodes)
        print(f"{nodes:>3} nodes: first {cold:.3f} s, re-run {warm:.3f} s, {size // 1024} KiB")
        rows.append(f"| {nodes} | {cold:.3f} | {warm:.3f} | {size // 1024} |")
    body = (
        "## Render and write seeds (`bench/bench_render.py`)\n\n"
        "First run includes generating secrets and SSH keys; best of 3.\n\n" + "\n".join(rows)
    )
    write_section("render", body)


if __name__ == "__main__":
    main()
