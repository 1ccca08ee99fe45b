"""Waiting for the cloud once the nodes are up: `lab verify`'s read-only checks, polled until
each has passed (after `lab up --wait`, `lab start --wait`, a snapshot's restore)."""

from __future__ import annotations

import time

import libvirt

from builder.cli.common import Lab, out, step
from builder.resume import wait_cloud
from vms import domains
from vms.connect import is_test_driver


def wait_for_cloud(lab: Lab, timeout: float, started: float) -> dict[str, float]:
    """Until verify's read-only checks pass (read-only: no lock); seconds since `started` at
    which each passed."""
    times: dict[str, float] = {}

    def passed(check: str, detail: str, _elapsed: float) -> None:
        times[check] = time.monotonic() - started
        step(f"{check}: {detail} ({times[check]:.0f}s)")

    wait_cloud(lab.plan, lab.state.clouds_yaml, timeout=timeout, on_pass=passed)
    return times


def cloud_after_ready(
    conn: libvirt.virConnect, lab: Lab, timeout: float, started: float
) -> dict[str, float] | None:
    """Once every node says it is ready, until the controller sees the whole cluster as
    `lab verify`'s read-only rows judge it. A node that stayed up while another rebooted said
    ready long before; only the controller's listings tell whether its services came back.
    None (and why, printed) when no cloud can answer: the libvirt test driver, or a node off."""
    owned = domains.owned(conn, lab.plan.lab)
    off = [n.name for n in lab.plan.nodes if n.name not in owned or not owned[n.name].isActive()]
    if off:
        out.print(
            f"not waiting for the cloud: {', '.join(off)} off ('lab verify' counts them)",
            soft_wrap=True,
        )
        return None
    if is_test_driver(conn):
        step("libvirt test driver: nothing runs, so no cloud to wait for")
        return None
    left = max(timeout - (time.monotonic() - started), 1.0)
    return wait_for_cloud(lab, left, started)
