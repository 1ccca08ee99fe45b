"""What the snapshot commands share: the lab's role images and their keys, the accel a
snapshot was taken with, the wait for clocks and the cloud afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt
from rich.markup import escape

from builder.cli.common import (
    Lab,
    out,
)
from builder.errors import PrerequisiteError, StackseedError
from builder.images.contract import ImageInfo, find_disk_image, find_image
from builder.resume import duration, step_clocks, wait_cloud
from builder.snapshot_manifest import (
    ImageKey,
)
from vms import domains, ssh
from vms.accel import Accel, nested_virt
from vms.connect import is_local, is_test_driver


def step(message: str) -> None:
    out.print(f"  {escape(message)}", soft_wrap=True)


def require_local(uri: str) -> None:
    if not is_local(uri):
        raise PrerequisiteError(
            f"snapshots need libvirt on this host; {uri} is remote",
            fix="run the command on the lab's host (libvirtd writes and reads the memory files)",
        )


def accel_of(virt_type: str) -> Accel:
    if virt_type == "kvm":
        return Accel("kvm", nested_virt(), "as the snapshot was taken")
    return Accel("tcg", False, "as the snapshot was taken")


def role_images(lab: Lab, images_dir: Path | None) -> dict[str, ImageInfo | None]:
    found: dict[str, ImageInfo | None] = {}
    firmware = {n.image_name for n in lab.plan.nodes if n.boots_firmware}
    for role in sorted({n.image_name for n in lab.plan.nodes}):
        # A role with a firmware-booted node needs its whole-disk image too.
        find = find_disk_image if role in firmware else find_image
        try:
            found[role] = find(lab.plan.topology.lab.release, role, images_dir)
        except StackseedError:
            found[role] = None
    return found


def image_keys(images: dict[str, ImageInfo | None]) -> dict[str, ImageKey | None]:
    return {r: None if i is None else ImageKey(key=i.key, built=i.built) for r, i in images.items()}


# --- lab snapshot ----------------------------------------------------------------------------


def set_clocks(lab: Lab, conn: libvirt.virConnect, timeout: float, started: float) -> bool:
    """Every node's clock to the host's (it answers ssh, then); False on the libvirt test
    driver, where nothing runs."""
    if is_test_driver(conn):
        step("libvirt test driver: nothing runs, so no clocks to set and no cloud to wait for")
        return False

    def clock(node: str, offset: float, elapsed: float) -> None:
        step(f"{node}: answers ssh, clock set to the host's ({duration(offset)}, {elapsed:.0f}s)")

    step_clocks(lab.plan, lab.state, timeout=timeout, on_node=clock, popen=ssh.popen)
    out.print(f"every node answers ssh, clocks set: {time.monotonic() - started:.0f}s")
    return True


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


# --- lab snapshots ---------------------------------------------------------------------------
