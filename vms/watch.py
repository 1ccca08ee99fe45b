"""`lab up --wait`: follow every node's console until it is ready, fails, stops or times out.

A node whose existing domain stackseed started again (`lab start`, `lab up` after a power cut)
is followed from where that boot began, knowing whether it resumes first boot (vms/boots.py) or,
first boot done, brings its services back (ready once stackseed-services says they are)."""

from __future__ import annotations

import time
from collections.abc import Callable

import libvirt

from builder.errors import StackseedError, WaitTimeout
from builder.plan import Plan
from builder.state import LabState
from vms import boots, domains
from vms.console import LogReader, Progress, tail

Update = Callable[[str, Progress, float], None]


def wait(
    conn: libvirt.virConnect,
    plan: Plan,
    state: LabState,
    *,
    until: str = "ready",
    timeout: float = 1800.0,
    on_update: Update | None = None,
    interval: float = 1.0,
    names: list[str] | None = None,
) -> dict[str, float]:
    """Seconds from the call until each node (of `names`, default all) reached `until`; raises
    naming a node that did not."""
    start = time.monotonic()
    names = [node.name for node in plan.nodes] if names is None else names
    readers = {name: LogReader(state.console_log(name)) for name in names}
    progress: dict[str, Progress] = {}
    for name in names:
        note = boots.read_note(state, name)
        readers[name].offset = note.offset if note is not None else 0
        progress[name] = boots.progress_for(note)
    reached: dict[str, float] = {}
    while True:
        owned = domains.owned(conn, plan.lab)
        elapsed = time.monotonic() - start
        for name in names:
            if name in reached:
                continue
            before = progress[name].phase
            for line in readers[name].new_lines():
                progress[name].feed(line)
            node = progress[name]
            dom = owned.get(name)
            if node.failed is None and (dom is None or not dom.isActive()):
                node.failed = f"the domain is {domains.state_of(dom)}"
            if node.failed:
                _settle(readers[name])
                _fail(state, name, node, f"failed in phase {node.phase}: {node.failed}")
            if node.reached(until):
                reached[name] = elapsed
            if on_update and (node.phase != before or name in reached):
                on_update(name, node, elapsed)
        if len(reached) == len(names):
            return reached
        if elapsed > timeout:
            late = [n for n in names if n not in reached]
            first = late[0]
            _fail(
                state,
                first,
                progress[first],
                f"not {until} after {timeout:.0f}s (phase {progress[first].phase}); "
                f"waiting for: {', '.join(f'{n} ({progress[n].phase})' for n in late)}",
                timed_out=True,
            )
        time.sleep(interval)


def _settle(reader: LogReader, grace: float = 5.0) -> None:
    """The runner prints the failed phase's log tail just after its fail marker: let it land."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if any(
            "phase=firstboot status=fail" in line or "services=all status=fail" in line
            for line in reader.new_lines()
        ):
            return
        time.sleep(0.5)


def _fail(state: LabState, name: str, node: Progress, why: str, *, timed_out: bool = False) -> None:
    path = state.console_log(name)
    lines = tail(path, 15)
    shown = "\n".join(f"  | {line}" for line in lines) or "  (the console log is empty)"
    error = WaitTimeout if timed_out else StackseedError
    # A later boot's services are brought back by stackseed-services, which logs apart.
    own = (
        "services.log' shows how its services came back"
        if node.later
        else "firstboot.log' shows first boot's own log"
    )
    # A node past the bound has not failed: it goes on without anyone watching.
    again = "; it carries on meanwhile: 'lab up --wait' follows it again" if timed_out else ""
    raise error(
        f"node {name} {why}\nlast lines of its console:\n{shown}",
        fix=(
            f"'lab console {name}' shows the whole console log; if the node boots, "
            f"'lab ssh {name} sudo tail -n 60 /var/log/stackseed/{own}{again}"
        ),
        log=str(path),
    )
