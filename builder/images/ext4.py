"""What the disk assembly needs to know about a role's root filesystem, read without mounting it.

The UUID and label come from the ext4 superblock; the kernels in /boot and /etc/fstab are read
with e2fsprogs' debugfs (read-only, no root, no loop device).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StackseedError

_SUPERBLOCK = 1024
_MAGIC = 0xEF53
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass(frozen=True)
class Superblock:
    uuid: str
    label: str


@dataclass(frozen=True)
class BootFiles:
    version: str
    kernel: str  # absolute paths inside the filesystem
    initrd: str


def superblock(image: Path) -> Superblock:
    """UUID and label of the ext2/3/4 filesystem at the start of the raw file `image`."""
    with image.open("rb") as handle:
        handle.seek(_SUPERBLOCK)
        block = handle.read(1024)
    if len(block) < 1024 or int.from_bytes(block[56:58], "little") != _MAGIC:
        raise StackseedError(
            f"{image}: no ext4 filesystem at its start",
            fix="the role image must be the rootfs format: rebuild it with build-images --force",
        )
    label = block[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Superblock(uuid=str(uuid.UUID(bytes=block[104:120])), label=label)


def _debugfs(image: Path, request: str) -> str:
    try:
        result = subprocess.run(
            ["debugfs", "-c", "-R", request, str(image)],
            capture_output=True,
            text=True,
            errors="replace",
            env=_ENV,
            check=False,
        )
    except FileNotFoundError:
        raise StackseedError(
            "debugfs is missing: it reads the root filesystem's /boot and /etc/fstab",
            fix="apt-get install -y e2fsprogs",
        ) from None
    if result.returncode != 0:
        raise StackseedError(f"{image}: debugfs '{request}' failed: {result.stderr.strip()}")
    return result.stdout


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", version)]


def boot_files(image: Path) -> BootFiles:
    """The newest /boot/vmlinuz-<version> that has its /boot/initrd.img-<version>."""
    names = set()
    for line in _debugfs(image, "ls -p /boot").splitlines():
        fields = line.split("/")
        # ls -p: /inode/mode/uid/gid/name/size/ ; a regular file's mode starts with 10.
        if len(fields) >= 7 and fields[2].startswith("10"):
            names.add(fields[5])
    versions = [
        n.removeprefix("vmlinuz-")
        for n in names
        if n.startswith("vmlinuz-") and f"initrd.img-{n.removeprefix('vmlinuz-')}" in names
    ]
    if not versions:
        raise StackseedError(
            f"{image}: /boot has no vmlinuz-<version> with its initrd.img-<version>",
            fix="the role image needs a kernel package (linux-image-amd64); rebuild it",
        )
    newest = max(versions, key=_version_key)
    return BootFiles(newest, f"/boot/vmlinuz-{newest}", f"/boot/initrd.img-{newest}")


def root_source(image: Path) -> str:
    """How /etc/fstab names the root filesystem (LABEL=..., UUID=...)."""
    for line in _debugfs(image, "cat /etc/fstab").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] == "/":
            return fields[0]
    raise StackseedError(f"{image}: /etc/fstab has no entry for /")
