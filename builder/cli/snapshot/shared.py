"""What the snapshot commands share: the lab's role images and their keys, the accel a
snapshot was taken with, the wait for clocks afterwards (the cloud's: builder/cli/cloud.py)."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt

from builder.cli.common import (
    Lab,
    out,
    step,
)
from builder.errors import PrerequisiteError, StackseedError
from builder.images.contract import ImageInfo, find_disk_image, find_image
from builder.resume import duration, step_clocks
from builder.snapshot_manifest import (
    ImageKey,
)
from vms import ssh
from vms.accel import Accel, nested_virt
from vms.connect import is_local, is_test_driver


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


def set_clocks(
    lab: Lab,
    conn: libvirt.virConnect,
    timeout: float,
    started: float,
    names: list[str] | None = None,
) -> bool:
    """Every node's clock (or each of `names`) to the host's (it answers ssh, then); False on
    the libvirt test driver, where nothing runs."""
    if is_test_driver(conn):
        step("libvirt test driver: nothing runs, so no clocks to set and no cloud to wait for")
        return False

    def clock(node: str, offset: float, elapsed: float) -> None:
        step(f"{node}: answers ssh, clock set to the host's ({duration(offset)}, {elapsed:.0f}s)")

    step_clocks(lab.plan, lab.state, timeout=timeout, on_node=clock, popen=ssh.popen, names=names)
    which = "every node answers" if names is None else f"{', '.join(names)} answer"
    out.print(f"{which} ssh, clocks set: {time.monotonic() - started:.0f}s")
    return True


# --- lab snapshots ---------------------------------------------------------------------------
