"""The runner's schedule: phases start once their needs are done, side by side up to the table's
`parallel`, the longest chain first; a failure stops the rest fast; a shutdown interrupts every
running phase and the next run resumes. The real runner runs tiny phase scripts (sleep, echo)
in a scratch root and each phase notes when it started and ended."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import ModuleType

import pytest
from support.scripts import load_script

from builder.phase_log import phase_times
from builder.phases import table_for
from builder.plain import IMAGE as PLAIN_IMAGE
from builder.plain import PLAIN
from tests.support.scratch_node import RUNNER, Root
from vms.console import MARKER, scan

# Each phase notes "<start|end> <phase> <time>" in one file (appends of one short line are
# atomic), so a test can see which ran when and beside which.
NOTE = (
    'note() { printf "%s %s %s\\n" "$1" "$STACKSEED_PHASE" "$(date +%s.%N)" '
    '>>"$STACKSEED_ROOT/timeline"; }'
)


def timed(seconds: float, extra: str = "") -> str:
    return f"{NOTE}\nnote start\n{extra}\nsleep {seconds}\nnote end"


def timeline(root: Root) -> dict[str, tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for line in (root.base / "timeline").read_text().splitlines():
        what, phase, at = line.split()
        spans.setdefault(phase, [0.0, 0.0])[0 if what == "start" else 1] = float(at)
    return {phase: (start, end) for phase, (start, end) in spans.items()}


def most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    return max(sum(1 for s, e in spans.values() if s <= start < e) for start, _ in spans.values())


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return max(a[0], b[0]) < min(a[1], b[1])


def load_runner() -> ModuleType:
    return load_script("stackseed_firstboot", RUNNER)


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return Root(tmp_path)


def test_independent_phases_run_side_by_side_and_needs_hold(root: Root) -> None:
    for name in ("10-a", "20-b", "30-c", "40-d"):
        root.phase(f"{name}.sh", timed(0.6))
    root.table(
        3,
        {
            "10-a": {"needs": []},
            "20-b": {"needs": ["10-a"]},
            "30-c": {"needs": ["10-a"]},
            "40-d": {"needs": ["20-b", "30-c"]},
        },
    )

    result = root.run()

    assert result.returncode == 0, result.stderr
    spans = timeline(root)
    a, b, c, d = (spans[p] for p in ("10-a", "20-b", "30-c", "40-d"))
    assert a[1] <= b[0] and a[1] <= c[0]
    assert overlap(b, c), "20-b and 30-c need only 10-a: they run together"
    assert d[0] >= max(b[1], c[1])
    markers = [MARKER.search(line) for line in root.console_lines()]
    assert all(markers), root.console_lines()
    for phase in spans:
        statuses = [m["status"] for m in markers if m and m["phase"] == phase]
        assert statuses == ["start", "done"], phase
    assert scan(root.console.read_text()).reached("ready")
    assert all((root.done / phase).exists() for phase in spans)


def test_no_more_than_parallel_phases_run_at_once(root: Root) -> None:
    for name in ("10-a", "20-b", "30-c", "40-d"):
        root.phase(f"{name}.sh", timed(0.5))
    root.table(2, {name: {"needs": []} for name in ("10-a", "20-b", "30-c", "40-d")})
    assert root.run().returncode == 0
    assert most_at_once(timeline(root)) == 2


def test_parallel_can_be_overridden_to_one(root: Root) -> None:
    for name in ("10-a", "20-b", "30-c"):
        root.phase(f"{name}.sh", timed(0.3))
    root.table(3, {name: {"needs": []} for name in ("10-a", "20-b", "30-c")})
    assert root.run(STACKSEED_PARALLEL="1").returncode == 0
    assert most_at_once(timeline(root)) == 1


def test_the_phase_with_the_longest_chain_behind_it_starts_first(root: Root) -> None:
    for name in ("10-short", "20-long", "30-after-long"):
        root.phase(f"{name}.sh", 'echo "$STACKSEED_PHASE" >>"$STACKSEED_ROOT/order"')
    root.table(
        1,
        {
            "10-short": {"needs": [], "seconds": 5},
            "20-long": {"needs": [], "seconds": 100},
            "30-after-long": {"needs": ["20-long"], "seconds": 100},
        },
    )
    assert root.run().returncode == 0
    assert (root.base / "order").read_text().split() == ["20-long", "30-after-long", "10-short"]


def test_a_phase_the_table_does_not_list_runs_after_every_phase_named_before_it(
    root: Root,
) -> None:
    for name in ("10-a", "20-unlisted", "30-c"):
        root.phase(f"{name}.sh", timed(0.4))
    root.table(3, {"10-a": {"needs": []}, "30-c": {"needs": []}})
    assert root.run().returncode == 0
    spans = timeline(root)
    assert spans["20-unlisted"][0] >= spans["10-a"][1]
    assert overlap(spans["10-a"], spans["30-c"])


@pytest.mark.parametrize("role", PLAIN.roles)
def test_a_plain_node_installs_its_packages_alone_before_every_other_phase(
    root: Root, role: str
) -> None:
    """The table a plain node's seed carries (phases.yaml's `images: plain:`): 05-packages
    first and alone; the role's phases after it, side by side as on a role image."""
    table = table_for(role, PLAIN_IMAGE).as_json("openvswitch")
    for name in table["phases"]:
        root.phase(f"{name}.sh", timed(0.4 if name == "05-packages" else 0.2))
    (root.lib_dir / "phases.json").write_text(json.dumps(table))

    result = root.run()

    assert result.returncode == 0, result.stderr
    spans = timeline(root)
    assert set(spans) == set(table["phases"])
    packages = spans.pop("05-packages")
    assert all(start >= packages[1] for start, _ in spans.values())
    beside = {"compute": "30-iscsi", "block": "30-lvm"}[role]
    assert overlap(spans["20-wait-controller"], spans[beside]), "both need only 10-base"


