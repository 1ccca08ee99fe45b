"""What a node's serial console says about its boot: kernel, cloud-init stages, first-boot phases.

The guest prints `STACKSEED node=<n> phase=<p> status=start|done|fail` per first-boot phase and
`phase=firstboot status=done|fail` at the end; cloud-init prints its own stage lines. Phases
whose needs allow it run side by side, so their markers interleave: the node's phase reads as
every phase running at once. A reboot mid-way prints `status=interrupted` for each running
phase; the next boot's resume unit carries on with the phases.

Every boot after first boot, stackseed-services brings the services back in the phases' order:
`STACKSEED node=<n> services=all status=start`, then `services=<p> status=start|up|late` per
phase and `services=all status=ready|fail` at the end. Such a boot is ready once its services
are (they have joined), not when cloud-init finishes; a resumed first boot prints the per-phase
lines too, for the phases it had finished, before its own markers.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(
    r"STACKSEED node=(?P<node>\S+) phase=(?P<phase>\S+) "
    r"status=(?P<status>start|done|fail|interrupted)\b"
)
# A long phase's headway (lib.sh's progress()), shown beside the phase's name.
HEADWAY = re.compile(r"STACKSEED node=\S+ phase=(?P<phase>\S+) status=progress (?P<text>.+?)\s*$")
SERVICES = re.compile(
    r"STACKSEED node=(?P<node>\S+) services=(?P<phase>\S+) "
    r"status=(?P<status>start|up|late|ready|fail)\b"
)
CLOUD_INIT_STAGE = re.compile(r"Cloud-init v\. \S+ running '(?P<stage>[^']+)'")
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
UPTIME = re.compile(r"Up (?P<up>\d+(?:\.\d+)?) seconds")
KERNEL = re.compile(r"Linux version \d")
# Lines after which the node will not get further on its own.
FATAL = (
    "Kernel panic",
    "You are in emergency mode",
    "Give root password for maintenance",
    "Cannot open root device",
    "ALERT!  ",  # initramfs-tools could not find the root device
    # A firmware-booted node: grub found no kernel (its search by UUID failed), or shim refused
    # an unsigned binary under Secure Boot.
    "error: you need to load the kernel first",
    "Verification failed: ",
)
_STAGES = {
    "init-local": "cloud-init:local",
    "init": "cloud-init:network",
    "modules:config": "cloud-init:config",
    "modules:final": "cloud-init:final",
}


@dataclass
class Progress:
    """A node's boot as read from its console log; feed it lines in order."""

    phase: str = "off"
    failed: str | None = None  # the line that failed the node
    final: bool = False  # cloud-init's final stage has begun
    finished: bool = False  # cloud-init's final stage has finished
    firstboot: str | None = None  # None: no marker; 'running', 'interrupted', 'done', 'fail'
    final_uptime: float | None = None
    boots: int = 0
    history: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # phases started, not ended, in start order
    stopped: list[str] = field(default_factory=list)  # phases interrupted by the last stop
    # A boot after first boot finished: ready once stackseed-services says so.
    later: bool = False
    services: str | None = None  # None: no walk seen this boot; 'running', 'ready', 'fail'
    starting: list[str] = field(default_factory=list)  # phases the walk is bringing up
    late: list[str] = field(default_factory=list)  # phases the walk gave up waiting for
    headway: dict[str, str] = field(default_factory=dict)  # running phase -> its last progress

    def feed(self, line: str) -> None:
        marker = MARKER.search(line)
        if self.failed:
            # A phase started after a failed one is the runner run again by hand (after a fix):
            # the node is back in progress. Nothing else revives a failed node.
            if not (marker and marker["status"] == "start" and MARKER.search(self.failed)):
                return
            self.failed = None
        if marker:
            self._marker(marker["phase"], marker["status"], line)
        elif (news := HEADWAY.search(line)) and news["phase"] in self.running:
            self.headway[news["phase"]] = news["text"]
            self._set(self._firstboot_shown(self.running))
        elif walk := SERVICES.search(line):
            self._services(walk["phase"], walk["status"], line)
        elif stage := CLOUD_INIT_STAGE.search(line):
            if self.services is None:  # cloud-init runs beside a walk: the walk is the news
                self._set(_STAGES.get(stage["stage"], f"cloud-init:{stage['stage']}"))
            if stage["stage"] == "modules:final":
                self.final = True
                if up := UPTIME.search(line):
                    self.final_uptime = float(up["up"])
        elif CLOUD_INIT_FINISHED.search(line):
            self.finished = True
            if self.boots > 1 and self.firstboot in ("running", "interrupted"):
                # After a reboot cloud-init's runcmd is done; the resume unit starts after it.
                self._set("firstboot:resuming")
                return
            if self.firstboot in ("running", None) and self.services is None:
                self._set("cloud-init:done")  # a walk under way stays what the node shows
            if self.firstboot == "running":
                self.failed = line.strip()
                self.phase = "firstboot (never reported done)"
        elif KERNEL.search(line):
            self.boots += 1
            self.running.clear()
            self.headway.clear()
            if self.firstboot == "done":
                self.later = True
            self.services = None
            self.starting.clear()
            self.late.clear()
            if self.boots == 1:
                self._set("kernel")
            else:
                self.finished = False
                self._set(f"kernel (boot {self.boots})")
        elif any(text in line for text in FATAL):
            self.failed = line.strip()

    def _marker(self, phase: str, status: str, line: str) -> None:
        if status == "interrupted":
            self.firstboot = "interrupted"
            if phase in self.running:
                self.running.remove(phase)
            if phase != "firstboot":
                self.stopped.append(phase)
            self._set(f"firstboot:{', '.join(self.stopped) or phase} (interrupted)")
        elif phase == "firstboot":
            self.firstboot = "done" if status == "done" else "fail"
            self.running.clear()
            self._set("ready" if status == "done" else "firstboot")
        else:
            if self.firstboot in (None, "interrupted"):
                self.firstboot = "running"
                self.stopped.clear()
            if status == "start":
                self.running.append(phase)
            elif phase in self.running:
                self.running.remove(phase)
            self.headway.pop(phase, None)
            # A failed phase is named alone; otherwise every phase still running is shown.
            shown = self.running if self.running and status != "fail" else [phase]
            self._set(self._firstboot_shown(shown))
        if status == "fail":
            self.failed = line.strip()

    def _firstboot_shown(self, phases: list[str]) -> str:
        named = [f"{p} ({self.headway[p]})" if p in self.headway else p for p in phases]
        return f"firstboot:{', '.join(named)}"

    def _services(self, phase: str, status: str, line: str) -> None:
        if phase == "all":
            if status == "start":
                # Only a node whose first boot is done walks all its services.
                self.later = True
                self.services = "running"
                self.starting.clear()
                self.late.clear()
                self._set("services")
            elif status == "ready":
                self.services = "ready"
                self.starting.clear()
                self._set("ready")
            elif status == "fail":
                self.services = "fail"
                self.failed = line.strip()
                late = f" (late: {', '.join(self.late)})" if self.late else ""
                self._set(f"services{late}")
            return
        if status == "start":
            self.starting.append(phase)
        elif phase in self.starting:
            self.starting.remove(phase)
        if status == "late":
            self.late.append(phase)
        self._set(f"services:{', '.join(self.starting)}" if self.starting else "services")

    def _set(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.history.append(phase)

    def reached(self, until: str) -> bool:
        """until: 'final' (cloud-init's final stage began) or 'ready' (first boot complete; on a
        later boot, its services back). A later boot with no walk at all (a seed older than
        stackseed-services) is ready when cloud-init has finished, as it always was."""
        if until == "final":
            return self.final
        if self.later:
            return self.services == "ready" or (self.finished and self.services is None)
        return self.firstboot == "done" or (self.finished and self.firstboot is None)


def scan(text: str) -> Progress:
    progress = Progress()
    for line in text.splitlines():
        progress.feed(line)
    return progress


def read_progress(path: Path) -> Progress:
    try:
        return scan(path.read_text(errors="replace"))
    except OSError:
        return Progress()


def wait_for_new_boot(
    path: Path,
    boots_before: int,
    timeout: float,
    *,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Seconds until the console log shows a kernel boot past `boots_before`, None on timeout.

    A rebooted node's log still ends with its last boot's markers (the serial log outlives the
    reboot) until the guest has shut down and the new kernel prints: whoever waits for it to
    be ready must first see that new boot, or it reads the old boot's `ready`."""
    started = clock()
    reader, boots = LogReader(path), 0  # read once, then only what the log gains
    while True:
        boots += sum(1 for line in reader.new_lines() if KERNEL.search(line))
        if boots > boots_before:
            return clock() - started
        if clock() - started >= timeout:
            return None
        sleep(poll)


def tail(path: Path, lines: int = 20) -> list[str]:
    try:
        with path.open(errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except OSError:
        return []


class LogReader:
    """Reads what a console log gained since the last call (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = ""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self.offset:  # truncated: the domain was restarted
                    self.offset, self._partial = 0, ""
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        text = self._partial + data.decode(errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        return [line.rstrip("\r") for line in lines]


def follow(
    path: Path, *, stop: Callable[[], bool], interval: float = 0.5, start_lines: int = 50
) -> Iterator[str]:
    """The last `start_lines` lines, then every new line until stop() (like tail -F)."""
    yield from tail(path, start_lines)
    reader = LogReader(path)
    with contextlib.suppress(OSError):
        reader.offset = path.stat().st_size
    while True:
        lines = reader.new_lines()
        yield from lines
        if not lines:
            if stop():
                return
            time.sleep(interval)
