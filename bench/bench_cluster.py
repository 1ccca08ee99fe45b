"""The whole chain: `lab up` to every node's first boot done, per phase, then `lab verify`.

Run as root with libvirtd up and role images built:
    python bench/bench_cluster.py [--topology FILE] [--keep] [--skip-up]
It takes the lab down, runs `lab up --wait` (watching each node's console for its first-boot
markers), reads every node's phase timestamps from /var/log/stackseed/firstboot.log (only the
runner's `====` lines, which carry no secrets), times `lab verify`, prints the figures and
replaces the `bench:cluster` section of docs/benchmarks.md. `--skip-up` measures a lab that is
already up (phase durations and verify only); `--keep` leaves the lab running afterwards, and
a failed `lab verify` always does (the nodes' logs say why).
Uses $STACKSEED_STATE_DIR like the `lab` commands.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_section
from builder.loader import load
from builder.paths import state_root
from builder.phase_log import GREP, PhaseTime, phase_times, wall_seconds
from vms.console import Progress, read_progress

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "builder" / "data" / "lab.yaml"


# PYTHONPATH passes through so a checkout other than the installed one can be measured.
PASSED_ENV = ("PATH", "HOME", "STACKSEED_STATE_DIR", "PYTHONPATH")


def lab(args: list[str], topology: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env["LC_ALL"] = "C.UTF-8"
    cmd = ["lab", *args, "--topology", str(topology)] if args[0] != "ssh" else ["lab", *args]
    return subprocess.run(cmd, env=env, text=True, check=False, **kwargs)


@dataclass
class Scenario:
    """How far the run departs from a plain `lab up --wait`."""

    first: list[str]  # started `head_start` seconds before the rest (`lab up --only`)
    head_start: int
    reboot: tuple[str, str] | None  # (node, phase): reboot the node when it starts that phase

    def describe(self) -> str:
        parts = []
        if self.first:
            parts.append(f"{', '.join(self.first)} started {self.head_start} s before the rest")
        if self.reboot:
            parts.append(f"{self.reboot[0]} rebooted when it began phase {self.reboot[1]}")
        return "; ".join(parts) or "all nodes started together"


def up_and_watch(
    topology: Path, names: list[str], console_dir: Path, timeout: int, scenario: Scenario
) -> dict:
    """Seconds from `lab up` to each node's `phase=firstboot status=done` on its console."""
    log = open("/var/tmp/bench-cluster-up.log", "w")  # noqa: SIM115 - closed below
    start = time.monotonic()
    events: dict[str, float] = {}
    if scenario.first:
        only = [arg for name in scenario.first for arg in ("--only", name)]
        if lab(["up", *only], topology, stdout=log, stderr=subprocess.STDOUT).returncode:
            # Going on would start every node at once and measure the wrong scenario.
            raise SystemExit(f"lab up {' '.join(only)} failed: see {log.name}")
        time.sleep(scenario.head_start)
        events["rest started"] = time.monotonic() - start
    proc = subprocess.Popen(
        ["lab", "up", "--wait", "--timeout", str(timeout), "--topology", str(topology)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k in PASSED_ENV},
    )
    done: dict[str, float] = {}
    pending = scenario.reboot
    # `lab down` keeps the console logs of the lab it removed; until libvirt truncates them,
    # they still end in the old lab's markers. Only a log written since this run counts.
    since = time.time() - (time.monotonic() - start)

    def progress(name: str) -> Progress:
        path = console_dir / f"{name}.log"
        fresh = path.exists() and path.stat().st_mtime >= since
        return read_progress(path) if fresh else Progress()

    while proc.poll() is None or len(done) < len(names):
        if pending and pending[1] in progress(pending[0]).running:
            lab(["reboot", pending[0]], topology, stdout=log, stderr=subprocess.STDOUT)
            events[f"{pending[0]} rebooted"] = time.monotonic() - start
            pending = None
        for name in names:
            if name not in done and progress(name).reached("ready"):
                done[name] = time.monotonic() - start
        if proc.poll() is not None:
            break
        time.sleep(2)
    log.close()
    total = time.monotonic() - start
    return {"rc": proc.returncode, "total": total, "done": done, "events": events}


