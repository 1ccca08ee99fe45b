"""What an interrupted build leaves behind, put right before the next one (which holds the image
cache's lock, so nothing else is writing there).

A build can be stopped at any point: Ctrl-C, SIGTERM, SIGKILL, the host going down. Each of its
own writes is made whole where nothing trusts it and only then renamed into place (an image
directory, image.json, the offline index), so a kill leaves the old file or the new one, plus
hidden work that the next build removes here:

- `<images>/<release>/.staging-<role>` and `.disk-staging-<role>`: a build's, an assembly's work;
- `<images>/<release>/.old-<role>-<time>`: an image a publish had replaced;
- `.<name>.*` temporary files beside an image's `image.json` and `SHA256SUMS`;
- `<debs>/.download-<pid>`: the bootloader download's apt work directory.

Two things diskimage-builder's own steps write straight to their final names are checked before
they are reused, and removed when a kill cut them short:

- a .deb in the shared cache (the deb-cache element's `cp` of the packages debootstrap's apt
  fetched): online, apt would notice its size and fetch it again, but an offline build's index
  would offer it as it is and dpkg would fail on it;
- the Debian base DIB caches after debootstrap (`tar -zcf` to its final name): cut short, it
  breaks every later build at its extraction. It is read through once (gzip's own length and
  CRC say whether it is whole), and a note beside it (`.<tarball>.whole`) saves doing that
  again until it changes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from pathlib import Path

from builder.fsutil import write_private

WORK_DIRS = (".staging-", ".disk-staging-", ".old-")
DOWNLOAD_DIRS = ".download-"
TEMP_FILES = (".image.json.", ".SHA256SUMS.")

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60


def work_left(release_dir: Path, deb_cache: Path) -> list[Path]:
    """Hidden work of earlier, interrupted builds: directories and temporary files."""
    found: list[Path] = []
    if release_dir.is_dir():
        for entry in sorted(release_dir.iterdir()):
            if entry.name.startswith(WORK_DIRS):
                found.append(entry)
            elif entry.is_dir() and not entry.name.startswith("."):
                found += [p for p in sorted(entry.iterdir()) if p.name.startswith(TEMP_FILES)]
    if deb_cache.is_dir():
        found += [p for p in sorted(deb_cache.iterdir()) if p.name.startswith(DOWNLOAD_DIRS)]
    return found


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def deb_is_whole(path: Path) -> bool:
    """True when the .deb's ar archive holds every member its headers announce, in full, and
    the three a package has. Reads only the headers."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(len(_AR_MAGIC)) != _AR_MAGIC:
                return False
            names, position, length = [], len(_AR_MAGIC), 0
            while position < size:
                handle.seek(position)
                header = handle.read(_AR_HEADER)
                if len(header) < _AR_HEADER or header[58:60] != b"`\n":
                    return False
                length = int(header[48:58].decode("ascii").strip())
                names.append(header[:16].decode("ascii").strip().rstrip("/"))
                position += _AR_HEADER + length + (length & 1)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    # The last member's padding byte is optional; anything shorter is a cut.
    ends = position == size or (length & 1 and position == size + 1)
    return (
        bool(ends)
        and names[:1] == ["debian-binary"]
        and any(n.startswith("control.tar") for n in names)
        and any(n.startswith("data.tar") for n in names)
    )


def broken_debs(deb_cache: Path) -> list[Path]:
    if not deb_cache.is_dir():
        return []
    return [p for p in sorted(deb_cache.glob("*.deb")) if not deb_is_whole(p)]


def _tag(path: Path) -> str:
    info = path.stat()
    return f"{path.name} {info.st_size} {info.st_mtime_ns}\n"


def _note(tarball: Path) -> Path:
    return tarball.with_name(f".{tarball.name}.whole")


def known_whole(tarball: Path) -> bool:
    try:
        return _note(tarball).read_text() == _tag(tarball)
    except OSError:
        return False


def mark_whole(tarball: Path) -> None:
    """After a build that extracted (or made) it: the base as it is now is known to be whole."""
    if tarball.is_file():
        write_private(_note(tarball), _tag(tarball).encode(), mode=0o644)


def gzip_is_whole(path: Path) -> bool:
    """True when the gzip stream ends where it should and its CRC and length match."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error):
        return False
    return True


def check_base(tarball: Path) -> bool:
    """False (and the tarball gone) when the cached Debian base is not whole; True when it is
    whole or there is none."""
    if not tarball.is_file() or known_whole(tarball):
        return True
    if gzip_is_whole(tarball):
        mark_whole(tarball)
        return True
    tarball.unlink()
    _note(tarball).unlink(missing_ok=True)
    return False
