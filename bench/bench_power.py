"""A verified lab brought back after a power cut, a node's reboot or a pause, timed per node.

Run as root against a running, verified lab (issue 17):
    python bench/bench_power.py --cut | --reboot NODE | --stop-start | --save-start
        [--topology FILE] [--section NAME] [--no-verify]
--cut destroys every domain of the lab and stops its networks at once (`virsh`, as a host
reboot or a power failure leaves them), then runs `lab up --wait`; --reboot runs `lab reboot
NODE` then `lab up --wait`; --stop-start runs `lab stop` then `lab start --wait`; --save-start
runs `lab stop --save` then `lab start --wait` (no boot: the nodes resume from their memory, so
the figure is the start's, and the saved memory's size on disk is reported). For each node
it prints the seconds from the command to its `services=all status=ready` marker (its later
boot's walk done), what the walk logged per phase (/var/log/stackseed/services.log: only the
walker's own "up after" lines, which carry no secret), whether a first-boot phase ran again,
then the time of `lab verify`; and replaces that section of docs/benchmarks.md.
Uses $STACKSEED_STATE_DIR like the `lab` commands.
"""

from __future__ import annotations

import argparse
import calendar
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cluster import DEFAULT_TOPOLOGY, lab
from bench.report import write_section, yardstick
from builder.loader import load
from builder.state import LabState
from vms.boots import note_path, read_note

URI = "qemu:///system"
SAVE_DIR = Path("/var/lib/libvirt/qemu/save")  # where libvirtd keeps a managed save
READY = "services=all status=ready"
FIRST_BOOT_START = re.compile(r"STACKSEED node=\S+ phase=(?!firstboot )\S+ status=start")
WALK_LINE = re.compile(
    r"^\[(\d\d-[\w-]+|all)\] (?:==== \S+ services )?(up|late|ready)(?:: [^\n]*?)? after (\d+)s"
)
WALK_START = "services (every phase) start"


def virsh(*args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=False
    ).stdout


def cut(prefix: str) -> None:
    """Every domain and network of the lab off at once, as after a host's power failure."""
    for dom in virsh("list", "--name").split():
        if dom.startswith(prefix):
            virsh("destroy", dom)
    for net in virsh("net-list", "--name").split():
        if net.startswith(prefix):
            virsh("net-destroy", net)


class Watch:
    """Seconds from the start of the command to each node's walk done, read from its console
    log: what the launcher's start note says is this boot, else what came after `offsets`."""

    def __init__(self, state: LabState, nodes: list[str]) -> None:
        self.state = state
        self.offsets = {node: self._size(node) for node in nodes}
        self.ready: dict[str, float] = {}
        self.first_boot_again: set[str] = set()
        self.started = time.monotonic()
        self.wall_start = time.time()
        self.noted: set[str] = set()  # nodes whose start note since the command was read
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _size(self, node: str) -> int:
        path = self.state.console_log(node)
        return path.stat().st_size if path.exists() else 0

    def this_boot(self, node: str) -> str:
        path = self.state.console_log(node)
        data = path.read_bytes() if path.exists() else b""
        # A domain started again (`lab up`, `lab start`) has its log emptied, and the launcher
        # notes where the new boot begins: read once that note is newer than the command. A
        # guest's own reboot writes none; its log carries on past its size at the command.
        if node not in self.noted:
            note = note_path(self.state, node)
            fresh = note.exists() and note.stat().st_mtime >= self.wall_start
            if fresh and (noted := read_note(self.state, node)) is not None:
                self.offsets[node] = noted.offset
                self.noted.add(node)
        return data[self.offsets[node] :].decode(errors="replace")

    def _run(self) -> None:
        while not self.stop.is_set():
            for node in self.offsets:
                if node in self.ready:
                    continue
                text = self.this_boot(node)
                if FIRST_BOOT_START.search(text):
                    self.first_boot_again.add(node)
                if f"node={node} {READY}" in text:
                    self.ready[node] = time.monotonic() - self.started
            self.stop.wait(2)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def services_log(topology: Path, node: str) -> str:
    got = lab(
        [
            "ssh",
            "--topology",
            str(topology),
            node,
            "sudo",
            "cat",
            "/var/log/stackseed/services.log",
        ],
        topology,
        capture_output=True,
    )
    return got.stdout


def walk_rows(log: str) -> list[tuple[str, str, int]]:
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if WALK_START in line]
    rows = []
    for line in lines[starts[-1] if starts else 0 :]:
        if match := WALK_LINE.match(line.strip()):
            rows.append((match[1], match[2], int(match[3])))
    return rows


READY_AT = re.compile(
    r"^\[all\] ==== \S+ services ready after \d+s (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$"
)


