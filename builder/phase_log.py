"""Per-phase wall times from the first-boot runner's own lines in /var/log/stackseed/firstboot.log.

The runner writes `==== <node> phase=<name> start <UTC>` and `... exit=<rc> <UTC>` around each
phase; those lines carry no secrets, so the host may read them over `lab ssh`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

RUN_LINE = re.compile(
    r"^==== (?P<node>\S+) phase=(?P<phase>\S+) (?:start|exit=(?P<rc>\d+)) (?P<at>\S+)$"
)
# What `lab ssh NODE …` runs to fetch just those lines.
GREP = ["sudo", "grep", "-a", "^==== ", "/var/log/stackseed/firstboot.log"]


class PhaseTime(NamedTuple):
    phase: str
    seconds: float
    rc: int


def phase_times(text: str) -> list[PhaseTime]:
    """One row per finished phase run, in log order; a re-run phase appears once per run."""
    starts: dict[str, datetime] = {}
    rows: list[PhaseTime] = []
    for line in text.splitlines():
        m = RUN_LINE.match(line.strip())
        if not m:
            continue
        at = datetime.fromisoformat(m["at"].replace("Z", "+00:00"))
        if m["rc"] is None:
            starts[m["phase"]] = at
        elif (began := starts.pop(m["phase"], None)) is not None:
            rows.append(PhaseTime(m["phase"], (at - began).total_seconds(), int(m["rc"])))
    return rows


def wall_seconds(text: str) -> float | None:
    """Seconds from the first phase's start to the last phase's end: the node's first boot as
    it took, phases that ran side by side counted once (their sum would count them twice)."""
    times = [
        datetime.fromisoformat(m["at"].replace("Z", "+00:00"))
        for line in text.splitlines()
        if (m := RUN_LINE.match(line.strip()))
    ]
    return (max(times) - min(times)).total_seconds() if times else None
