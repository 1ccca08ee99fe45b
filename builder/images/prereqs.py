"""What the host needs before an image build starts, said once, with the line that fixes it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import PrerequisiteError

# Free space a role build needs: DIB's working tree plus the qcow2 and its raw conversion.
MIN_FREE = 12 << 30


@dataclass(frozen=True)
class Tool:
    command: str
    package: str
    why: str


BUILD_TOOLS = (
    Tool("sudo", "sudo", "diskimage-builder runs its chroot steps through sudo"),
    Tool("qemu-img", "qemu-utils", "converts the built filesystem to qcow2"),
    Tool("debootstrap", "debootstrap", "creates the Debian base"),
    Tool("disk-image-create", "", "diskimage-builder itself"),
)
# A whole-disk image is put together from files (builder/images/disk.py): no device-mapper,
# no kpartx, no loop devices.
DISK_TOOLS = (
    Tool("qemu-img", "qemu-utils", "converts the root filesystem to raw and the disk to qcow2"),
    Tool("sgdisk", "gdisk", "writes the GPT"),
    Tool("mkfs.vfat", "dosfstools", "makes the EFI system partition"),
    Tool("mcopy", "mtools", "puts the bootloader on the EFI system partition"),
    Tool("fsck.fat", "dosfstools", "checks the EFI system partition"),
    Tool("debugfs", "e2fsprogs", "reads the root filesystem's /boot and /etc/fstab"),
    Tool("dpkg-deb", "dpkg", "unpacks the bootloader packages"),
)


def _missing(tools: tuple[Tool, ...], path: str | None) -> list[Tool]:
    return [tool for tool in tools if shutil.which(tool.command, path=path) is None]


def _fix(missing: list[Tool]) -> str:
    apt = sorted({t.package for t in missing if t.package})
    parts = []
    if apt:
        parts.append("apt-get install -y " + " ".join(apt))
    if any(not t.package for t in missing):
        parts.append("pip install diskimage-builder")
    return " && ".join(parts)


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_build(
    output: Path,
    *,
    fmt: str = "rootfs",
    path: str | None = None,
    min_free: int = MIN_FREE,
    workdirs: tuple[Path, ...] = (),
    dib: bool = True,
) -> None:
    """Raise PrerequisiteError naming everything missing; return quietly when all is there.
    `dib`: a root filesystem is to be built (else only a disk is assembled)."""
    search = path if path is not None else os.environ.get("PATH", os.defpath)
    missing = _missing(BUILD_TOOLS, search) if dib else []
    if missing:
        listed = "; ".join(f"{t.command} ({t.why})" for t in missing)
        raise PrerequisiteError(f"image builds need: {listed}", fix=_fix(missing))
    if fmt == "disk":
        missing = _missing(DISK_TOOLS, search)
        if missing:
            listed = "; ".join(f"{t.command} ({t.why})" for t in missing)
            raise PrerequisiteError(f"--format disk needs: {listed}", fix=_fix(missing))
    for where in (output, *workdirs):
        free = free_bytes(where)
        if free < min_free:
            raise PrerequisiteError(
                f"only {free / (1 << 30):.1f} GiB free at {where}; a role build needs "
                f"{min_free / (1 << 30):.0f} GiB",
                fix="free space there, or build elsewhere with --output DIR",
            )
