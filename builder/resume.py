"""After a lab's memory state is restored: set every guest's clock to the host's, then wait
(bounded) until the cloud answers as `lab verify` judges it.

A restored guest's clock resumes where it was saved, behind by the time since. The nodes were
paused and resumed together, so they agree with each other (services see no peer jump ahead),
but not with the host, and chrony will not fix it: its `makestep 1.0 3` steps only in its first
three updates, and the controller is the lab's time source with no clock above it. So each node
gets the host's time over the lab's ssh: the node says it is ready, the host sends its clock at
that instant, the node sets it (`date -s`): off by the one-way latency, well under a second,
which chrony then slews away on the other nodes.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from builder import verify
from builder.errors import StackseedError, WaitTimeout
from builder.plan import Plan
from builder.state import LabState

# The node's side: say ready, read the host's clock, note its own, set it, print the note.
CLOCK_STEP = (
    'sudo sh -c \'echo ready; read t; b=$(date +%s.%N); date -u -s "@$t" >/dev/null && echo "$b"\''
)
# Read-only checks of `lab verify`, in order: a token, every public endpoint of the catalog
# answers, then every node's services have joined again.
READY_CHECKS: tuple[tuple[str, Callable[[verify.Context], str]], ...] = (
    ("token", verify.check_token),
    ("catalog", verify.check_catalog),
    ("nova-compute", verify.check_compute_services),
    ("hypervisors", verify.check_hypervisors),
    ("network agents", verify.check_network_agents),
    ("cinder-volume", verify.check_cinder_volume),
)
Popen = Callable[..., subprocess.Popen[bytes]]


def duration(seconds: float) -> str:
    sign, left = ("+" if seconds >= 0 else "-"), abs(seconds)
    if left < 60:
        return f"{sign}{left:.1f}s"
    hours, rest = divmod(int(left), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{sign}{minutes}m{secs:02d}s"


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """One line of the process's output; None at its end or at the deadline."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 256)
        if not chunk:
            return None
        data += chunk
    return data.decode(errors="replace").strip()


def step_clock(plan: Plan, state: LabState, node: str, *, deadline: float, popen: Popen) -> float:
    """Set NODE's clock to the host's; how far behind it was (seconds). `popen` is vms.ssh's
    (ssh with the lab's key to the node). Retries while ssh does not answer yet; WaitTimeout
    at the deadline (time.monotonic())."""
    why = "no answer"
    while True:
        proc = popen(
            plan, state, node, (CLOCK_STEP,), stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stderr is not None
        try:
            if _read_line(proc, deadline) == "ready":
                sent = time.time()
                proc.stdin.write(f"{sent:.6f}\n".encode())
                proc.stdin.close()
                guest = _read_line(proc, deadline)
                if proc.wait(timeout=max(deadline - time.monotonic(), 1)) == 0 and guest:
                    return sent - float(guest)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            why = str(exc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            text = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
            if proc.stdout is not None:
                proc.stdout.close()
            why = text.splitlines()[-1] if text else why
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"{node} did not take the host's time over ssh ({why})",
                fix=f"'lab status' and 'lab console {node}' show the node; 'lab ssh {node}' "
                "tries by hand",
            )
        time.sleep(2)


def step_clocks(
    plan: Plan,
    state: LabState,
    *,
    timeout: float,
    on_node: Callable[[str, float, float], None],
    popen: Popen,
    names: list[str] | None = None,
) -> dict[str, float]:
    """Every node's clock (or each of `names`) set to the host's, in parallel; node -> how far
    behind it was."""
    started = time.monotonic()
    deadline = started + timeout

    def one(name: str) -> float:
        offset = step_clock(plan, state, name, deadline=deadline, popen=popen)
        on_node(name, offset, time.monotonic() - started)
        return offset

    names = names or [node.name for node in plan.nodes]
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {name: pool.submit(one, name) for name in names}
    failed = [f.exception() for f in futures.values() if f.exception() is not None]
    if failed:
        first = failed[0]
        if isinstance(first, StackseedError):
            raise first
        raise StackseedError(f"setting the clocks failed: {first}")
    return {name: f.result() for name, f in futures.items()}


def wait_cloud(
    plan: Plan,
    clouds_yaml: Path,
    *,
    timeout: float,
    on_pass: Callable[[str, str, float], None],
    checks: Iterable[tuple[str, Callable[[verify.Context], str]]] = READY_CHECKS,
    connect: Callable[[Path, str], tuple[Any, str]] = verify.connect,
    interval: float = 3.0,
) -> float:
    """Run the checks in order until each has passed once (a check waits for those before
    it); seconds taken. WaitTimeout naming the check that still fails, and why."""
    started = time.monotonic()
    pending = list(checks)
    why = ""
    while pending:
        conn, password = connect(clouds_yaml, plan.lab)
        try:
            ctx = verify.Context(conn=conn, plan=plan, password=password, timeout=timeout)
            while pending:
                name, check = pending[0]
                try:
                    detail = check(ctx)
                except Exception as exc:  # SDK, HTTP and CheckFailed alike: not yet
                    why = str(exc) or type(exc).__name__
                    break
                pending.pop(0)
                on_pass(name, detail, time.monotonic() - started)
        finally:
            conn.close()
        if not pending:
            break
        if time.monotonic() - started >= timeout:
            raise WaitTimeout(
                f"the cloud did not answer within {timeout:.0f}s: {pending[0][0]}: {why}",
                fix="'lab status' shows the nodes, 'lab verify' the cloud; 'lab logs' gathers "
                "every node's logs",
            )
        time.sleep(interval)
    return time.monotonic() - started