def test_a_need_the_node_has_no_script_for_fails_before_anything_runs(root: Root) -> None:
    root.phase("10-a.sh", 'touch "$STACKSEED_ROOT/ran"')
    root.table(2, {"10-a": {"needs": ["05-gone"]}})
    result = root.run()
    assert result.returncode == 1
    assert not (root.base / "ran").exists()
    console = root.console.read_text()
    assert "phase=firstboot status=fail reason=bad-phase-table" in console
    assert "10-a needs 05-gone, which this node has no script for" in console


def test_a_failure_stops_the_phases_beside_it_and_shows_its_own_tail(root: Root) -> None:
    flag = root.base / "fixed"
    root.phase(
        "10-slow.sh",
        f'touch "$STACKSEED_ROOT/slow-started"; [ -e "{flag}" ] || sleep 60; echo slow done',
    )
    root.phase(
        "20-bad.sh",
        'while [ ! -e "$STACKSEED_ROOT/slow-started" ]; do sleep 0.1; done\n'
        f'echo "looking for the disk"; [ -e "{flag}" ] || fail "disk serial abc is missing"',
    )
    root.table(2, {"10-slow": {"needs": []}, "20-bad": {"needs": []}})

    began = time.monotonic()
    result = root.run()

    assert result.returncode == 1
    assert time.monotonic() - began < 30, "the sibling's sleep 60 was not waited for"
    lines = root.console_lines()
    assert lines[-1] == "STACKSEED node=node7 phase=firstboot status=fail"
    assert "STACKSEED node=node7 phase=10-slow status=interrupted" in lines
    assert "STACKSEED node=node7 phase=20-bad status=fail" in lines
    text = "\n".join(lines)
    assert "failed phase 20-bad: see /var/log/stackseed/phases/20-bad.log" in text
    assert "STACKSEED | [20-bad] ERROR: disk serial abc is missing" in text
    assert "STACKSEED | looking for the disk" in text
    assert "slow" not in text.split("phase=20-bad status=fail", 1)[1], "only 20-bad's tail"
    assert not (root.done / "10-slow").exists() and not (root.done / "20-bad").exists()
    progress = scan(root.console.read_text())
    assert progress.failed == "STACKSEED node=node7 phase=20-bad status=fail"

    flag.touch()
    assert root.run().returncode == 0
    assert (root.done / "10-slow").exists() and (root.done / "firstboot").exists()


