"""Where each node's CPU went since it booted, per systemd unit (issues 14 and 17).

Run as root against a running lab:
    python bench/bench_cpu.py [--topology FILE] [--top 15] [--section cpu-NAME]
Under TCG the guests are CPU-bound for most of a first boot or a restart, so what takes time
is what burns CPU: this reads, over `lab ssh`, each node's cgroup v2 counters (usage_usec of
the machine and of every unit under system.slice; a unit's figure includes its children and
its processes that already exited) and its uptime, and prints per node the units that used the
most CPU-seconds with their share of what the node's vCPUs could give since boot. Read right
after `lab up --wait` (or bench_power) it answers "which service's start is worth cutting";
read later it also holds the load since. Replaces the `bench:cpu` section (or --section) of
docs/benchmarks.md. Reads counters only: no secret is involved.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cluster import DEFAULT_TOPOLOGY, lab
from bench.report import write_section
from builder.loader import load

# Counters in microseconds, one "key value..." line each. CGROUP_ROOT and UPTIME_FILE are for
# the tests, which run this very script on a tree of their own.
REMOTE = r"""cd "${CGROUP_ROOT:-/sys/fs/cgroup}" || exit 1
echo "total $(sed -n 's/^usage_usec //p' cpu.stat)"
for f in system.slice/*/cpu.stat; do
    unit=${f#system.slice/}
    echo "unit ${unit%/cpu.stat} $(sed -n 's/^usage_usec //p' "$f")"
done
echo "uptime $(cut -d' ' -f1 "${UPTIME_FILE:-/proc/uptime}")"
echo "cpus $(nproc)"
"""


@dataclass
class NodeCpu:
    uptime: float = 0.0  # seconds since boot
    cpus: int = 1
    total: float = 0.0  # CPU-seconds the whole node used
    units: dict[str, float] = field(default_factory=dict)  # unit -> CPU-seconds

    @property
    def capacity(self) -> float:
        return self.uptime * self.cpus


def parse(report: str) -> NodeCpu:
    """REMOTE's output; a line that does not parse is skipped (a unit gone while it was read)."""
    node = NodeCpu()
    for line in report.splitlines():
        key, _, rest = line.strip().partition(" ")
        try:
            if key == "total":
                node.total = int(rest) / 1e6
            elif key == "unit":
                name, _, usec = rest.rpartition(" ")
                if name:
                    node.units[name] = int(usec) / 1e6
            elif key == "uptime":
                node.uptime = float(rest)
            elif key == "cpus":
                node.cpus = max(1, int(rest))
        except ValueError:
            continue
    return node


def rows(name: str, node: NodeCpu, top: int) -> list[str]:
    """Markdown rows: the `top` busiest units, the rest summed, what no unit still there holds
    (a finished unit's cgroup is gone with its counter), and the node's total."""
    ranked = sorted(node.units.items(), key=lambda item: (-item[1], item[0]))
    shown, rest = ranked[:top], ranked[top:]

    def share(seconds: float) -> str:
        return f"{100 * seconds / node.capacity:.0f}%" if node.capacity else "-"

    lines = [f"| {name} | {unit} | {seconds:.0f} | {share(seconds)} |" for unit, seconds in shown]
    if rest:
        others = sum(seconds for _, seconds in rest)
        lines.append(f"| {name} | {len(rest)} other units | {others:.0f} | {share(others)} |")
    outside = node.total - sum(node.units.values())
    if outside > 0:
        lines.append(
            f"| {name} | in no unit still there (first boot's scripts, units gone, the kernel) "
            f"| {outside:.0f} | {share(outside)} |"
        )
    lines.append(
        f"| {name} | **the whole node** ({node.cpus} vCPU, up {node.uptime:.0f} s) "
        f"| {node.total:.0f} | {share(node.total)} |"
    )
    return lines


def read_node(topology: Path, node: str) -> NodeCpu:
    got = lab(
        ["ssh", "--topology", str(topology), node, "sudo", "sh", "-c", shlex.quote(REMOTE)],
        topology,
        capture_output=True,
    )
    if got.returncode != 0:
        raise SystemExit(f"{node}: could not read its counters over `lab ssh`: {got.stderr}")
    return parse(got.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--top", type=int, default=15, help="units shown per node")
    parser.add_argument("--section", default="cpu", help="docs/benchmarks.md section")
    parser.add_argument("--title", default="", help="what the lab had just done")
    args = parser.parse_args()
    nodes = sorted(node.name for node in load(args.topology).nodes)
    lines = [
        "## CPU per unit since boot (bench/bench_cpu.py)"
        + (f": {args.title}" if args.title else ""),
        "",
        "CPU-seconds from each unit's cgroup (children and exited processes included); the share "
        "is of what the node's vCPUs could give since boot.",
        "",
        "| node | unit | CPU-s | share |",
        "|---|---|---:|---:|",
    ]
    for node in nodes:
        lines += rows(node, read_node(args.topology, node), args.top)
    print("\n".join(lines))
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
