"""Paths the user names for a command: refused before anything is written when they cannot work,
and named, with their option, when the operating system refuses one later anyway."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from builder.errors import PathError, StackseedError
from builder.fsutil import private_dir

Kind = Literal["file", "dir"]
WRITABLE = "a directory you can write (not under /proc, /sys, /dev or a read-only mount)"

# (absolute path, option) for every path this invocation was given: the CLI edge reads it to
# name the option behind an OSError that no early check foresaw (a full disk, a race).
_named: ContextVar[tuple[tuple[Path, str], ...]] = ContextVar("named_paths", default=())


def _abs(path: str | os.PathLike[str]) -> Path:
    # abspath, not resolve(): the message must show the path as the user spelled it.
    return Path(os.path.abspath(path))


def remember(path: Path, option: str) -> None:
    _named.set((*_named.get(), (_abs(path), option)))


def forget_all() -> None:
    _named.set(())


def option_for(filename: str | os.PathLike[str]) -> str | None:
    """The option whose path is `filename` or holds it (the deepest such path wins)."""
    target = _abs(filename)
    hits = [(p, o) for p, o in _named.get() if p == target or p in target.parents]
    return max(hits, key=lambda hit: len(hit[0].parts))[1] if hits else None


def _what(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _stat(path: Path, label: str) -> os.stat_result | None:
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise PathError(
            f"{label}: cannot look at it ({exc.strerror})", fix=f"name a path in {WRITABLE}"
        ) from None


def _nearest_existing(path: Path, label: str) -> Path:
    """The deepest existing ancestor of `path`; refused when it is not a directory."""
    for ancestor in _abs(path).parents:
        info = _stat(ancestor, label)
        if info is None:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise PathError(
                f"{label}: {ancestor} is {_what(info.st_mode)}, not a directory",
                fix="name a path under a directory",
            )
        return ancestor
    return Path("/")


def _probe(directory: Path, label: str, option: str) -> None:
    # Creating (and at once removing) an empty file is the only honest test: root passes every
    # permission bit, and /proc, /sys and read-only mounts refuse only when asked.
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".stackseed-probe-")
    except OSError as exc:
        raise PathError(
            f"{label}: cannot write in {directory} ({exc.strerror})",
            fix=f"give {option} a path in {WRITABLE}",
        ) from None
    os.close(fd)
    os.unlink(tmp)


def check_target(
    path: Path,
    option: str,
    kind: Kind | None,
    *,
    probe: bool = True,
    parent_must_exist: bool = False,
) -> None:
    """Refuse `path` for `option` unless a `kind` (file, directory, None: either) can be written
    there; with `probe`, try creating a file in its directory. Leaves nothing behind."""
    label = f"{option} {path}"
    info = _stat(path, label)
    if info is None:
        home = _nearest_existing(path, label)
        parent = _abs(path).parent
        if parent_must_exist and home != parent:
            raise PathError(
                f"{label}: the directory {parent} does not exist",
                fix=f"create it first (mkdir -p {parent}) or name a file in an existing directory",
            )
    elif kind == "dir" and not stat.S_ISDIR(info.st_mode):
        raise PathError(
            f"{label} is {_what(info.st_mode)}; {option} names a directory",
            fix=f"give {option} a directory (a missing one is made)",
        )
    elif kind == "file" and not stat.S_ISREG(info.st_mode):
        raise PathError(
            f"{label} is {_what(info.st_mode)}; {option} names a regular file",
            fix=f"give {option} a new file's path (or an existing regular file's)",
        )
    elif kind is None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        # A device or FIFO would be written to as if it were a file (/dev/full fills at once).
        raise PathError(
            f"{label} is {_what(info.st_mode)}; {option} names a file or a directory",
            fix=f"give {option} a new file's path, or a directory's",
        )
    else:
        home = _abs(path) if stat.S_ISDIR(info.st_mode) else _abs(path).parent
    if probe:
        _probe(home, label, option)


def ensure_dir(path: Path, option: str, *, private: bool = True) -> Path:
    """Make `path` (0700 when `private`), or refuse it naming `option`."""
    check_target(path, option, "dir")
    try:
        if private:
            private_dir(path)
        else:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError(
            f"{option} {path}: cannot make it ({exc.strerror})",
            fix=f"give {option} a path in {WRITABLE}",
        ) from None
    return path


def explain(exc: OSError) -> StackseedError:
    """An OSError that reached the CLI edge, as one sentence naming the path and its option."""
    reason = exc.strerror or str(exc)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if exc.filename is None:
        # No path to name: a write that failed (Python names the file only for an open), a
        # network error (requests' errors are OSErrors), a broken pipe.
        if full:
            named = ", ".join(f"{o} {p}" for p, o in _named.get()) or "what the command writes"
            return StackseedError(
                f"{reason} while writing",
                fix=f"free space on the filesystem of {named}, and re-run",
            )
        return StackseedError(f"{type(exc).__name__}: {reason}", fix="re-run the command")
    filename = os.fsdecode(exc.filename)
    option = option_for(filename)
    where = f" (under {option})" if option else ""
    if full:
        fix = "free space on that filesystem and re-run"
    elif option:
        fix = f"give {option} a path in {WRITABLE}, and re-run"
    else:
        fix = "check that path and re-run"
    return StackseedError(f"{filename}{where}: {reason}", fix=fix)
