"""One changing command at a time per lab and per image cache (issue 17, item B): real
processes on one state dir or cache; the holder is the real command, paused once it holds the
lock (tests/support/hold_lock.py)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DEFAULT, REPO, TESTS

from builder import lock
from builder.errors import EXIT_TIMEOUT, UsageError

HOLD = TESTS / "support" / "hold_lock.py"
LAB = "from builder.cli.lab import main; main()"
BUILD = "import sys; from builder.cli.build import main; sys.exit(main())"
URI = ["--connect", "test:///default"]


def environ(tmp_path: Path, wait: float, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    env.update(
        PYTHONPATH=str(REPO),
        STACKSEED_STATE_DIR=str(tmp_path / "state"),
        STACKSEED_CACHE_DIR=str(tmp_path / "cache"),
        STACKSEED_LOCK_WAIT=str(wait),
    )
    env.update(extra)
    return env


def run(tmp_path: Path, code: str, *args: str, wait: float = 0, **extra: str):
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ(tmp_path, wait, **extra),
        timeout=120,
        check=False,
    )


class Holder:
    def __init__(self, proc: subprocess.Popen, release: Path) -> None:
        self.proc = proc
        self.release_file = release

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> int:
        self.release_file.touch()
        return self.proc.wait(timeout=60)


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Callable[..., Holder]]:
    """Start `lab ...` / `build-images ...` and return once it holds its lock."""
    started: list[Holder] = []

    def start(entry: str, *args: str, **extra: str) -> Holder:
        release = tmp_path / f"release-{len(started)}"
        env = environ(tmp_path, 0, HOLD_UNTIL=str(release), **extra)
        proc = subprocess.Popen(
            [sys.executable, str(HOLD), entry, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        holder = Holder(proc, release)
        started.append(holder)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "holding", proc.stderr.read() if proc.poll() is not None else ""
        return holder

    yield start
    for holder in started:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait()


def seed_all(tmp_path: Path, name: str) -> tuple[str, ...]:
    return ("seed", "--all", "-o", str(tmp_path / name), "-t", str(DEFAULT))


def assert_refused(result, holder: Holder, command: str) -> None:
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    assert "is busy" in result.stderr
    assert f"pid {holder.pid} ('{command}" in result.stderr  # the holder's pid and command
    assert f"ps -o pid,etime,args -p {holder.pid}" in result.stderr  # the fix
    assert "Traceback" not in result.stderr


def test_every_changing_lab_command_is_refused_while_one_holds_the_lab(hold, tmp_path) -> None:
    pytest.importorskip("libvirt")  # up, down, stop, start and reboot live in vms/
    holder = hold("lab", *seed_all(tmp_path, "first"))
    seconds = [
        seed_all(tmp_path, "second"),
        ("seed", "controller", "-o", str(tmp_path / "c.iso"), "-t", str(DEFAULT)),
        ("up", "-t", str(DEFAULT), *URI),
        ("down", "-t", str(DEFAULT), *URI),
        ("reboot", "controller", "-t", str(DEFAULT), *URI),
        ("stop", "-t", str(DEFAULT), *URI),
        ("start", "controller", "-t", str(DEFAULT), *URI),
    ]
    for args in seconds:
        assert_refused(run(tmp_path, LAB, *args), holder, "lab seed --all -o")
    assert not (tmp_path / "second").exists() and not (tmp_path / "c.iso").exists()
    assert holder.release() == 0
    assert (tmp_path / "first" / "controller.iso").is_file()


def test_read_only_commands_are_not_blocked(hold, tmp_path) -> None:
    pytest.importorskip("libvirt")
    hold("lab", *seed_all(tmp_path, "first"))
    hold("build-images", "--role", "controller")
    topo = ("-t", str(DEFAULT))
    status = run(tmp_path, LAB, "status", *topo, *URI)
    assert status.returncode == 0, status.stderr
    others = [
        (LAB, ("console", "controller", "--no-follow", *topo)),
        (LAB, ("ssh", "controller", "true", *topo)),
        (LAB, ("verify", *topo)),
        (LAB, ("doctor", *topo, *URI, "--images-dir", str(tmp_path / "no-images"))),
        (BUILD, ("--check",)),
    ]
    for code, args in others:
        # They fail (no lab, no images) but on their own account, at once, never on the lock.
        result = run(tmp_path, code, *args)
        assert result.returncode not in (0, EXIT_TIMEOUT), (args, result.stderr)
        assert "is busy" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_waiting_command_proceeds_once_the_holder_is_done(hold, tmp_path) -> None:
    holder = hold("lab", *seed_all(tmp_path, "first"))
    waiter = subprocess.Popen(
        [sys.executable, "-c", LAB, *seed_all(tmp_path, "second")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environ(tmp_path, 60),
    )
    time.sleep(1.5)
    assert waiter.poll() is None  # still waiting for the lock
    assert holder.release() == 0
    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert f"lab stackseed is busy: pid {holder.pid}" in err and "waiting up to 60 s" in err
    assert (tmp_path / "second" / "block1.iso").is_file()


def test_a_killed_holder_leaves_no_stale_lock(hold, tmp_path) -> None:
    holder = hold("lab", *seed_all(tmp_path, "first"))
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(timeout=30)
    note = tmp_path / "state" / "stackseed" / lock.LOCK_FILE
    # The dead holder's note is still there: it must not be what decides.
    assert json.loads(note.read_text())["pid"] == holder.pid
    result = run(tmp_path, LAB, *seed_all(tmp_path, "second"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "second" / "controller.iso").is_file()
    assert note.read_text() == ""  # released: no note


def test_one_build_at_a_time_per_cache_and_per_output(hold, tmp_path) -> None:
    mirror = "http://builder:s3cret@mirror.example/debian"
    holder = hold("build-images", "--role", "controller", "--mirror", mirror)
    result = run(tmp_path, BUILD, "--role", "compute")
    assert_refused(result, holder, "build-images --role controller")
    note = (tmp_path / "cache" / lock.LOCK_FILE).read_text()
    assert "s3cret" not in note and "http://***@mirror.example" in note  # no secret recorded
    assert holder.release() == 0
    # Another cache building into the same --output is refused by --output's own lock.
    images = str(tmp_path / "images")
    holder = hold("build-images", "--role", "block", "--output", images)
    other = run(tmp_path, BUILD, "--role", "block", "--output", images, STACKSEED_CACHE_DIR="c2")
    assert_refused(other, holder, "build-images --role block --output")
    assert holder.release() == 0


# --- the module itself, in this process ---------------------------------------------------


def test_a_nested_hold_in_one_process_does_not_lock_itself_out(tmp_path) -> None:
    with lock.holding(tmp_path, "lab x", "lab up", wait=0):
        with lock.holding(tmp_path, "lab x", "lab seed", wait=0):
            note = json.loads((tmp_path / lock.LOCK_FILE).read_text())
        assert note["pid"] == os.getpid() and note["command"] == "lab up"
    assert (tmp_path / lock.LOCK_FILE).read_text() == ""


def test_the_wait_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(lock.WAIT_ENV, "2.5")
    assert lock.wait_bound() == 2.5
    monkeypatch.delenv(lock.WAIT_ENV)
    assert lock.wait_bound() == lock.DEFAULT_WAIT
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(lock.WAIT_ENV, bad)
        with pytest.raises(UsageError, match=lock.WAIT_ENV):
            lock.wait_bound()


def test_a_lock_path_that_is_a_directory_is_a_clear_error(tmp_path) -> None:
    (tmp_path / lock.LOCK_FILE).mkdir()
    refused = pytest.raises(UsageError, match="cannot open the lock of lab x")
    with refused, lock.holding(tmp_path, "lab x", "lab up", wait=0):
        pass
