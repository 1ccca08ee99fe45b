"""bench/bench_power.py's reading of a restart: the walker's own log lines and the consoles."""

from __future__ import annotations

import time
from pathlib import Path

from bench import bench_power
from builder.state import LabState

# As stackseed-services writes them (Walker.log: "[phase] text"), a first boot's lines before.
SERVICES_LOG = """\
[all] ==== controller services (every phase) start 2026-12-03T10:00:00Z
[20-mariadb] up after 30s
[all] ==== controller services ready after 999s 2026-12-03T10:17:00Z
[all] ==== controller services (every phase) start 2026-12-03T12:00:00Z
[10-base] nothing to start: up with its needs
[20-mariadb] mariadb started in 21s
[20-mariadb] up after 23s
[42-nova] http http://10.0.0.11:8774/ answers after 40s
[42-nova] late after 901s
[all] ==== controller services late: 42-nova after 950s
"""


def test_walk_rows_read_the_last_walk_only() -> None:
    assert bench_power.walk_rows(SERVICES_LOG) == [
        ("20-mariadb", "up", 23),
        ("42-nova", "late", 901),
        ("all", "late", 950),
    ]
    done = SERVICES_LOG.replace("late: 42-nova after 950s", "ready after 950s 2026-12-03T12:16Z")
    assert bench_power.walk_rows(done)[-1] == ("all", "ready", 950)


NOTE = '{"offset": 0, "firstboot": "done"}\n'  # what the launcher notes on a restart


def _console(state: LabState, node: str, text: str, mode: str = "w") -> None:
    path = state.console_log(node)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as handle:
        handle.write(text)


def _until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_watch_reads_each_nodes_boot_since_the_command(tmp_path: Path) -> None:
    """A reboot appends to the console, a restarted domain's log starts empty: either way the
    old boot's `ready` does not count, the new one's does, and a first-boot phase is seen."""
    state = LabState(tmp_path / "lab")
    old = "STACKSEED node={n} services=all status=ready\n"
    for node in ("a", "b"):
        _console(state, node, "x" * 500 + old.format(n=node))
    watch = bench_power.Watch(state, ["a", "b"])
    try:
        time.sleep(2.5)
        assert watch.ready == {}
        _console(state, "a", "Linux version\n" + old.format(n="a"), "a")  # rebooted: appended
        _console(state, "b", "STACKSEED node=b phase=42-nova status=start\n" + old.format(n="b"))
        state.console_log("b").with_name("b.start.json").write_text(NOTE)  # `lab up` restarted it
        _until(lambda: len(watch.ready) == 2)
    finally:
        watch.close()
    assert set(watch.ready) == {"a", "b"}
    assert watch.first_boot_again == {"b"}


def test_watch_follows_the_launchers_start_note_when_the_new_boot_outgrew_the_old_log(
    tmp_path: Path,
) -> None:
    state = LabState(tmp_path / "lab")
    _console(state, "c", "old boot\nSTACKSEED node=c services=all status=ready\n")
    watch = bench_power.Watch(state, ["c"])
    try:
        # Restarted: emptied, then longer than before, before any poll saw it short.
        _console(state, "c", "STACKSEED node=c services=all status=ready\n" + "x" * 5000)
        state.console_log("c").with_name("c.start.json").write_text(NOTE)
        _until(lambda: "c" in watch.ready)
    finally:
        watch.close()
    assert "c" in watch.ready


def test_ready_at_is_the_last_walks_ready_by_the_nodes_clock() -> None:
    """The fallback where the console watch missed a node's marker: the walker's own line."""
    done = SERVICES_LOG.replace("late: 42-nova after 950s", "ready after 950s 2026-12-03T12:16:00Z")
    assert bench_power.ready_at(done) == 1796300160.0  # 2026-12-03T12:16:00Z
    # The last walk was late: it never said ready (the earlier walk's ready does not count).
    assert bench_power.ready_at(SERVICES_LOG) is None
    assert bench_power.ready_at("") is None


def test_the_host_yardstick_grows_with_the_work_it_times() -> None:
    """The figure printed beside each run: four times the loop takes longer, whatever the
    host's speed (best of three rounds keeps a busy moment out)."""
    from bench.report import yardstick

    small = yardstick(loops=100_000)
    large = yardstick(loops=400_000)
    assert 0 < small < large
