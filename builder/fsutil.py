"""Atomic, private file writes: a reader never sees half a file or a world-readable secret."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create `path` and each missing parent 0700 (mkdir's parents= would use the umask)."""
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a temporary file beside `path`, then rename it: a full disk or a crash
    leaves the old file (or none), never half of the new one."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        # Name the file the user asked for, not the temporary one that is gone now.
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_private(source: Path, target: Path) -> bool:
    """Copy `source` to `target` (0600, atomic); False when `target` already has those bytes."""
    data = source.read_bytes()
    # is_file(), not exists(): reading a device such as /dev/zero to compare would never end.
    if target.is_file() and target.read_bytes() == data:
        return False
    write_private(target, data)
    return True


@contextmanager
def owner_kept(path: Path) -> Iterator[None]:
    """Put `path`'s owner and group back if something changed them meanwhile.

    DIB's chroot sees the host's /dev, and the udev package configured inside it gives
    /dev/kvm the chroot's own `kvm` gid; libvirt then re-probes qemu on every define.
    """
    try:
        before = path.stat()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        try:
            after = path.stat()
        except OSError:
            after = None
        if after is not None and (after.st_uid, after.st_gid) != (before.st_uid, before.st_gid):
            os.chown(path, before.st_uid, before.st_gid)