def node_phase_times(topology: Path, name: str) -> tuple[list[PhaseTime], float | None]:
    """The node's phase rows, and its first boot's wall time (phases overlap)."""
    got = lab(["ssh", "--topology", str(topology), name, *GREP], topology, capture_output=True)
    return phase_times(got.stdout), wall_seconds(got.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument(
        "--verify-timeout",
        type=int,
        default=900,
        metavar="S",
        help="lab verify's wait for each slow step (server ACTIVE, guest boot, volume status)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument(
        "--deep", action="store_true", help="lab verify --deep (console and floating IP ping)"
    )
    parser.add_argument("--skip-up", action="store_true", help="measure the lab that is up")
    parser.add_argument(
        "--verify-on", metavar="NODE", help="lab verify --on NODE: the test server on that compute"
    )
    parser.add_argument(
        "--first",
        action="append",
        default=[],
        metavar="NODE",
        help="start NODE before the others (repeatable)",
    )
    parser.add_argument("--head-start", type=int, default=300, metavar="S")
    parser.add_argument(
        "--reboot",
        metavar="NODE@PHASE",
        help="reboot NODE when it starts PHASE, e.g. controller@42-nova",
    )
    parser.add_argument("--section", default="cluster", help="docs/benchmarks.md section")
    args = parser.parse_args()
    reboot = tuple(args.reboot.split("@", 1)) if args.reboot else None
    scenario = Scenario(args.first, args.head_start, reboot)  # type: ignore[arg-type]
    topo = load(args.topology)
    names = [n.name for n in topo.nodes]
    console_dir = state_root() / topo.lab.name / "console"

    up = None
    if not args.skip_up:
        lab(["down"], args.topology, capture_output=True)
        up = up_and_watch(args.topology, names, console_dir, args.timeout, scenario)
        print(f"lab up: {json.dumps(up)}", flush=True)

    read = {name: node_phase_times(args.topology, name) for name in names}
    phases = {name: rows for name, (rows, _) in read.items()}
    walls = {name: wall for name, (_, wall) in read.items()}
    for name, rows in phases.items():
        for phase, seconds, rc in rows:
            print(f"{name} {phase} {seconds:.0f}s exit={rc}", flush=True)

    started = time.monotonic()
    verify = lab(
        ["verify", "--json", "--timeout", str(args.verify_timeout)]
        + (["--deep"] if args.deep else [])
        + (["--on", args.verify_on] if args.verify_on else []),
        args.topology,
        capture_output=True,
    )
    verify_s = time.monotonic() - started
    try:
        verdict = json.loads(verify.stdout)
    except ValueError:
        verdict = {"ok": False, "checks": []}
    print(f"lab verify: {verify_s:.0f}s ok={verdict['ok']}", flush=True)
    for check in verdict["checks"]:
        print(f"  {check['name']}: {'ok' if check['ok'] else 'FAILED'}: {check['detail']}")
    if not verdict["checks"]:
        print(f"  lab verify printed no verdict; its stderr:\n{verify.stderr}", flush=True)

    # A failed verify keeps the lab: its nodes' logs are the only way to learn why.
    if verdict["ok"] and not args.keep and not args.skip_up:
        lab(["down"], args.topology, capture_output=True)
    elif not verdict["ok"]:
        print(f"lab kept for diagnosis; remove it with: lab down --topology {args.topology}")

    title = "The whole chain: lab up to a verified cloud"
    if args.section != "cluster":
        title += f" ({scenario.describe()})"
    lines = [f"## {title} (bench/bench_cluster.py)", ""]
    if up is not None:
        lines += [
            f"Topology `{args.topology.name}` ({len(names)} nodes), all VMs under TCG; "
            f"{scenario.describe()}. `lab up --wait` exit status {up['rc']}, "
            f"{up['total']:.0f} s in all"
            + "".join(f"; {what} at {at:.0f} s" for what, at in up["events"].items())
            + ".",
            "",
            "| node | `lab up` to first boot done (s) |",
            "|---|---:|",
            *(f"| {n} | {up['done'].get(n, float('nan')):.0f} |" for n in names),
            "",
        ]
    lines += ["| node | phase | seconds |", "|---|---|---:|"]
    for name, rows in phases.items():
        lines += [
            f"| {name} | {p} | {s:.0f}{'' if rc == 0 else f' (exit {rc})'} |" for p, s, rc in rows
        ]
        if walls[name] is not None:  # phases overlap: first start to last end, not their sum
            lines.append(f"| {name} | **first boot, wall** | **{walls[name]:.0f}** |")
    lines += ["", "| `lab verify` check | ok | seconds | detail |", "|---|---|---:|---|"]
    lines += [
        f"| {c['name']} | {'yes' if c['ok'] else 'NO'} | {c['seconds']} "
        f"| {c['detail'].replace('|', '/')} |"
        for c in verdict["checks"]
    ]
    command = "lab verify" + (" --deep" if args.deep else "")
    command += f" --on {args.verify_on}" if args.verify_on else ""
    total = "" if up is None else f"; with `lab up --wait`, {up['total'] + verify_s:.0f} s in all"
    lines += ["", f"`{command}` wall time: {verify_s:.0f} s{total}."]
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
