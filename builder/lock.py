"""One changing command at a time per directory (a lab's state, an image cache): an flock.

The kernel drops an flock when its holder's process dies, so a crashed or killed command leaves
no stale lock, and the lock file is never removed (removing it would let two processes lock two
different files of the same name). The file's text, the holder's pid and command line, is only a
note for the refused command's message: nothing is decided from it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from builder.errors import PathError, UsageError, WaitTimeout

LOCK_FILE = "stackseed.lock"
WAIT_ENV = "STACKSEED_LOCK_WAIT"
DEFAULT_WAIT = 10.0  # seconds: long enough for a `lab seed` to finish, short enough to notice
POLL = 0.1

# Directories this process holds, with their depth: flock conflicts between two open files of
# one process too, so a nested hold (a command calling another's helper) must not re-lock.
_held: dict[Path, int] = {}


def wait_bound() -> float:
    """How long a command waits for a busy lock: $STACKSEED_LOCK_WAIT seconds, else 10."""
    raw = os.environ.get(WAIT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_WAIT
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UsageError(f"{WAIT_ENV}={raw!r} is not a number of seconds", fix=f"unset {WAIT_ENV}")
    return value


def redact(command: str) -> str:
    """The command line as recorded: credentials in URLs (a mirror's user:password) masked."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", command)


def holder(fd: int) -> tuple[int | None, str]:
    """Who holds the lock, as its note says: (pid, description); best effort, the note may be
    missing (the holder has not written it yet) or torn."""
    try:
        note = json.loads(os.pread(fd, 4096, 0).decode())
        pid = int(note["pid"])
        return pid, f"pid {pid} ('{note['command']}', since {note['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return None, "another stackseed command (it has not written its pid yet)"


def _acquire(
    fd: int, path: Path, what: str, wait: float, notify: Callable[[str], None] | None
) -> None:
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        pid, who = holder(fd)
        if time.monotonic() >= deadline:
            waited = f" (waited {wait:g} s)" if wait else ""
            raise WaitTimeout(
                f"{what} is busy: {who} is changing it{waited}; lock {path}",
                fix=f"wait for that command to end and re-run (or set {WAIT_ENV} to wait "
                f"longer); see it with 'ps -o pid,etime,args -p {pid or 'PID'}'",
            )
        if not told and notify is not None:
            notify(f"{what} is busy: {who}; waiting up to {wait:g} s")
            told = True
        time.sleep(POLL)


def _note(fd: int, command: str) -> None:
    note = {
        "pid": os.getpid(),
        "command": redact(command),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # The note only helps a refused command's message (the flock is the lock): a full disk
    # must not fail the command over it.
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)


@contextmanager
def holding(
    directory: Path,
    what: str,
    command: str,
    *,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold `directory`'s lock (it must exist); `what` names it in messages, `command` is the
    note left for others. Waits up to `wait` (default wait_bound()) seconds, then refuses."""
    key = Path(os.path.abspath(directory))
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = key / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise PathError(
            f"cannot open the lock of {what}, {path} ({exc.strerror})",
            fix="remove whatever is in the way of that file, or use another directory",
        ) from None
    try:
        _acquire(fd, path, what, wait_bound() if wait is None else wait, notify)
        _note(fd, command)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            with suppress(OSError):  # the note describes the holder only while it holds
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
