"""Following a diskimage-builder log: which phase it is in, and what to show when it fails."""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

# DIB's phases in the order a build runs them, and the final conversion.
PHASES = (
    "root",
    "extra-data",
    "pre-install",
    "install",
    "post-install",
    "post-root",
    "block-device",
    "pre-finalise",
    "finalise",
    "cleanup",
    "convert",
)
_HOOK = re.compile(r"dib-run-parts Running \S*/([a-z-]+)\.d/(\S+)")
_CONVERT = re.compile(r"Converting image using qemu-img convert")
# apt's summary after downloading: "Fetched 25.9 MB in 2s (12.0 MB/s)" (SI units).
_FETCHED = re.compile(r"\bFetched ([\d.,]+) ([kMG]?)B in ")
_SI = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \| ?")
_RELEVANT = re.compile(r"\b(error|failed|fatal|cannot|unable)\b|^E: |Traceback", re.IGNORECASE)
# Lines DIB prints on every healthy build that look like errors but are not.
_NOISE = re.compile(r"Can not write log|posix_openpt|libgpg-error|error-l10n")


def strip_stamp(line: str) -> str:
    return _STAMP.sub("", line.rstrip("\n"))


def parse_phase(line: str) -> tuple[str, str] | None:
    """(phase, hook) when a log line starts a hook or the conversion, else None."""
    text = strip_stamp(line)
    match = _HOOK.search(text)
    if match and match.group(1) in PHASES:
        return match.group(1), match.group(2)
    if _CONVERT.search(text):
        return "convert", "qemu-img convert"
    return None


def fetched_bytes(line: str) -> int:
    """Bytes apt says it downloaded, from its "Fetched ..." line (0 for any other line)."""
    match = _FETCHED.search(line)
    if not match:
        return 0
    return int(float(match.group(1).replace(",", "")) * _SI[match.group(2)])


def relevant_lines(lines: list[str], limit: int = 12) -> list[str]:
    """The lines worth showing after a failure: error-looking ones near the end, then the end."""
    tail = [strip_stamp(line) for line in lines]
    errors = [line for line in tail if _RELEVANT.search(line) and not _NOISE.search(line)]
    picked = errors[-(limit // 2) :]
    for line in tail[-limit:]:
        if line not in picked:
            picked.append(line)
    return picked[-limit:]


@dataclass
class PhaseTracker:
    """Phase state for one build, fed one log line at a time."""

    phase: str | None = None
    hook: str = ""
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    fetched: int = 0

    def feed(self, line: str, now: float | None = None) -> bool:
        """Record the line; True when the phase changed."""
        now = time.monotonic() if now is None else now
        self.tail.append(line)
        self.fetched += fetched_bytes(line)
        found = parse_phase(line)
        if found is None:
            return False
        phase, hook = found
        self.hook = hook
        if phase == self.phase:
            return False
        if self.phase is not None:
            self.finished[self.phase] = now - self.started[self.phase]
        self.phase = phase
        self.started.setdefault(phase, now)
        return True

    def close(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.phase is not None and self.phase not in self.finished:
            self.finished[self.phase] = now - self.started[self.phase]


class ProgressView:
    """Per-phase progress for one role build on the terminal (rich)."""

    def __init__(self, console: Console, role: str) -> None:
        self.console = console
        self.role = role
        self.tracker = PhaseTracker()
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[hook]}"),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._failed = False

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.close()
        for phase, task in self._tasks.items():
            if self._failed and phase == self.tracker.phase:
                self.progress.update(
                    task, description=f"[red]{self.role}: {phase} failed", hook=self.tracker.hook
                )
                self.progress.stop_task(task)
            else:
                self.progress.update(task, total=1, completed=1, hook="")
        self.progress.__exit__(None, None, None)

    def fail(self) -> None:
        """Show the phase the build was in as failed rather than done."""
        self._failed = True

    def feed(self, line: str) -> None:
        previous = self.tracker.phase
        changed = self.tracker.feed(line)
        if self.tracker.phase is None:
            return
        if changed:
            if previous in self._tasks:
                self.progress.update(self._tasks[previous], total=1, completed=1, hook="")
            self._tasks[self.tracker.phase] = self.progress.add_task(
                f"{self.role}: {self.tracker.phase}", total=None, hook=self.tracker.hook
            )
        else:
            self.progress.update(self._tasks[self.tracker.phase], hook=self.tracker.hook)