def ready_at(log: str) -> float | None:
    """When the last walk in the node's services.log said ready, by the node's clock (UTC,
    kept by chrony to the controller's, itself started from the host's): the fallback where
    the console watch missed the marker."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if WALK_START in line]
    found = None
    for line in lines[starts[-1] if starts else 0 :]:
        if match := READY_AT.match(line.strip()):
            found = calendar.timegm(time.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ"))
    return float(found) if found is not None else None


def timed(args: list[str], topology: Path) -> tuple[float, int]:
    started = time.monotonic()
    done = lab(args, topology)
    return time.monotonic() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    modes = parser.add_mutually_exclusive_group(required=True)
    modes.add_argument("--cut", action="store_true", help="every domain destroyed at once")
    modes.add_argument("--reboot", metavar="NODE", help="lab reboot NODE")
    modes.add_argument("--stop-start", action="store_true", help="lab stop, then lab start")
    modes.add_argument("--save-start", action="store_true", help="lab stop --save, then lab start")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--no-verify", action="store_true", help="skip lab verify afterwards")
    parser.add_argument("--section", default=None, help="docs/benchmarks.md section")
    args = parser.parse_args()
    topology = load(args.topology)
    name = topology.lab.name
    nodes = sorted(node.name for node in topology.nodes)
    state = LabState.for_lab(name)
    wait = ["--wait", "--timeout", str(args.timeout)]

    host = yardstick()
    print(f"host yardstick: {host:.2f} s (a fixed Python loop, best of 3; lower is faster)")
    watch = Watch(state, nodes)
    steps: list[tuple[str, float, int]] = []
    on_disk = 0
    if args.cut:
        kind = "cut"
        what = "every domain destroyed and the lab's networks stopped at once, then `lab up`"
        cut(f"{name}-")
        steps.append(("`lab up --wait`", *timed(["up", *wait], args.topology)))
    elif args.reboot:
        kind = f"reboot-{args.reboot}"
        what = f"`lab reboot {args.reboot}`, then `lab up --wait`"
        steps.append(
            (f"`lab reboot {args.reboot}`", *timed(["reboot", args.reboot], args.topology))
        )
        steps.append(("`lab up --wait`", *timed(["up", *wait], args.topology)))
    elif args.save_start:
        kind = "save-start"
        what = "`lab stop --save` (memory kept), then `lab start --wait` (resumed, no boot)"
        steps.append(("`lab stop --save`", *timed(["stop", "--save"], args.topology)))
        on_disk = sum(f.stat().st_size for f in SAVE_DIR.glob(f"{name}-*.save"))
        steps.append(("`lab start --wait`", *timed(["start", *wait], args.topology)))
    else:
        kind = "stop-start"
        what = "`lab stop` (ACPI, the controller last), then `lab start --wait`"
        steps.append(("`lab stop`", *timed(["stop"], args.topology)))
        steps.append(("`lab start --wait`", *timed(["start", *wait], args.topology)))
    total = time.monotonic() - watch.started
    watch.close()
    if not args.no_verify:
        steps.append(("`lab verify`", *timed(["verify"], args.topology)))

    # A single node's reboot: the others never went down, so they print no new ready marker;
    # a saved lab is resumed, not booted, and prints none either.
    restarted = [args.reboot] if args.reboot else [] if args.save_start else nodes
    logs = {node: services_log(args.topology, node) for node in restarted}
    by_clock: set[str] = set()
    for node in restarted:
        at = ready_at(logs[node])
        # Only this walk's (after the command), never an earlier boot's.
        if node not in watch.ready and at is not None and at >= watch.wall_start:
            watch.ready[node] = at - watch.wall_start
            by_clock.add(node)
    if by_clock:
        total = max(total, *(watch.ready[n] for n in by_clock))

    saved_gib = on_disk / (1 << 30)
    saved_line = [f"Saved memory on the host's disk: {saved_gib:.1f} GiB.", ""] if on_disk else []
    lines = [
        f"## Back from a restart: {what} (bench/bench_power.py)",
        "",
        f"Topology `{args.topology.name}`, verified before. Ready: the node's "
        f"`{READY}` marker (stackseed-services done, the node counted in by the controller), "
        "seconds from the first command.",
        "",
        f"Host yardstick before the first command: {host:.2f} s (bench/report.py: a fixed "
        "pure-Python loop on the host, beside the lab as it was, best of 3; lower is faster).",
        "",
        "| step | seconds | exit |",
        "|---|---:|---:|",
        *(f"| {step} | {seconds:.0f} | {rc} |" for step, seconds, rc in steps),
        f"| from the first command to the last node ready | {total:.0f} | |",
        "",
        *saved_line,
        "| node | ready (s) | first-boot phase ran again |",
        "|---|---:|---|",
    ]
    for node in nodes:
        ready = watch.ready.get(node)
        again = "yes" if node in watch.first_boot_again else "no"
        shown = f"{ready:.0f}" if ready else "not ready" if node in restarted else "stayed up"
        if args.save_start and not ready:
            shown = "resumed from its memory"
        if node in by_clock:
            shown += " (the node's services.log clock: the console watch missed the marker)"
        lines.append(f"| {node} | {shown} | {again} |")
    walks = [
        f"| {node} | {'the whole walk' if phase == 'all' else phase} | {seconds}"
        f"{' (late)' if status == 'late' else ''} |"
        for node in restarted
        for phase, status, seconds in walk_rows(logs[node])
    ]
    if walks:  # a resumed lab walks nothing: no empty table
        lines += ["", "| node | walk: phase | took (s) |", "|---|---|---:|", *walks]
    print("\n".join(lines))
    write_section(args.section or f"power-{kind}", "\n".join(lines))
    failed = [step for step, _, rc in steps if rc]
    if failed or any(n not in watch.ready for n in restarted) or watch.first_boot_again:
        raise SystemExit(f"not back cleanly: {', '.join(failed) or 'see the tables above'}")


if __name__ == "__main__":
    main()