def test_interleaved_output_stays_readable(root: Root) -> None:
    for name in ("10-x", "20-y"):
        root.phase(f"{name}.sh", 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.05; done')
    root.phase("30-z.sh", 'log "said through lib.sh"')
    root.table(2, {"10-x": {"needs": []}, "20-y": {"needs": []}, "30-z": {"needs": []}})
    assert root.run().returncode == 0

    for name in ("10-x", "20-y"):
        own = root.phase_log(name).read_text().splitlines()
        body = [line for line in own if not line.startswith("====")]
        assert body == [f"line {i}" for i in range(1, 7)], name
        assert own[0].startswith(f"==== node7 phase={name} start ")
        assert own[-1].startswith(f"==== node7 phase={name} exit=0 ")
    log = root.log.read_text().splitlines()
    body = [line for line in log if not line.startswith(("====", "----"))]
    assert sorted(body) == sorted(
        [f"[{p}] line {i}" for p in ("10-x", "20-y") for i in range(1, 7)]
        + ["[30-z] said through lib.sh"]  # already prefixed by lib.sh: not twice
    )
    for name in ("10-x", "20-y"):
        mine = [line for line in body if line.startswith(f"[{name}]")]
        assert mine == [f"[{name}] line {i}" for i in range(1, 7)], "each phase's order kept"
    # What bench_cluster and lab verify's report read: one row per phase, however interleaved.
    rows = phase_times(root.log.read_text())
    assert sorted(r.phase for r in rows) == ["10-x", "20-y", "30-z"]
    assert all(r.rc == 0 for r in rows)


def test_a_shutdown_interrupts_every_running_phase_and_the_next_run_resumes(root: Root) -> None:
    go = root.base / "go"
    root.phase("10-quick.sh", 'echo x >>"$STACKSEED_ROOT/quick-runs"')
    for name in ("20-p", "30-q"):
        root.phase(
            f"{name}.sh",
            f'echo $$ >"$STACKSEED_ROOT/{name}.pid"; [ -e "{go}" ] || sleep 60\n'
            f'echo x >>"$STACKSEED_ROOT/{name}-runs"',
        )
    root.table(
        2,
        {
            "10-quick": {"needs": []},
            "20-p": {"needs": ["10-quick"]},
            "30-q": {"needs": ["10-quick"]},
        },
    )
    proc = root.popen()
    deadline = time.monotonic() + 30
    pids = [root.base / "20-p.pid", root.base / "30-q.pid"]
    while not all(p.exists() and p.read_text().strip() for p in pids):
        assert time.monotonic() < deadline, "both phases should be running"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)  # the runner's group only: phases have their own
    assert proc.wait(timeout=30) == 143
    lines = root.console_lines()
    assert sorted(lines[-2:]) == [
        "STACKSEED node=node7 phase=20-p status=interrupted",
        "STACKSEED node=node7 phase=30-q status=interrupted",
    ]
    assert not any("status=fail" in line for line in lines)
    for pid in pids:
        assert gone(int(pid.read_text()), within=10), "the runner passes the shutdown on"
    assert (root.done / "10-quick").exists()
    assert not (root.done / "20-p").exists() and not (root.done / "30-q").exists()
    assert scan(root.console.read_text()).phase == "firstboot:20-p, 30-q (interrupted)"

    go.touch()
    assert root.run().returncode == 0  # the next boot's run
    assert (root.base / "quick-runs").read_text() == "x\n", "a done phase never runs again"
    assert (root.base / "20-p-runs").exists() and (root.base / "30-q-runs").exists()
    assert (root.done / "firstboot").exists()


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_chains_weigh_each_phase_by_the_work_it_unblocks() -> None:
    runner = load_runner()
    needs = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
    seconds = {"a": 1, "b": 10, "c": 2, "d": 5, "e": 7}
    assert runner.chains(needs, seconds) == {"a": 16, "b": 15, "c": 7, "d": 5, "e": 7}
    assert runner.ready(needs, ["c", "e", "d"], {"a"}, runner.chains(needs, seconds)) == ["c", "e"]
    # A cycle (the run reports it as stuck) must not hang the weighing.
    assert set(runner.chains({"x": ["y"], "y": ["x"]}, {"x": 1, "y": 1})) == {"x", "y"}


def test_a_runner_bug_still_ends_in_a_fail_marker(root: Root) -> None:
    root.phase("10-a.sh", 'touch "$STACKSEED_ROOT/ran"')
    root.table(1, {"10-a": "not an entry"})  # type: ignore[dict-item]
    result = root.run()
    assert result.returncode == 1
    assert not (root.base / "ran").exists()
    assert "phase=firstboot status=fail reason=runner-error" in root.console.read_text()
    assert "Traceback" in root.log.read_text()
