"""The first-boot runner, run for real in a scratch root with tiny phase scripts.

The runner and lib.sh are the files the seed carries; STACKSEED_ROOT moves every path they use
into tmp_path and STACKSEED_CONSOLE stands in for the serial console (a file here).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.scratch_node import RUNNER, SECRET, Root

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return Root(tmp_path)


def test_phases_run_in_order_with_markers_and_output_only_in_the_log(root: Root) -> None:
    root.phase(
        "20-second.sh", 'echo "second ran"; echo "$STACKSEED_PHASE" >> "$STACKSEED_ROOT/order"'
    )
    root.phase(
        "10-first.sh", 'echo "first ran"; echo "$STACKSEED_PHASE" >> "$STACKSEED_ROOT/order"'
    )

    result = root.run()

    assert result.returncode == 0, result.stderr
    assert (root.base / "order").read_text().split() == ["10-first", "20-second"]
    assert root.console_lines() == [
        "STACKSEED node=node7 phase=10-first status=start",
        "STACKSEED node=node7 phase=10-first status=done",
        "STACKSEED node=node7 phase=20-second status=start",
        "STACKSEED node=node7 phase=20-second status=done",
        "STACKSEED node=node7 phase=firstboot status=done",
    ]
    log = root.log.read_text()
    assert "first ran" in log and "second ran" in log
    assert "ran" not in root.console.read_text()
    assert result.stdout == ""  # cloud-init copies the runner's stdout to the console


def test_log_is_private(root: Root) -> None:
    root.phase("10-a.sh", "echo hello")
    assert root.run().returncode == 0
    assert stat.S_IMODE(root.log.stat().st_mode) == 0o600
    assert stat.S_IMODE(root.log.parent.stat().st_mode) == 0o700


def test_finished_phases_leave_stamps_and_are_skipped_on_a_rerun(root: Root) -> None:
    root.phase("10-count.sh", 'echo x >> "$STACKSEED_ROOT/count"')
    assert root.run().returncode == 0
    assert (root.done / "10-count").exists()

    root.console.unlink()
    assert root.run().returncode == 0
    assert (root.base / "count").read_text().split() == ["x"]
    assert root.console_lines() == ["STACKSEED node=node7 phase=firstboot status=done"]


def test_failure_names_the_phase_shows_its_tail_and_stops(root: Root) -> None:
    root.phase("10-good.sh", "echo fine")
    root.phase("20-bad.sh", 'echo "creating bridge"; fail "bridge br-provider is missing"')
    root.phase("30-never.sh", 'touch "$STACKSEED_ROOT/never"')

    result = root.run()

    assert result.returncode != 0
    assert not (root.base / "never").exists()
    assert not (root.done / "20-bad").exists()
    assert (root.done / "10-good").exists()
    console = root.console_lines()
    assert "STACKSEED node=node7 phase=20-bad status=fail" in console
    assert console[-1] == "STACKSEED node=node7 phase=firstboot status=fail"
    text = "\n".join(console)
    assert "failed phase 20-bad: see /var/log/stackseed/phases/20-bad.log" in text
    assert "bridge br-provider is missing" in text
    assert "fine" not in text  # only the failing phase's lines


def test_a_failed_phase_runs_again_and_the_rest_follow(root: Root) -> None:
    flag = root.base / "fixed"
    root.phase("10-flaky.sh", f'[ -e "{flag}" ] || fail "not yet"')
    root.phase("20-after.sh", "echo after")
    assert root.run().returncode != 0
    flag.touch()
    assert root.run().returncode == 0
    assert (root.done / "20-after").exists()


def test_secrets_never_reach_log_or_console_even_from_a_careless_phase(root: Root) -> None:
    root.phase(
        "10-leaky.sh",
        'pw=$(secret rabbit_password); echo "password is $pw"; echo "url rabbit://u:$pw@h" >&2; '
        'fail "giving up with $pw"',
    )
    result = root.run()
    assert result.returncode != 0
    assert SECRET not in root.log.read_text()
    assert SECRET not in root.console.read_text()
    assert SECRET not in result.stdout + result.stderr
    assert "password is ***" in root.log.read_text()


def test_missing_phase_dir_fails(root: Root) -> None:
    shutil.rmtree(root.phases)
    result = root.run()
    assert result.returncode != 0
    assert "phase=firstboot status=fail" in root.console.read_text()


def test_complete_first_boot_leaves_a_final_stamp_and_a_rerun_does_nothing(root: Root) -> None:
    root.phase("10-once.sh", 'echo x >> "$STACKSEED_ROOT/count"')
    assert root.run().returncode == 0
    assert (root.done / "firstboot").exists()
    assert root.run().returncode == 0
    assert (root.base / "count").read_text() == "x\n"
    assert "first boot already complete" in root.log.read_text()


def test_cloud_init_is_switched_off_only_once_first_boot_is_done(root: Root) -> None:
    """Later boots bring the services back without cloud-init; a first boot that failed (or
    was cut short) must still be resumed as it was, so the switch waits for the end."""
    switch = root.base / "etc/cloud/cloud-init.disabled"
    root.phase("10-first.sh", "true")
    root.phase("20-flaky.sh", '[ -e "$STACKSEED_ROOT/fixed" ] || fail "not yet"')
    assert root.run().returncode != 0
    assert not switch.exists()
    (root.base / "fixed").touch()
    assert root.run().returncode == 0
    assert switch.exists()
    assert "cloud-init off for later boots" in root.log.read_text()


def test_a_shutdown_mid_phase_is_interrupted_not_failed_and_resumes(root: Root) -> None:
    started = root.base / "started"
    root.phase("10-first.sh", "true")
    root.phase("20-slow.sh", f'touch {started}; [ -e "$STACKSEED_ROOT/go" ] || sleep 60')
    root.phase("30-last.sh", "true")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STACKSEED_ROOT": str(root.base),
        "STACKSEED_CONSOLE": str(root.console),
    }
    # Like systemd stopping cloud-final at shutdown: TERM to every process of the run.
    proc = subprocess.Popen([sys.executable, str(RUNNER)], env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    lines = root.console_lines()
    assert lines[-1] == "STACKSEED node=node7 phase=20-slow status=interrupted"
    assert not any("status=fail" in line for line in lines)
    assert not (root.done / "20-slow").exists() and not (root.done / "firstboot").exists()
    assert not (root.base / "etc/cloud/cloud-init.disabled").exists()

    (root.base / "go").touch()
    assert root.run().returncode == 0  # the next boot's run
    assert (root.done / "30-last").exists() and (root.done / "firstboot").exists()


def test_a_second_runner_does_not_interleave(root: Root) -> None:
    root.phase("10-slow.sh", f"touch {root.base / 'started'}; sleep 5")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STACKSEED_ROOT": str(root.base),
        "STACKSEED_CONSOLE": str(root.console),
    }
    first = subprocess.Popen([sys.executable, str(RUNNER)], env=env)
    deadline = time.monotonic() + 30
    while not (root.base / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = root.run()
    assert second.returncode == 0
    assert first.wait(timeout=60) == 0
    log = root.log.read_text()
    assert "another stackseed-firstboot is running" in log
    assert log.count("phase=10-slow start") == 1


def test_first_boot_done_flags_the_services_ready_and_asks_for_the_second_workers(
    root: Root,
) -> None:
    """The walk's end flags the services ready and starts stackseed-workers --settle without
    waiting for it (it can take minutes); what it says goes to a private workers.log."""
    root.phase("10-a.sh", "echo hi")
    workers = root.lib_dir / "stackseed-workers"
    workers.write_text(
        '#!/bin/sh\nsleep 2\necho "$*" > "$STACKSEED_ROOT/asked"\necho "nova-api: asked"\n'
    )
    workers.chmod(0o755)

    began = time.monotonic()
    assert root.run().returncode == 0
    assert time.monotonic() - began < 60

    flag = root.base / "run/stackseed/services-ready"
    assert stat.S_IMODE(flag.stat().st_mode) == 0o644
    assert stat.S_IMODE(flag.parent.stat().st_mode) == 0o755
    log = root.log.parent / "workers.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert f"log: {log}" in root.log.read_text()
    deadline = time.monotonic() + 30
    while "nova-api: asked" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nova-api: asked" in log.read_text()
    assert (root.base / "asked").read_text().strip() == "--settle"


def test_a_failed_first_boot_does_not_flag_the_services_ready(root: Root) -> None:
    root.phase("10-bad.sh", 'fail "no"')
    assert root.run().returncode != 0
    assert not (root.base / "run/stackseed").exists()


def test_progress_lines_reach_the_console_as_markers(root: Root) -> None:
    root.phase("05-long.sh", 'echo "unpacking"; progress "installing 40%"; echo "more"')

    result = root.run()

    assert result.returncode == 0, result.stderr
    assert root.console_lines() == [
        "STACKSEED node=node7 phase=05-long status=start",
        "STACKSEED node=node7 phase=05-long status=progress installing 40%",
        "STACKSEED node=node7 phase=05-long status=done",
        "STACKSEED node=node7 phase=firstboot status=done",
    ]
    assert "[05-long] progress: installing 40%" in root.log.read_text()
    assert "unpacking" not in root.console.read_text()
