"""Atomic, private file writes: a reader never sees half a file or a world-readable secret."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
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


def sync_tree(directory: Path) -> None:
    """fsync every file under `directory`, then the directories: what a rename then publishes
    is on disk, should the host go down right after."""
    for root, dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _fsync(path, os.O_RDONLY)
        for name in dirs:
            _fsync(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY)
    _fsync(str(directory), os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2's RENAME_EXCHANGE); False where the C library,
    kernel or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: Path, final: Path) -> None:
    """Put directory `new` at `final`: a reader finds the old directory or the new one, never
    none (where the filesystem can swap them in one step; else for a moment between two
    renames). The old one is removed after; a kill while it is left lies in a hidden
    `.old-<name>-<pid>` or at `new`'s own (hidden) name, for the next run to remove."""
    try:
        os.rename(new, final)  # nothing there yet (or an empty directory)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if _exchange(new, final):
            shutil.rmtree(new, ignore_errors=True)  # the old directory, now at `new`
        else:
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.rename(final, old)
            os.rename(new, final)
            shutil.rmtree(old, ignore_errors=True)
    _fsync(str(final.parent), os.O_RDONLY | os.O_DIRECTORY)
