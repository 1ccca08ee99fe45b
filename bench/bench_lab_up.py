"""Wall time from `lab up` to every node at cloud-init's final stage, for 1-4 nodes.

Run as root with libvirtd up and role images built:  python bench/bench_lab_up.py [--nodes 1,2,3,4]
Prints the figures and replaces the `bench:lab_up` section of docs/benchmarks.md. Each lab is
taken down afterwards. Under TCG always; under KVM too where the probe says it works.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section
from builder.errors import StackseedError
from builder.images.contract import find_image
from builder.loader import parse
from builder.plan import make_plan
from builder.seed import write_all_seeds
from builder.state import LabState
from vms import launcher, watch
from vms.accel import Accel, choose, probe_kernel
from vms.storage import default_pool_dir

URI = "qemu:///system"
LAB = "benchup"


def topology(nodes: int) -> str:
    lines = [
        f"lab: {{name: {LAB}, release: trixie}}",
        "networks:",
        "  - {name: mgmt, purpose: management, cidr: 10.251.0.0/24, gateway: 10.251.0.1}",
        "nodes:",
        "  - {name: controller, role: controller, ip: 10.251.0.11, memory: 1GiB,",
        "     nics: [{network: mgmt}]}",
    ]
    for i in range(1, nodes):
        lines.append(
            f"  - {{name: compute{i}, role: compute, ip: 10.251.0.{30 + i}, memory: 1GiB, "
            "nics: [{network: mgmt}]}"
        )
    return "\n".join(lines) + "\n"


def images(release: str) -> dict:
    found = {}
    for role in ("controller", "compute", "block"):
        with contextlib.suppress(StackseedError):
            found[role] = find_image(release, role)
    if not found:
        sys.exit("no role images built yet: run build-images first")
    fallback = found.get("compute") or next(iter(found.values()))
    return {role: found.get(role, fallback) for role in ("controller", "compute")}


def run_once(conn: libvirt.virConnect, nodes: int, accel: Accel, state_root: Path) -> dict:
    plan = make_plan(parse(topology(nodes), "bench"))
    state = LabState(state_root / f"{LAB}-{accel.mode}-{nodes}")
    launcher.down(conn, LAB, state)  # a clean start; this also removes old seeds
    start = time.monotonic()  # from here on it is what `lab up` does: seeds, objects, boot
    launch = launcher.Launch(
        plan=plan,
        state=state,
        images=images("trixie"),
        seeds=write_all_seeds(plan, state, nested_virt=accel.nested_virt),
        accel=accel,
        pool_dir=default_pool_dir(URI, LAB),
    )
    try:
        launcher.up(conn, launch)
        created = time.monotonic() - start
        reached = watch.wait(conn, plan, state, until="final", timeout=1800)
        total = time.monotonic() - start
    finally:
        launcher.down(conn, LAB, state)
    return {
        "created": created,
        "final": total,
        "per_node": {k: v + created for k, v in reached.items()},
    }


def write_rows(rows: list[str]) -> None:
    body = "\n".join(
        [
            "## lab up: wall time to cloud-init's final stage (bench/bench_lab_up.py)",
            "",
            "| accel | nodes | libvirt objects created (s) | all nodes at final stage (s) |",
            "|---|---|---|---|",
            *rows,
            "",
            "1 GiB per node; controller + computes on the management network only.",
        ]
    )
    write_section("lab_up", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", default="1,2,3,4")
    args = parser.parse_args()
    conn = libvirt.open(URI)
    accels = [choose("tcg")]
    # The probe must boot a guest kernel: firmware alone passes on hosts where KVM cannot
    # run Debian's kernel (a nested PVM host), and the domains would then sit paused.
    probed = choose(None, kernel=probe_kernel(images("trixie")))
    if probed.mode == "kvm":
        accels.append(probed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for accel in accels:
            for n in (int(x) for x in args.nodes.split(",")):
                result = run_once(conn, n, accel, Path(tmp))
                print(f"{accel.mode} {n} node(s): {result}", flush=True)
                rows.append(
                    f"| {accel.mode} | {n} | {result['created']:.1f} | {result['final']:.1f} |"
                )
    write_rows(rows)


if __name__ == "__main__":
    main()
