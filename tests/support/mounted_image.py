"""A built role image's root filesystem, loop-mounted on the host, for slow tests that read or
chroot into it (needs root and a loop device; skips the calling test, saying why, without)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.errors import StackseedError
from builder.images.contract import find_image


def run(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def mounted_rootfs(
    release: str, role: str, work: Path, *, readonly: bool = False
) -> Iterator[Path]:
    """The image's root filesystem as a raw copy in `work`, mounted; unmounted and removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root (loop mount)")
    try:
        image = find_image(release, role)
    except StackseedError as exc:
        pytest.skip(f"needs the {release} {role} image: {exc}")
    raw, mnt = work / "root.raw", work / "mnt"
    converted = run("qemu-img", "convert", "-O", "raw", str(image.rootfs_path), str(raw))
    assert converted.returncode == 0, converted.stderr
    mnt.mkdir()
    mounted = run("mount", "-o", "loop,ro" if readonly else "loop", str(raw), str(mnt))
    if mounted.returncode != 0:
        raw.unlink(missing_ok=True)
        pytest.skip(f"cannot loop-mount the image here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        run("umount", str(mnt))
        raw.unlink(missing_ok=True)
